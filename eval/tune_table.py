"""Collect eval/results/tune_{ce,bi}_*.json into the method x seed tables of eval/results/tune.md.

    python eval/tune_table.py            # prints both tables (markdown)

Each row: mean over the seeds that were run, the std of test nDCG@10 across seeds
(training stability), trainable-parameter share and training wall time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = ["zero-shot", "full", "houlsby", "lora", "bitfit", "connected"]


def table(kind: str) -> str:
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(RESULTS.glob(f"tune_{kind}_*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        runs[r["method"]].append(r)
    if kind == "ce":
        head = (
            "| method | seeds | rerank nDCG@10 | fused w/ BM25 nDCG@10 | p (fused vs BM25) | std nDCG@10 "
            "| trainable % | train s |"
        )
    else:
        head = "| method | seeds | nDCG@10 | R@100 | std nDCG@10 | trainable % | train s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for method in sorted(runs, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
        rs = runs[method]
        pct = f"{rs[0]['trainable_pct']:.2f}" if "trainable_pct" in rs[0] else "0"
        wall = f"{np.mean([r['train_wall_s'] for r in rs]):.0f}" if "train_wall_s" in rs[0] else "-"
        if kind == "ce":
            ce = [r["ce"]["nDCG@10"] for r in rs]
            fused = [r["fused"]["nDCG@10"] for r in rs]
            p = ", ".join(f"{r['fused']['p_vs_bm25']:.3g}" for r in rs)
            std = f"{np.std(ce):.4f}" if len(rs) > 1 else "n/a (1 seed)"
            lines.append(
                f"| {method} | {len(rs)} | {np.mean(ce):.4f} | {np.mean(fused):.4f} | {p} | {std} | {pct} | {wall} |"
            )
        else:
            nd = [r["test"]["nDCG@10"] for r in rs]
            rc = [r["test"]["R@100"] for r in rs]
            std = f"{np.std(nd):.4f}" if len(rs) > 1 else "n/a (1 seed)"
            lines.append(f"| {method} | {len(rs)} | {np.mean(nd):.4f} | {np.mean(rc):.4f} | {std} | {pct} | {wall} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("Cross-encoder (rerank BM25 top-k, SciFact test)\n")
    print(table("ce"))
    print("\nBi-encoder (exact dense search, SciFact test)\n")
    print(table("bi"))
