"""Peak memory of BM25 batch search: 1,000 queries at k = 1000 over a 200k-document synthetic index.

Builds (once, under ``--work``) a synthetic corpus with a Zipf vocabulary, its BM25 index and
``--queries`` topics, then searches in a fresh interpreter for each irkit checkout given with
``--irkit`` (default: this one) and reports that process's peak RSS (Python, pyserini and the
JVM together, as the kernel's VmHWM), the search time and the sha256 of the run file it wrote.
Comparing checkouts in one invocation shows the memory change and that the runs are identical;
a second ``--queries`` shows how the peak grows with the number of queries:

    git archive main | tar -x -C /tmp/irkit-main
    nice -n 10 python eval/bench/bm25_memory.py --irkit /tmp/irkit-main --irkit .
    nice -n 10 python eval/bench/bm25_memory.py --queries 3000 --irkit /tmp/irkit-main --irkit .

Exits non-zero when the run files differ or when the last checkout's peak exceeds ``--budget-gb``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SEARCH = """
import json, sys, time
from irkit.data.io import read_queries, write_run
from irkit.retrieve.bm25 import BM25
queries = read_queries(sys.argv[2])
bm25 = BM25(sys.argv[1], depth=1000)
t0 = time.perf_counter()
run = bm25(queries)
seconds = time.perf_counter() - t0
write_run(run, sys.argv[3], tag="bm25")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child would report its parent's peak
peak_kb = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM"))
peak_gb = peak_kb / 2**20
print(json.dumps({"search_s": seconds, "peak_rss_gb": peak_gb, "hits": sum(len(d) for _, (d, _) in run.items())}))
"""


def synthetic(work: Path, docs: int, queries: int, seed: int = 0) -> tuple[Path, Path]:
    """A corpus of ``docs`` documents (60-140 words from a 50k-word Zipf vocabulary) and ``queries`` 2-6 word topics."""
    corpus, topics = work / f"corpus-{docs}.jsonl", work / f"topics-{queries}.tsv"
    if corpus.is_file() and topics.is_file():
        return corpus, topics
    rng = np.random.default_rng(seed)
    letters = np.array(list("bcdfghklmnprstvz")), np.array(list("aeiou"))
    vocab = ["".join(rng.choice(letters[i % 2]) for i in range(int(n))) for n in rng.integers(4, 9, 50_000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.07
    weights /= weights.sum()
    tmp = corpus.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, words in enumerate(_draws(rng, weights, rng.integers(60, 141, docs))):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": " ".join(vocab[w] for w in words)}) + "\n")
    os.replace(tmp, corpus)
    with open(topics, "w", encoding="utf-8") as f:
        for q, words in enumerate(_draws(rng, weights, rng.integers(2, 7, queries))):
            f.write(f"q{q}\t{' '.join(vocab[w] for w in words)}\n")
    return corpus, topics


def _draws(rng: np.random.Generator, weights: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Word ids for texts of the given lengths, drawn in one call (per-text draws with ``p`` are slow)."""
    words = rng.choice(len(weights), size=int(lengths.sum()), p=weights)
    return np.split(words, np.cumsum(lengths)[:-1])


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/irkit-bm25-memory"), help="corpus, index and runs")
    ap.add_argument("--irkit", action="append", type=Path, help="irkit checkout to measure (repeatable; default .)")
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--budget-gb", type=float, default=1.5, help="allowed peak RSS of the last checkout (1.5)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus, topics = synthetic(args.work, args.docs, args.queries)
    index = args.work / f"bm25-{args.docs}"
    if not index.exists():
        from irkit.index.bm25 import build_bm25_index

        build_bm25_index(corpus, index, show_progress=False)
    flags = sorted({f for f in ("avx2", "fma", "avx512f") if f in Path("/proc/cpuinfo").read_text().split()})
    print(f"{dt.datetime.now().isoformat(timespec='seconds')}; {cpu()} ({os.cpu_count()} CPUs, {'/'.join(flags)})")
    print(f"{args.docs:,} docs, {args.queries:,} queries, k = 1000\n")
    print("| irkit checkout | peak RSS (GB) | search (s) | hits | run sha256 |")
    print("|---|---|---|---|---|")
    digests, peaks = [], []
    for i, checkout in enumerate(args.irkit or [ROOT]):
        out = args.work / f"run-{i}.trec"
        env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
        cmd = [sys.executable, "-c", SEARCH, str(index), str(topics), str(out)]
        res = json.loads(
            subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
        peaks.append(res["peak_rss_gb"])
        print(
            f"| {checkout} | {res['peak_rss_gb']:.2f} | {res['search_s']:.1f} | {res['hits']:,} | {digests[-1][:16]} |"
        )
    same = len(set(digests)) == 1
    print(f"\nrun files identical: {same}")
    return 0 if same and peaks[-1] <= args.budget_gb else 1


if __name__ == "__main__":
    sys.exit(main())
