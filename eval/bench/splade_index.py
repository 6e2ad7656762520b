"""Cost of the SPLADE first stage: building the SciFact impact index, against the BM25 index, in one run.

Builds ``indexes/scifact-splade`` (SPLADE-tiny, impacts round(100 * w), 256 tokens: the index
the ``scifact-splade`` regression row searches) and a BM25 index of the same corpus, each in
a fresh subprocess so its peak resident memory (JVM included) is its own. Reports documents
per wall second and per CPU second of the build (encoding dominates SPLADE's; Lucene indexing
is a few seconds of it), the Lucene index size on disk, peak RSS, the ratios to BM25, and the
CPU and its SIMD flags. An existing ``indexes/scifact-splade`` is rebuilt into a scratch
directory instead, so the row's index is never replaced.

    nice -n 10 python eval/bench/splade_index.py --out eval/results/splade_index.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from encode import DATA, cpu_info, write_results
from models import cpu_flags

ROOT = Path(__file__).resolve().parents[2]
SCIFACT = DATA / "beir" / "scifact"

BUILD = r"""
import json, resource, sys, time
from irkit import index
kind, corpus, out = sys.argv[1:4]
start, cpu = time.perf_counter(), time.process_time()
built = index.build(kind, corpus, out, show_progress=False)
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("\n" + json.dumps({"docs": len(built), "wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": rss}))
"""


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(kind: str, out: Path) -> dict:
    """Build one index in a subprocess; its timings, memory and sizes."""
    cmd = [sys.executable, "-c", BUILD, kind, str(SCIFACT), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"building the {kind} index failed:\n{done.stderr}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row |= {"kind": kind, "index_bytes": _size(out), "lucene_bytes": _size(out / "lucene")}
    row |= {"docs_per_s": row["docs"] / row["wall_s"], "docs_per_cpu_s": row["docs"] / row["cpu_s"]}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("eval/results/splade_index.json"))
    args = ap.parse_args()
    target = ROOT / "indexes" / "scifact-splade"
    with tempfile.TemporaryDirectory(prefix="splade-bench-") as tmp:
        splade_out = Path(tmp) / "scifact-splade" if target.exists() else target
        splade = build("splade", splade_out)
        bm25 = build("bm25", Path(tmp) / "scifact-bm25")
    ratios = {
        "build_time_vs_bm25": splade["wall_s"] / bm25["wall_s"],
        "lucene_size_vs_bm25": splade["lucene_bytes"] / bm25["lucene_bytes"],
        "peak_rss_vs_bm25": splade["peak_rss_bytes"] / bm25["peak_rss_bytes"],
    }
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    setup = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "simd_flags": cpu_flags(),
        "load_average_after": load,
        "corpus": "beir/scifact (5,183 docs, title + text)",
        "splade": "splade-tiny, max_length 256, batch 32, impacts round(100 * w), 2 Lucene threads",
    }
    write_results(args.out, setup, [splade, bm25, {"kind": "ratios", **ratios}])
    print(json.dumps({"setup": setup, "splade": splade, "bm25": bm25, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
