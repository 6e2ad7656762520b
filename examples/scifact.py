"""The main job: build SciFact indexes, run BM25, dense and fused retrieval, print a score table.

    python examples/scifact.py [--data ../shared/data] [--indexes indexes] [--runs runs]

Indexes already built (valid manifest) are reused, so a second run only searches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import irkit
from irkit.data.io import write_run
from irkit.paths import eval_data_root

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ["nDCG@10", "R@100"]


def ensure_index(kind: str, corpus: Path, out: Path) -> None:
    """Build ``out`` unless it already holds a valid index."""
    from irkit.index import read_manifest

    try:
        read_manifest(out, kind)
        print(f"{kind:5s} index: reusing {out}")
        return
    except irkit.IrkitError:
        pass
    t = time.perf_counter()
    if kind == "dense":
        irkit.build_dense_index(corpus, out, model="minilm", overwrite=out.exists())
    else:
        irkit.build_bm25_index(corpus, out, overwrite=out.exists())
    print(f"{kind:5s} index: built {out} in {time.perf_counter() - t:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=eval_data_root())
    parser.add_argument("--indexes", type=Path, default=ROOT / "indexes")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    args = parser.parse_args()

    scifact = args.data / "beir" / "scifact"
    ds = irkit.load_dataset(scifact, "test")
    bm25_dir, dense_dir = args.indexes / "scifact-bm25", args.indexes / "scifact-minilm"
    ensure_index("bm25", scifact, bm25_dir)
    ensure_index("dense", scifact, dense_dir)

    bm25 = irkit.BM25(index=bm25_dir)
    dense = irkit.Dense(index=dense_dir)
    systems = {"BM25": bm25 % 1000, "Dense MiniLM": dense % 1000, "RRF(BM25, Dense)": (bm25 % 100 | dense % 100)}
    rows = []
    for name, pipe in systems.items():
        t = time.perf_counter()
        run = pipe(ds.queries)
        secs = time.perf_counter() - t
        write_run(run, args.runs / f"scifact-{name.split('(')[0].split()[0].lower()}.trec", tag=name.replace(" ", ""))
        scores = irkit.evaluate(run, ds.qrels, MEASURES)
        rows.append((name, *[scores[m] for m in MEASURES], secs))

    print(f"\nSciFact test ({len(ds.queries)} queries)")
    print(f"| system | {' | '.join(MEASURES)} | search s |")
    print("|---|" + "---|" * (len(MEASURES) + 1))
    for name, *vals, secs in rows:
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {secs:.1f} |")


if __name__ == "__main__":
    main()
