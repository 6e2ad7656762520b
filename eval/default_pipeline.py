"""Choose the default reranking pipeline for scientific claims on dev data, never on test (issue #11).

The candidates rerank BM25 on the dev slice carved from SciFact *train* (``split_dev``, 10 %,
seed 13: the slice the bundled cross-encoder held out for its own model selection): the bundled
cross-encoder on the top 20 and SPLADE-tiny on the top 20 and top 100 (and, for each
``--dense-index NAME=PATH``, that dense SciFact index's encoder by its stored vectors on the top 20
and top 100), each alone and min-max interpolated with BM25 at every weight 0.0–1.0. Each dense
index also competes as a first stage fused with BM25: both search the whole corpus (1000 results)
and are min-max fused at the same weights (on the dense one). BM25 runs once; each reranker scores
once and the weights reuse its scores. Writes the dev nDCG@10 of every candidate and the winner as
JSON.

    python eval/default_pipeline.py --dense-index nomic=indexes/scifact-nomic --results runs/default_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tune_common import INDEX, SCIFACT

from irkit import BM25, BiEncoderReranker, CrossEncoder, Dense, SpladeReranker, evaluate, read_qrels, read_queries
from irkit.data.types import Ranking
from irkit.pipeline.operators import fuse_rankings
from irkit.tune.trainer import WEIGHTS, interpolation_weight, split_dev


def named_path(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` from the command line."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=13, help="dev slice seed (the bundled cross-encoder's)")
    ap.add_argument(
        "--dense-index",
        action="append",
        default=[],
        type=named_path,
        metavar="NAME=PATH",
        help="a dense index of SciFact; NAME prefixes its candidates (repeatable)",
    )
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()

    queries = read_queries(SCIFACT / "queries.jsonl")
    train = read_qrels(SCIFACT / "qrels" / "train.tsv", queries)
    _, dev = split_dev(list(train), 0.1, args.seed)
    qrels, dev_queries = train.subset(dev), queries.subset(dev)
    bm25 = BM25(INDEX, depth=100)(dev_queries)

    def ndcg(run: Ranking) -> float:
        return round(evaluate(run, qrels, ["nDCG@10"])["nDCG@10"], 4)

    dev_ndcg: dict[str, float] = {"bm25": ndcg(bm25)}
    seconds: dict[str, float] = {}
    candidates = [
        ("cross-encoder-top20", CrossEncoder(), 20),
        ("splade-top20", SpladeReranker(), 20),
        ("splade-top100", SpladeReranker(), 100),
    ]
    dense = dict(args.dense_index)
    for name, path in dense.items():
        reranker = BiEncoderReranker(index=path)
        candidates += [(f"{name}-top20", reranker, 20), (f"{name}-top100", reranker, 100)]
    for name, reranker, depth in candidates:
        t0 = time.perf_counter()
        reranked = reranker(bm25.top_k(depth))
        seconds[name] = round(time.perf_counter() - t0, 1)
        _, by_w = interpolation_weight(reranked, qrels)  # the grid `irkit tune` chooses its weight on
        for w, v in by_w.items():  # keys without dots, so the regression table can address them (w 0.5 -> w50)
            dev_ndcg[f"{name} w{round(w * 100)}"] = round(v, 4)
    bm25_1000 = BM25(INDEX, depth=1000)(dev_queries)
    for name, path in dense.items():  # first-stage fusion: both retrievers search the whole corpus
        t0 = time.perf_counter()
        runs = [bm25_1000, Dense(index=path, depth=1000)(dev_queries)]
        seconds[f"{name}-first-stage-fused"] = round(time.perf_counter() - t0, 1)
        for w in WEIGHTS:
            fused = fuse_rankings(runs, "linear", weights=[1 - w, w], queries=dev_queries)
            dev_ndcg[f"{name}-first-stage-fused w{round(w * 100)}"] = ndcg(fused)
    best = max(dev_ndcg, key=lambda k: dev_ndcg[k])
    out = {
        "dev_queries": len(dev_queries),
        "seed": args.seed,
        "dev_nDCG@10": dev_ndcg,
        "rerank_s": seconds,
        "best": best,
    }
    args.results.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for k, v in sorted(dev_ndcg.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{v:.4f}  {k}")
    print(f"best on dev: {best}")


if __name__ == "__main__":
    main()
