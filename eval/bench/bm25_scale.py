"""BM25 index + DocStore builds at growing corpus sizes: wall time, docs/s and peak RSS.

The corpora are **synthetic** (``bm25_memory.synthetic``: 60-140 words per document from a
50k-word Zipf vocabulary, seeded). Each size is built by ``irkit.index.bm25.build_bm25_index``
in a fresh process, whose peak RSS (VmHWM: Python, SQLite and pyserini's JVM together) is
reported; a build that streams its input peaks at the same RSS whatever the corpus size,
up to what Lucene's indexing buffer holds before it flushes a segment.

    nice -n 0 flock /work/notes/bench.lock python eval/bench/bm25_scale.py --out eval/results/bm25_scale.json

Exits non-zero if the largest build's peak RSS exceeds the smallest's by more than ``--growth-gib``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bm25_memory import synthetic
from common import finish, machine, peak_rss_gib, run_child


def child_build(corpus: str, out: str, threads: int) -> dict:
    from irkit.index.bm25 import build_bm25_index

    start = time.perf_counter()
    index = build_bm25_index(corpus, out, threads=threads, show_progress=False)
    return {"build_s": time.perf_counter() - start, "peak_rss_gib": peak_rss_gib(), "docs": len(index)}


def du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/irkit-bm25-scale"))
    ap.add_argument("--growth-gib", type=float, default=1.0, help="allowed peak RSS growth, smallest to largest")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_build(args.child[0], args.child[1], int(args.child[2]))))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    setup = machine(
        data="synthetic: eval/bench/bm25_memory.py synthetic(), seed 0",
        threads=args.threads,
    )
    print("| documents | corpus (MiB) | build (s) | docs/s | peak RSS (GiB) | index + DocStore (MiB) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for n in args.sizes:
        corpus, _ = synthetic(args.work, n, 1)
        out = args.work / f"bm25-{n}"
        shutil.rmtree(out, ignore_errors=True)
        res = run_child(__file__, str(corpus), str(out), str(args.threads))
        row = {
            "documents": n,
            "corpus_mib": corpus.stat().st_size / 2**20,
            **res,
            "docs_per_s": n / res["build_s"],
            "index_mib": du_mib(out),
        }
        rows.append(row)
        shutil.rmtree(out)
        print(
            f"| {n:,} | {row['corpus_mib']:,.0f} | {res['build_s']:.0f} | {row['docs_per_s']:,.0f} "
            f"| {res['peak_rss_gib']:.2f} | {row['index_mib']:,.0f} |",
            flush=True,
        )
    finish(setup, rows, args.out)
    growth = rows[-1]["peak_rss_gib"] - rows[0]["peak_rss_gib"]
    return 0 if growth <= args.growth_gib else 1


if __name__ == "__main__":
    sys.exit(main())
