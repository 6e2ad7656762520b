"""Dense index build on Ray vs in-process: the same SciFact index, wall times, identical search results.

Builds the SciFact dense index (MiniLM, Flat) twice with ``irkit index build``, each in a fresh
subprocess: in-process, then ``--executor ray --workers N`` on a local Ray cluster the build
starts (``ray.init(num_cpus=N)``; cluster start-up counts in its time). Then searches the 300
SciFact test queries on both (depth 100) and exits 1 unless the rankings and scores are identical;
it also reports whether ``index.faiss`` is the same file byte for byte. Writes wall times, docs/s,
the Ray/in-process time ratio, the CPU and its SIMD flags, load averages and the date to ``--out``.

    flock /work/notes/bench.lock nice -n 0 python eval/bench/ray_build.py --out eval/results/ray_build.json
    python eval/bench/ray_build.py --limit 300 --out /tmp/ray_build.json      # smoke: the first 300 docs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from encode import DATA, cpu_info, write_results
from models import cpu_flags

ROOT = Path(__file__).resolve().parents[2]
SCIFACT = DATA / "beir" / "scifact"
BUILD = "import sys\nfrom irkit.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _load() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []


def build(corpus: Path, out: Path, chunk_size: int, extra: list[str]) -> float:
    """Wall seconds of one ``irkit index build --type dense`` in a fresh subprocess."""
    cmd = [sys.executable, "-c", BUILD, "index", "build", "--type", "dense", "--corpus", str(corpus)]
    cmd += ["--out", str(out), "--chunk-size", str(chunk_size), "--quiet", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"build {' '.join(extra) or '(in-process)'} failed:\n{done.stderr}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N SciFact documents (smoke test)")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors, and CPUs of the local cluster")
    ap.add_argument("--chunk-size", type=int, default=512, help="documents per checkpoint shard / Ray task")
    ap.add_argument("--out", type=Path, default=Path("eval/results/ray_build.json"))
    args = ap.parse_args()

    from irkit.data.datasets import load_dataset
    from irkit.index.dense import INDEX_FILE
    from irkit.index.manifest import sha256_file
    from irkit.retrieve.dense import Dense

    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="ray-build-") as tmp:
        corpus = SCIFACT / "corpus.jsonl"
        if args.limit is not None:
            lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)[: args.limit]
            corpus = Path(tmp) / "corpus.jsonl"
            corpus.write_text("".join(lines), encoding="utf-8")
        local, ray = Path(tmp) / "local", Path(tmp) / "ray"
        local_s = build(corpus, local, args.chunk_size, [])
        ray_s = build(corpus, ray, args.chunk_size, ["--executor", "ray", "--workers", str(args.workers)])

        queries = load_dataset(SCIFACT, "test").queries
        a, b = Dense(local, depth=100), Dense(ray, depth=100)
        ra, rb = a(queries), b(queries)
        same_results = all(ra[q][0] == rb[q][0] and np.array_equal(ra[q][1], rb[q][1]) for q in queries)
        same_bytes = sha256_file(local / INDEX_FILE) == sha256_file(ray / INDEX_FILE)
        docs = len(a.index)

    rows = [
        {"executor": "local", "wall_s": round(local_s, 2), "docs_per_s": round(docs / local_s, 1)},
        {"executor": f"ray, {args.workers} workers", "wall_s": round(ray_s, 2), "docs_per_s": round(docs / ray_s, 1)},
    ]
    setup = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "simd_flags": cpu_flags(),
        "load_average_before": load_before,
        "load_average_after": _load(),
        "corpus": f"beir/scifact, {docs} docs" + (f" (first {args.limit})" if args.limit else ""),
        "index": "minilm, Flat, max_length 256, batch 32",
        "chunk_size": args.chunk_size,
        "workers": args.workers,
        "threads": "in-process: torch's default (one per core); Ray: one CPU (thread) per actor",
        "queries": f"{len(queries)} SciFact test queries, depth 100",
        "identical_search_results": same_results,
        "identical_index_bytes": same_bytes,
        "ray_over_local_wall": round(ray_s / local_s, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, setup, rows)
    print(json.dumps({"setup": setup, "results": rows}, indent=2))
    if not same_results:
        print("ray_build: the Ray build's search results differ from the in-process build's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
