"""Collect eval/results/tune_grid/{ce,bi}_<tag>_s<seed>.json into the tables of eval/results/tune.md.

    python eval/tune_table.py                       # prints both tables (markdown)
    python eval/tune_table.py --results DIR          # the tables of a rerun grid

Each row: mean ± sample std over the seeds that were run (the std of test nDCG@10 is the
training-stability measure), trainable-parameter share and mean training wall time.
The regression check of these means lives in eval/regressions.yaml (``python eval/regress.py
--only tune-bi-full`` and so on), like every other published figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "tune_grid"
ORDER = ["zero-shot", "full", "houlsby", "lora", "bitfit", "side", "side-3ep", "connected"]


def collect(results: Path, kind: str) -> dict[str, list[dict]]:
    """``tag -> [result per seed]`` for one model kind (``bi`` or ``ce``)."""
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(results.glob(f"{kind}_*_s*.json")):
        tag = path.stem[len(kind) + 1 :].rsplit("_s", 1)[0]
        runs[tag].append(json.loads(path.read_text(encoding="utf-8")))
    return dict(sorted(runs.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)))


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` over seeds (the std is the training-stability measure)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def table(results: Path, kind: str) -> str:
    if kind == "ce":
        head = (
            "| method | seeds | rerank nDCG@10 | fused w/ BM25 nDCG@10 | p fused vs BM25 (per seed) "
            "| trainable % | train s |"
        )
    else:
        head = "| method | seeds | nDCG@10 | R@100 | trainable % | train s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for method, rs in collect(results, kind).items():
        pct = f"{rs[0]['trainable_pct']:.2f}" if "trainable_pct" in rs[0] else "0"
        wall = f"{np.mean([r['train_wall_s'] for r in rs]):.0f}" if "train_wall_s" in rs[0] else "-"
        if kind == "ce":
            p = ", ".join(f"{r['fused']['p_vs_bm25']:.2g}" for r in rs)
            cells = [mean_std([r["ce"]["nDCG@10"] for r in rs]), mean_std([r["fused"]["nDCG@10"] for r in rs]), p]
        else:
            cells = [mean_std([r["test"]["nDCG@10"] for r in rs]), mean_std([r["test"]["R@100"] for r in rs])]
        lines.append(f"| {method} | {len(rs)} | {' | '.join(cells)} | {pct} | {wall} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS, help="directory of per-run JSON files")
    args = ap.parse_args()
    print("Cross-encoder (rerank BM25 top-100, SciFact test)\n")
    print(table(args.results, "ce"))
    print("\nBi-encoder (exact dense search, SciFact test)\n")
    print(table(args.results, "bi"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
