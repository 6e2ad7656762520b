"""What irkit's batch search costs over calling pyserini and FAISS directly, on the same index and queries.

* BM25: ``BM25(index).retrieve(queries, k)`` vs pyserini's ``LuceneSearcher.batch_search`` with
  the same k1/b, k and threads, reading each hit's docid and score (the least a caller does).
  JVM start + searcher opening is timed on its own; the first batch and the median of the next
  ``--repeats`` are reported.
* Dense: ``Dense.search_vectors`` (FAISS search, docids, Ranking) vs ``index.search`` on the same
  FAISS object followed by the numpy lookup of each hit's docid (rows mean nothing to a caller
  without it, as BM25's direct side reads each hit's docid); the bare ``index.search`` is timed too
  and its warm ratio reported, not checked. Both from the same query vectors (each SciFact query
  10 times, so a call lasts long enough to time; encoding is shared code, so it is left out: it
  would only dilute the ratio). Flat is the index on disk; HNSW32 (efSearch=128) is built in
  memory from its vectors.

BM25: every (tool, index) pair runs in a fresh process, so "first call" is a real first call; the
pair runs ``--rounds`` times, the two tools in alternating order, and each figure is the median
over rounds. Dense: each of ``--dense-rounds`` rounds is one fresh process running both tools on
one FAISS object. Its first search is a bare one, reported on its own like BM25's JVM start
(FAISS starting its threads and touching its memory, the same for any caller); then each tool's
first call (the one that pays irkit's lazy set-up), led by each tool in turn, then ``--repeats``
warm calls of each tool alternating with a bare search. Times are medians over all rounds; ratios
are medians of the ratios of calls paired within a process (irkit's first call / direct's first
call, each warm irkit call / the direct call beside it): HNSW search times moved by 10-20 %
between processes, more than what irkit adds. Indexes:
``indexes/scifact-bm25`` and ``indexes/scifact-minilm`` (300 SciFact test queries; built by
``irkit index build`` or the integration tests), and the 200k-document synthetic BM25 index of
``bm25_memory.py`` (its first 300 topics; built under ``--work`` when missing).

    nice -n 0 flock /work/notes/bench.lock python eval/bench/search_overhead.py --out eval/results/search_overhead.json

Exits non-zero when a warm or first-call ratio (irkit / direct) exceeds ``--max-ratio`` (1.10).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bm25_memory import synthetic
from common import finish, machine, run_child
from encode import DATA, ROOT


def bm25_child(tool: str, index: str, topics: str, k: int, repeats: int) -> dict:
    from irkit._java import ensure_jvm
    from irkit.data.io import read_queries
    from irkit.retrieve.bm25 import BM25

    queries = read_queries(topics)
    start = time.perf_counter()
    ensure_jvm()
    bm25 = BM25(index, depth=k)
    searcher = bm25.searcher()
    opened = time.perf_counter() - start
    qids = list(queries)
    texts = [queries[q] for q in qids]

    def direct() -> dict:
        hits = searcher.batch_search(texts, qids, k=k, threads=bm25.threads)
        return {q: [(h.docid, h.score) for h in found] for q, found in hits.items()}

    call = (lambda: bm25.retrieve(queries, k)) if tool == "irkit" else direct
    return {"open_s": opened, **_calls(call, repeats)}


def dense_child(first: str, index: str, factory: str, topics: str, k: int, repeats: int) -> dict:
    """Both tools in one fresh process on one FAISS object, after one bare search: each tool's first
    call (``first`` leads), then ``repeats`` warm calls of each, interleaved with a bare search."""
    from irkit.data.io import read_queries
    from irkit.data.types import Queries
    from irkit.index.dense import make_faiss_index
    from irkit.retrieve.dense import Dense

    # each query 10 times (3,000 searches, about a second): one pass of 300 takes ~0.1 s, too short
    # to time against the ±15 % that FAISS's threads vary between calls
    topics_read = read_queries(topics)
    queries = Queries({f"{q}#{i}": topics_read[q] for i in range(DENSE_COPIES) for q in topics_read})
    dense = Dense(index, depth=k)
    if factory != "Flat":
        import faiss

        # one thread: a multi-threaded add builds a different graph in every process
        hnsw, threads = make_faiss_index(dense.index.dim, factory), faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        hnsw.add(dense.index.vectors())
        faiss.omp_set_num_threads(threads)
        dense.index.index = hnsw
        dense.index.set_search_params("efSearch=128")
    vectors = dense.encoder.encode_queries([queries[q] for q in queries])
    index, docids = dense.index.index, np.array(dense.index.docids, dtype=object)

    def direct() -> tuple:
        scores, rows = index.search(vectors, k)
        return scores, docids[rows]  # the least a caller does: rows mean nothing without their docids

    calls = {
        "irkit": lambda: dense.search_vectors(queries, vectors, k),
        "direct": direct,
        "bare": lambda: index.search(vectors, k),
    }
    order = [first, "direct" if first == "irkit" else "irkit"]
    opened = _time(calls["bare"])  # FAISS's own first search: its threads, first-touch memory
    firsts = {tool: _time(calls[tool]) for tool in order}
    warm: dict[str, list[float]] = {t: [] for t in WARM}
    for r in range(repeats):
        for tool in [*order[:: 1 if r % 2 else -1], "bare"]:
            warm[tool].append(_time(calls[tool]))
    return {"open_s": opened, "firsts": firsts, "warm": warm}


def _time(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


DENSE_COPIES = 10
WARM = ("irkit", "direct", "bare")


def _calls(call, repeats: int) -> dict:
    times = [_time(call) for _ in range(repeats + 1)]
    return {"first_s": times[0], "warm_s": statistics.median(times[1:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="warm calls after the first (median reported)")
    ap.add_argument("--rounds", type=int, default=2, help="BM25: fresh-process runs per tool, in alternating order")
    ap.add_argument("--dense-rounds", type=int, default=8, help="dense: fresh processes, each running both tools")
    ap.add_argument("--kinds", nargs="+", choices=["bm25", "dense"], default=["bm25", "dense"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/irkit-bm25-memory"), help="synthetic BM25 index")
    ap.add_argument("--max-ratio", type=float, default=1.10)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, tool, *rest = args.child
        k, repeats = int(rest[-2]), int(rest[-1])
        res = bm25_child(tool, *rest[:2], k, repeats) if kind == "bm25" else dense_child(tool, *rest[:3], k, repeats)
        print(json.dumps(res))
        return 0

    from irkit.data.datasets import load_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    scifact_topics = args.work / "scifact-test.tsv"
    queries = load_dataset(DATA / "beir" / "scifact", "test").queries
    scifact_topics.write_text("".join(f"{q}\t{queries[q]}\n" for q in queries), encoding="utf-8")
    corpus, all_topics = synthetic(args.work, 200_000, 1000)
    synthetic_topics = args.work / "topics-first300.tsv"
    synthetic_topics.write_text("".join(all_topics.read_text(encoding="utf-8").splitlines(True)[:300]), "utf-8")
    synthetic_index = args.work / "bm25-200000"
    if not synthetic_index.exists():
        from irkit.index.bm25 import build_bm25_index

        build_bm25_index(corpus, synthetic_index, show_progress=False)
    cases = [
        ("bm25", "SciFact BM25, 300 queries", [str(ROOT / "indexes" / "scifact-bm25"), str(scifact_topics)]),
        ("bm25", "synthetic 200k-doc BM25, 300 queries", [str(synthetic_index), str(synthetic_topics)]),
        (
            "dense",
            "SciFact Flat (MiniLM), 300 queries x 10",
            [str(ROOT / "indexes" / "scifact-minilm"), "Flat", str(scifact_topics)],
        ),
        (
            "dense",
            "SciFact HNSW32 efSearch=128, 300 queries x 10",
            [str(ROOT / "indexes" / "scifact-minilm"), "HNSW32", str(scifact_topics)],
        ),
    ]
    setup = machine(
        k=args.k,
        repeats=args.repeats,
        rounds=args.rounds,
        dense_rounds=args.dense_rounds,
    )
    print(f"k = {args.k}\n")
    print(
        "| search | JVM + open, irkit / direct; FAISS first search (s) | first call irkit / direct (s) | ratio "
        "| warm irkit / direct (s) | ratio | warm ratio vs bare FAISS search |"
    )
    print("|---|---|---|---|---|---|---|")
    rows, ok = [], True
    for kind, label, params in (c for c in cases if c[0] in args.kinds):
        runs: dict[str, list[dict]] = {"irkit": [], "direct": []}
        for r in range(args.rounds if kind == "bm25" else args.dense_rounds):
            tools = ("irkit", "direct")[:: 1 if r % 2 == 0 else -1]
            for tool in tools if kind == "bm25" else tools[:1]:  # dense: one process runs both, led by `tool`
                runs[tool].append(run_child(__file__, kind, tool, *params, str(args.k), str(args.repeats)))
        if kind == "dense":
            both = runs["irkit"] + runs["direct"]
            pooled = {t: [x for run in both for x in run["warm"][t]] for t in WARM}
            ours, theirs = (
                {
                    "open_s": statistics.median(x["open_s"] for x in both),
                    "first_s": statistics.median(x["firsts"][t] for x in both),
                    "warm_s": statistics.median(pooled[t]),
                }
                for t in ("irkit", "direct")
            )
            theirs["bare_warm_s"] = statistics.median(pooled["bare"])
            # paired within a process: its state (memory layout, neighbours on the host) is shared by both
            first_ratio = statistics.median(x["firsts"]["irkit"] / x["firsts"]["direct"] for x in both)
            pairs = (zip(x["warm"]["irkit"], x["warm"]["direct"], strict=True) for x in both)
            warm_ratio = statistics.median(a / b for pair in pairs for a, b in pair)
        else:
            ours, theirs = (
                {f: statistics.median(x[f] for x in runs[t]) for f in runs[t][0]} for t in ("irkit", "direct")
            )
            first_ratio, warm_ratio = ours["first_s"] / theirs["first_s"], ours["warm_s"] / theirs["warm_s"]
        row = {
            "search": label,
            "irkit": ours,
            "direct": theirs,
            "first_ratio": first_ratio,
            "warm_ratio": warm_ratio,
        }
        if "bare_warm_s" in theirs:
            row["warm_ratio_vs_bare_search"] = ours["warm_s"] / theirs["bare_warm_s"]
        rows.append(row)
        ok &= max(row["first_ratio"], row["warm_ratio"]) <= args.max_ratio
        opened = f"{ours['open_s']:.2f} / {theirs['open_s']:.2f}" if kind == "bm25" else f"{ours['open_s']:.3f}"
        bare = f"{row['warm_ratio_vs_bare_search']:.2f}" if "warm_ratio_vs_bare_search" in row else "—"
        print(
            f"| {label} | {opened} | {ours['first_s']:.3f} / {theirs['first_s']:.3f} | {row['first_ratio']:.2f} "
            f"| {ours['warm_s']:.3f} / {theirs['warm_s']:.3f} | {row['warm_ratio']:.2f} | {bare} |",
            flush=True,
        )
    finish(setup, rows, args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
