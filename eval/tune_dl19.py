"""Rerank a BM25 top-k with a tuned cross-encoder artifact: TREC DL 2019 or SciFact test.

The artifact is applied unchanged: reranker alone, and min-max fusion with BM25 at the weight
stored in the artifact (chosen on the SciFact dev slice). DL19 is the out-of-domain check of the
SciFact-trained default; ``--data scifact`` reranks the BM25 top-k of the 300 SciFact test queries.

    nice -n 10 python eval/tune_dl19.py --model irkit/resources/cross-encoder-minilm --depth 100 \
        --results eval/results/tune_dl19.json
    python eval/tune_dl19.py --data scifact --depth 100 --results /tmp/top100.json \
        --check eval/results/cross_encoder_minilm_top100.json      # regression, nDCG@10 ±0.003
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from irkit.data.io import read_corpus, read_qrels, read_run, read_topics_tsv
from irkit.data.types import Ranking
from irkit.evaluation import compare, evaluate
from irkit.pipeline.operators import linear
from irkit.tune.artifacts import load_cross_encoder, read_config
from irkit.tune.trainer import rerank_candidates

ROOT = Path(__file__).resolve().parents[1]
DL19 = Path(os.environ.get("IRKIT_DATA", ROOT.parent / "shared" / "data")) / "trec-dl-2019"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "irkit" / "resources" / "cross-encoder-minilm"))
    ap.add_argument("--data", choices=["dl19", "scifact"], default="dl19")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--results", required=True)
    ap.add_argument("--check", type=Path, default=None, help="committed results JSON; exit 1 if ce/fused differ")
    ap.add_argument("--tol", type=float, default=0.003, help="allowed nDCG@10 difference for --check")
    args = ap.parse_args()
    torch.set_num_threads(2)

    if args.data == "dl19":
        topics = read_topics_tsv(DL19 / "topics.tsv")
        qrels = read_qrels(DL19 / "qrels.txt")
        bm25 = read_run(DL19 / "bm25-top100.run", topics)
        texts = {d.docid: d.contents for d in read_corpus(DL19 / "passages.jsonl")}
    else:
        from tune_common import load_scifact

        data = load_scifact()
        qrels, texts = data.test_qrels, data.doc_text
        topics = data.queries.subset(sorted(qrels))
        bm25 = data.bm25.subset(list(topics))
    cfg = read_config(args.model)
    model, tok = load_cross_encoder(args.model)
    t0 = time.perf_counter()
    scores = rerank_candidates(
        model, tok, dict(topics.items()), {q: bm25[q][0] for q in bm25}, texts, args.depth, cfg.get("max_length", 192)
    )
    wall = time.perf_counter() - t0
    ce = Ranking.from_scores(scores, topics)
    w = float(cfg.get("interpolation", {}).get("weight", 0.5))
    fused = Ranking.from_scores(linear([bm25.top_k(args.depth), ce], [1.0 - w, w]), topics)
    cmp = {c.name: c.p_value for c in compare(bm25, {"ce": ce, "fused": fused}, qrels)}
    report = {
        "data": args.data,
        "depth": args.depth,
        "weight": w,
        "pairs_per_s": sum(len(v) for v in scores.values()) / wall,
        "bm25": evaluate(bm25, qrels, ["nDCG@10"])["nDCG@10"],
        "ce": evaluate(ce, qrels, ["nDCG@10"])["nDCG@10"],
        "fused": evaluate(fused, qrels, ["nDCG@10"])["nDCG@10"],
        "p_vs_bm25": cmp,
    }
    Path(args.results).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    if args.check is not None:
        want = json.loads(args.check.read_text(encoding="utf-8"))
        bad = [k for k in ("ce", "fused") if abs(report[k] - want[k]) > args.tol]
        print(f"check against {args.check} (±{args.tol}): {'FAIL ' + ', '.join(bad) if bad else 'ok'}")
        if bad:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
