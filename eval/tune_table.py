"""Collect eval/results/tune_grid/{ce,bi}_<tag>_s<seed>.json into the tables of eval/results/tune.md.

    python eval/tune_table.py            # prints both tables (markdown)

Each row: mean ± sample std over the seeds that were run (the std of test nDCG@10 is the
training-stability measure), trainable-parameter share and mean training wall time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "tune_grid"
ORDER = ["zero-shot", "full", "houlsby", "lora", "bitfit", "connected", "connected-3ep"]


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` over seeds (the std is the training-stability measure)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def table(kind: str) -> str:
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(RESULTS.glob(f"{kind}_*_s*.json")):
        tag = path.stem[len(kind) + 1 :].rsplit("_s", 1)[0]
        runs[tag].append(json.loads(path.read_text(encoding="utf-8")))
    if kind == "ce":
        head = (
            "| method | seeds | rerank nDCG@10 | fused w/ BM25 nDCG@10 | p fused vs BM25 (per seed) "
            "| trainable % | train s |"
        )
    else:
        head = "| method | seeds | nDCG@10 | R@100 | trainable % | train s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for method in sorted(runs, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
        rs = runs[method]
        pct = f"{rs[0]['trainable_pct']:.2f}" if "trainable_pct" in rs[0] else "0"
        wall = f"{np.mean([r['train_wall_s'] for r in rs]):.0f}" if "train_wall_s" in rs[0] else "-"
        if kind == "ce":
            p = ", ".join(f"{r['fused']['p_vs_bm25']:.2g}" for r in rs)
            cells = [mean_std([r["ce"]["nDCG@10"] for r in rs]), mean_std([r["fused"]["nDCG@10"] for r in rs]), p]
        else:
            cells = [mean_std([r["test"]["nDCG@10"] for r in rs]), mean_std([r["test"]["R@100"] for r in rs])]
        lines.append(f"| {method} | {len(rs)} | {' | '.join(cells)} | {pct} | {wall} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("Cross-encoder (rerank BM25 top-k, SciFact test)\n")
    print(table("ce"))
    print("\nBi-encoder (exact dense search, SciFact test)\n")
    print(table("bi"))
