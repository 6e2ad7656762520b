"""Retrain the bundled cross-encoder with ``irkit tune --reproduce-default`` and score it as the shipped one is.

The shipped ``cross-encoder-minilm`` was trained before ``irkit tune`` seeded its fresh score head, so
its exact weights cannot be retrained; what a retrain can show is how far the recipe lands from it.
This script runs the recipe under one seed (``--seed``) and scores the artifact on SciFact test the
way the regression rows score the shipped model: BM25 top 20 reranked by the cross-encoder alone,
and the ``pipeline.yaml`` that ``irkit tune`` wrote (BM25 top 20, the cross-encoder, min-max
interpolation at the dev-chosen weight), on all queries and on the first 100. Over several seeds
the spread is the tolerance a retrain is held to (issue #9; rows ``scifact-ce-retrain*`` in
eval/regressions.yaml).

    python eval/reproduce_default.py --seed 13 --out runs/ce-retrain-13 --results ce-retrain-13.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from regress import machine
from tune_common import INDEX, SCIFACT, load_scifact, train_candidates

from irkit import evaluate, load_dataset, load_pipeline
from irkit.cli import main as irkit_main
from irkit.data.io import atomic_path
from irkit.models.tuned import read_config
from irkit.pipeline.operators import Then


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path, required=True, help="artifact directory the retrain writes")
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()

    candidates = train_candidates(load_scifact())  # builds the BM25 index and its runs if missing
    t0 = time.perf_counter()
    rc = irkit_main(
        [
            "tune",
            "--reproduce-default",
            "--seed",
            str(args.seed),
            "--dataset",
            str(SCIFACT),
            "--candidates",
            str(candidates),
            "--index",
            str(INDEX),
            "--out",
            str(args.out),
        ]
    )
    if rc:
        raise SystemExit(rc)
    train_s = time.perf_counter() - t0
    config = read_config(args.out)
    test = load_dataset(SCIFACT, "test")
    assert test.qrels is not None
    first100 = test.queries.subset(list(test.queries)[:100])
    # the pipeline irkit tune wrote, split before its last step: the cross-encoder scores each pair once
    *rerank, interpolate = load_pipeline(args.out / "pipeline.yaml").stages
    ce = Then(rerank).transform(test.queries)
    fused = interpolate.transform(ce)
    report = {
        "seed": args.seed,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "tune_wall_s": train_s,
        "dev_ndcg10": config["dev_ndcg10"],
        "weight": config["interpolation"]["weight"],
        "ce_nDCG@10": evaluate(ce, test.qrels, ["nDCG@10"])["nDCG@10"],
        "fused_nDCG@10": evaluate(fused, test.qrels, ["nDCG@10"])["nDCG@10"],
        "fused_first100_nDCG@10": evaluate(fused.subset(first100), test.qrels.subset(first100), ["nDCG@10"])["nDCG@10"],
    }
    with atomic_path(args.results) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
