"""Rerank a BM25 top-k with a tuned cross-encoder artifact: TREC DL 2019 or SciFact test.

The artifact is applied unchanged: reranker alone, and min-max fusion with BM25 at the weight
stored in the artifact (chosen on the SciFact dev slice). DL19 is the out-of-domain check of the
SciFact-trained default; ``--data scifact`` reranks the BM25 top-k of the 300 SciFact test queries.

    nice -n 10 python eval/tune_dl19.py --model irkit/resources/cross-encoder-minilm --depth 100 \
        --results eval/results/tune_dl19.json
    python eval/regress.py --only scifact-ce-top100 dl19-ce-top100  # the regression checks of its figures
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tune_common import DATA, ROOT, load_scifact, set_threads

from irkit.data.datasets import load_dataset
from irkit.data.io import read_run
from irkit.evaluation import compare, evaluate
from irkit.models.tuned import read_config
from irkit.pipeline.operators import Interpolate
from irkit.rerank.cross_encoder import CrossEncoder

DL19 = DATA / "trec-dl-2019"


def rerank_report(model: str, data: str, depth: int) -> dict:
    """BM25 top ``depth`` of ``data`` ("dl19" or "scifact" test) reranked by the artifact ``model``, alone and
    fused at its stored weight: nDCG@10 of each, BM25's, paired t-test p-values against BM25, pairs/s."""
    if data == "dl19":  # the TREC DL layout as load_dataset reads it, with its bundled BM25 top 100
        dl19 = load_dataset(DL19)
        assert dl19.qrels is not None and dl19.run_path is not None
        qrels = dl19.qrels
        bm25 = read_run(dl19.run_path, dl19.queries)
        bm25.docstore = dl19.docstore()
    else:
        scifact = load_scifact()
        qrels = scifact.test_qrels
        bm25 = scifact.bm25.subset(sorted(qrels))
    w = float(read_config(model).get("interpolation", {}).get("weight", 0.5))
    reranker = CrossEncoder(model)  # `bm25 % depth >> CrossEncoder(model) >> Interpolate(w)`, BM25 from a file
    t0 = time.perf_counter()
    ce = reranker.transform(bm25.top_k(depth))
    wall = time.perf_counter() - t0
    fused = Interpolate(w).transform(ce)
    cmp = {c.name: c.p_value for c in compare(bm25, {"ce": ce, "fused": fused}, qrels)}
    return {
        "data": data,
        "depth": depth,
        "weight": w,
        "pairs_per_s": sum(len(d) for _, (d, _) in ce.items()) / wall,
        "bm25": evaluate(bm25, qrels, ["nDCG@10"])["nDCG@10"],
        "ce": evaluate(ce, qrels, ["nDCG@10"])["nDCG@10"],
        "fused": evaluate(fused, qrels, ["nDCG@10"])["nDCG@10"],
        "p_vs_bm25": cmp,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "irkit" / "resources" / "cross-encoder-minilm"))
    ap.add_argument("--data", choices=["dl19", "scifact"], default="dl19")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--results", required=True)
    args = ap.parse_args()
    set_threads()
    report = rerank_report(args.model, args.data, args.depth)
    Path(args.results).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
