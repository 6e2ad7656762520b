"""How FAISS index kinds scale: Flat vs HNSW32 vs IVF-PQ at 10k, 100k and 1M synthetic 384-d vectors.

The vectors are **synthetic** (seeded), not encoded text. Sentence embeddings are clustered
and have a low intrinsic dimension, so the generator draws a 48-d latent point around one of
1,024 latent centres (noise 0.5 per axis), maps it into 384-d by a fixed random orthonormal
projection, adds 384-d isotropic noise (norm ≈ 0.1 of the signal) and normalises. (Pure
isotropic noise would make every neighbour equally far, which no index, and no real corpus,
has.) The 1,000 queries come from the same distribution with another seed. Vectors are generated and added
in chunks of 65,536, so no step holds all of them at once (except the index itself, for
Flat and HNSW, which store them).

Each index is built by ``irkit.index.dense.make_faiss_index`` (inner product, the metric of
irkit's dense indexes) and trained on its first ``--train`` vectors when it needs training,
in a fresh process whose peak RSS (VmHWM) is reported; a second fresh process loads it and
searches the queries at k = 10 with 1 and then 2 FAISS threads. recall@10 is the share of
the exact top 10 (streamed brute force) an index returns.

    nice -n 0 flock /work/notes/bench.lock python eval/bench/faiss_scaling.py --out eval/results/faiss_scaling.json

Exits non-zero if the 1M HNSW32 build or its serving process peaks above ``--hnsw-budget-gib`` (4).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import finish, machine, peak_rss_gib, run_child

DIM, LATENT, CENTRES, CHUNK, K = 384, 48, 1024, 65_536, 10
NUM_QUERIES = 1000


def ivfpq(n: int) -> str:
    """IVF-PQ with about sqrt(n) lists (a power of two) and 48 8-bit sub-quantisers (8 dims each).

    ``np``: no polysemous training, which only polysemous search uses and which multiplies the
    training time of a plain ``PQ48`` (measured: 290 s vs 20 s for 10k vectors, 2 threads on 2 busy cores).
    """
    return f"IVF{2 ** round(np.log2(np.sqrt(n)))},PQ48np"


def factories(n: int) -> dict[str, list[str]]:
    """Index factory string → the search-time parameter settings measured for it."""
    return {"Flat": [""], "HNSW32": ["efSearch=32", "efSearch=128"], ivfpq(n): ["nprobe=8", "nprobe=32"]}


def _space() -> tuple[np.ndarray, np.ndarray]:
    """The latent centres and the orthonormal latent → 384-d projection (fixed seed)."""
    rng = np.random.default_rng(12345)
    projection = np.linalg.qr(rng.standard_normal((DIM, LATENT)))[0].T.astype(np.float32)
    return rng.standard_normal((CENTRES, LATENT), dtype=np.float32), projection


def _draw(rng: np.random.Generator, space: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    centres, projection = space
    latent = centres[rng.integers(0, CENTRES, n)] + 0.5 * rng.standard_normal((n, LATENT), dtype=np.float32)
    x = latent @ projection
    x += rng.standard_normal((n, DIM), dtype=np.float32) * (
        0.1 * np.linalg.norm(x, axis=1, keepdims=True) / np.sqrt(DIM)
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def chunks(n: int):
    """The ``n`` corpus vectors, in order, ``CHUNK`` at a time (chunk ``i`` seeded by ``i``: any prefix is stable)."""
    space = _space()
    for i, start in enumerate(range(0, n, CHUNK)):
        yield _draw(np.random.default_rng([7, i]), space, min(CHUNK, n - start))


def queries() -> np.ndarray:
    return _draw(np.random.default_rng([8]), _space(), NUM_QUERIES)


def exact_top(n: int, work: Path) -> np.ndarray:
    """Row ids of the exact inner-product top ``K`` of every query (cached under ``work``)."""
    path = work / f"truth-{n}.npy"
    if path.is_file():
        return np.load(path)
    q = queries()
    best_s = np.full((NUM_QUERIES, K), -np.inf, dtype=np.float32)
    best_i = np.zeros((NUM_QUERIES, K), dtype=np.int64)
    offset = 0
    for x in chunks(n):
        s = q @ x.T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(offset, offset + len(x)), s.shape)], axis=1)
        top = np.argpartition(-cand_s, K, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
        offset += len(x)
    np.save(path, best_i)
    return best_i


def child_build(n: int, factory: str, path: Path, train: int) -> dict:
    import faiss

    from irkit.index.dense import make_faiss_index

    start = time.perf_counter()
    index = make_faiss_index(DIM, factory)
    train_s = 0.0
    if not index.is_trained:
        sample = np.concatenate(list(itertools.islice(chunks(n), -(-min(n, train) // CHUNK))))
        index.train(sample[:train])
        del sample
        train_s = time.perf_counter() - start
    for x in chunks(n):
        index.add(x)
    build_s = time.perf_counter() - start
    faiss.write_index(index, str(path))
    return {"build_s": build_s, "train_s": train_s, "build_peak_rss_gib": peak_rss_gib()}


def child_search(path: Path, params: list[str], truth: Path) -> list[dict]:
    import faiss

    index = faiss.read_index(str(path))
    q, exact = queries(), np.load(truth)
    rows = []
    for setting in params:
        if setting:
            faiss.ParameterSpace().set_index_parameters(index, setting)
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            index.search(q[:16], K)  # warm-up: first-touch of the index's pages
            start = time.perf_counter()
            _, found = index.search(q, K)
            seconds = time.perf_counter() - start
            recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)])
            rows.append({"params": setting, "threads": threads, "qps": NUM_QUERIES / seconds, "recall_at_10": recall})
    for r in rows:
        r["serve_peak_rss_gib"] = peak_rss_gib()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--train", type=int, default=100_000, help="training sample for indexes that need one")
    ap.add_argument("--work", type=Path, default=Path("/tmp/irkit-faiss-scaling"))
    ap.add_argument("--hnsw-budget-gib", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "build":
            res: object = child_build(int(rest[0]), rest[1], Path(rest[2]), int(rest[3]))
        else:
            res = child_search(Path(rest[0]), json.loads(rest[1]), Path(rest[2]))
        print(json.dumps(res))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    setup = machine(
        data=f"synthetic: {DIM}-d unit vectors, {LATENT}-d latent, {CENTRES} centres, {NUM_QUERIES} queries, k={K}",
        train_sample=args.train,
    )
    print(
        "| vectors | index | build (s) | build peak RSS (GiB) | size (MiB) | params | QPS 1 thr | QPS 2 thr "
        "| recall@10 | serve peak RSS (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows, ok = [], True
    for n in args.sizes:
        exact_top(n, args.work)
        for factory, params in factories(n).items():
            path = args.work / f"{n}-{factory.replace(',', '_')}.faiss"
            built = run_child(__file__, "build", str(n), factory, str(path), str(args.train))
            size = path.stat().st_size / 2**20
            searched = run_child(__file__, "search", str(path), json.dumps(params), str(args.work / f"truth-{n}.npy"))
            path.unlink()
            for setting in params:
                one, two = (r for r in searched if r["params"] == setting)
                row = {
                    "vectors": n,
                    "factory": factory,
                    **built,
                    "size_mib": size,
                    "params": setting,
                    "qps_1_thread": one["qps"],
                    "qps_2_threads": two["qps"],
                    "recall_at_10": one["recall_at_10"],
                    "serve_peak_rss_gib": one["serve_peak_rss_gib"],
                }
                rows.append(row)
                print(
                    f"| {n:,} | {factory} | {built['build_s']:.1f} | {built['build_peak_rss_gib']:.2f} | {size:,.0f} "
                    f"| {setting or '—'} | {one['qps']:,.0f} | {two['qps']:,.0f} | {one['recall_at_10']:.3f} "
                    f"| {one['serve_peak_rss_gib']:.2f} |",
                    flush=True,
                )
                if n >= 1_000_000 and factory.startswith("HNSW"):
                    ok &= max(built["build_peak_rss_gib"], one["serve_peak_rss_gib"]) <= args.hnsw_budget_gib
    finish(setup, rows, args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
