"""Dense encoding speed: irkit ``BiEncoder.encode`` (fp32 and int8) vs sentence-transformers ``encode``.

All tools in one process, each timed over ``--rounds`` passes in alternating order (the
median is reported), the same weights (all-MiniLM-L6-v2 as bundled by irkit),
max length 256, normalised vectors, the same batch size, on SciFact (title + text, long) and
the TREC DL 2019 passages (short). Reports docs/s and the wall-clock ratio to
sentence-transformers for irkit's fp32 and int8 backends, docs per CPU-second of this
process, useful GFLOP/s (matmul FLOPs at each text's real token length, so padding counts
as waste) against the CPU's fp32 peak, the smallest cosine between each backend's vectors
and sentence-transformers', the CPU flags (avx2 / avx512f from /proc/cpuinfo, torch's
``get_cpu_capability``) and the date. Exits 1 when a wall-clock ratio is below
``--min-ratio`` (default 1.3), so the speed claim is checked by running it.

    python eval/bench/encode.py --limit 512           # quick
    python eval/bench/encode.py --out encode.json     # full corpora

On an AVX-512 machine, the AVX2-only figure comes from the same command under
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (oneDNN's and ATen's kernels then stop
at AVX2; MKL already uses AVX2 on AMD, on Intel add ``MKL_ENABLE_INSTRUCTIONS=AVX2``); the
printed flags say what ran. Run it on quiet cores (the team's runs share
``flock /work/notes/bench.lock``) and report the load average it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.io import atomic_path, read_corpus
from irkit.models.registry import resolve
from irkit.paths import eval_data_root

DATA = eval_data_root()
CORPORA = {
    "scifact": DATA / "beir" / "scifact" / "corpus.jsonl",
    "dl19": DATA / "trec-dl-2019" / "passages.jsonl",
}


def flops_per_text(lengths: np.ndarray, layers: int, hidden: int, ffn: int) -> np.ndarray:
    """Matmul FLOPs of a BERT encoder stack per text of ``L`` tokens (multiply-add = 2 FLOPs).

    Per layer: Q, K, V and output projections ``4 * 2 L h^2``, the feed-forward pair
    ``2 * 2 L h f``, attention scores and the weighted sum of values ``2 * 2 L^2 h``.
    Embeddings, layer norms, softmax and pooling are left out (they are not matmuls).
    """
    L = lengths.astype(np.float64)
    return layers * (8 * L * hidden**2 + 4 * L * hidden * ffn + 4 * L**2 * hidden)


def cpu_info() -> dict:
    """Model name, nominal clock (GHz), SIMD flags and fp32 FLOP per cycle per core from /proc/cpuinfo."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    # two FMA pipes per core: 2 x (lanes) x 2 FLOP
    widest = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    return {
        "model": fields.get("model name", platform.processor()),
        "nominal_ghz": float(fields.get("cpu MHz", "0")) / 1000,
        "flop_per_cycle": widest,
        "cores": len(os.sched_getaffinity(0)),
        "flags": sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni"}),
    }


def machine(cpu: dict) -> dict:
    """What a speed figure must name: date, CPU, its SIMD flags, torch's kernel level, threads, load."""
    import datetime

    import torch

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu["model"],
        "cores": cpu["cores"],
        "flags": cpu["flags"],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


def describe(m: dict) -> str:
    """One line naming the machine of a run."""
    isa = f", ONEDNN_MAX_CPU_ISA={m['onednn_max_cpu_isa']}" if m["onednn_max_cpu_isa"] else ""
    return (
        f"{m['date']}: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])}, torch {m['torch']}"
        f" kernels {m['torch_cpu_capability']}{isa}, {m['torch_threads']} threads,"
        f" load average {m['load_average'][0]:.2f}"
    )


def below(ratios: dict[str, float], minimum: float) -> int:
    """Exit status of a benchmark: 1 (and the offending ratios printed) if any is under ``minimum``."""
    low = {k: round(v, 2) for k, v in ratios.items() if v < minimum}
    if low:
        print(f"\nFAIL: wall-clock ratio below {minimum}: {low}")
        return 1
    print(f"\nall wall-clock ratios >= {minimum}")
    return 0


def write_results(path: Path, setup: dict, rows: list[dict]) -> None:
    """The benchmark's set-up and result rows as one JSON file, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"setup": setup, "results": rows}, indent=2) + "\n")


def timed(fn, texts: list[str]) -> tuple[np.ndarray, float, float]:
    """Output, wall seconds and CPU seconds of this process (the latter hardly moves when
    other processes share the cores, so it compares tools on a busy machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(texts)
    return out, time.perf_counter() - start, time.process_time() - cpu


def timed_rounds(tools: dict[str, Callable], inputs: list, rounds: int) -> dict[str, tuple[Any, float, float]]:
    """Each tool's first output and its median wall and CPU seconds over ``rounds`` passes.

    The tools' order is reversed every other round, so none gains or loses from always
    running first or last, and the median discards a pass a noisy neighbour slowed down.
    """
    names, passes = list(tools), {name: [] for name in tools}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            passes[name].append(timed(tools[name], inputs))
    return {
        name: (got[0][0], statistics.median(p[1] for p in got), statistics.median(p[2] for p in got))
        for name, got in passes.items()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N docs of each corpus (quick run)")
    ap.add_argument("--batch-size", type=int, default=32, help="texts per forward pass, both tools (default 32)")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes per tool, order alternating (default 3)")
    ap.add_argument("--corpus", action="append", choices=sorted(CORPORA), help="repeatable; default: all")
    ap.add_argument("--backend", action="append", choices=["fp32", "int8"], help="irkit backends (default: both)")
    ap.add_argument("--ghz", type=float, default=None, help="core clock for the peak (default: /proc/cpuinfo)")
    ap.add_argument("--min-ratio", type=float, default=1.3, help="exit 1 if a wall-clock ratio is lower (default 1.3)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from sentence_transformers import SentenceTransformer

    from irkit.models.encoder import BiEncoder

    cpu = cpu_info()
    ghz = args.ghz or cpu["nominal_ghz"]
    peak = cpu["cores"] * ghz * cpu["flop_per_cycle"]

    theirs = SentenceTransformer(resolve("minilm"), device="cpu")
    theirs.max_seq_length = 256
    tools = {
        "sentence-transformers": lambda t: theirs.encode(
            t, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ),
    }
    for backend in args.backend or ["fp32", "int8"]:
        ours = BiEncoder("minilm", max_length=256, normalize=True, backend=backend)
        tools[f"irkit {backend}"] = lambda t, e=ours: e.encode(t, batch_size=args.batch_size)
    cfg, tokenizer = ours.model.config, ours.tokenizer
    warm = ["warm-up text"] * 4
    for fn in tools.values():
        fn(warm)

    rows = []
    start = machine(cpu)
    for name in args.corpus or sorted(CORPORA, reverse=True):
        texts = [d.contents for d in read_corpus(CORPORA[name])][: args.limit]
        lengths = np.array([len(x) for x in tokenizer(texts, truncation=True, max_length=256)["input_ids"]])
        flops = float(flops_per_text(lengths, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size).sum())
        results = timed_rounds(tools, texts, args.rounds)
        ref, st_seconds, st_cpu = results["sentence-transformers"]
        for tool, (vectors, seconds, cpu_seconds) in results.items():
            cosine = (vectors * ref).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref, axis=1))
            rows.append(
                {
                    "corpus": name,
                    "tool": tool,
                    "docs": len(texts),
                    "mean_tokens": float(lengths.mean()),
                    "at_cap": float((lengths == 256).mean()),
                    "gflop_per_doc": flops / len(texts) / 1e9,
                    "seconds": seconds,
                    "docs_per_s": len(texts) / seconds,
                    "docs_per_cpu_s": len(texts) / cpu_seconds,
                    "gflops": flops / seconds / 1e9,
                    "ratio": st_seconds / seconds,
                    "cpu_ratio": st_cpu / cpu_seconds,
                    "min_cosine_vs_st": float(cosine.min()),
                    "mean_cosine_vs_st": float(cosine.mean()),
                }
            )

    setup = {
        **machine(cpu),
        "load_average_start": start["load_average"],
        "ghz": ghz,
        "flop_per_cycle": cpu["flop_per_cycle"],
        "peak_gflops": peak,
        "batch_size": args.batch_size,
        "limit": args.limit,
        "rounds": args.rounds,
    }
    print(
        f"{describe(setup)} (at start {start['load_average'][0]:.2f})\n"
        f"peak {cpu['cores']} x {ghz:.2f} GHz x {cpu['flop_per_cycle']} fp32 FLOP/cycle = {peak:.0f} GFLOP/s;"
        f" batch {args.batch_size}\n"
    )
    print(
        "| corpus | docs | mean tokens | tool | docs/s | ratio | docs/CPU-s | CPU ratio | GFLOP/s (% peak)"
        " | min / mean cosine vs ST |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['corpus']} | {r['docs']} | {r['mean_tokens']:.0f} | {r['tool']} | {r['docs_per_s']:.2f}"
            f" | {r['ratio']:.2f} | {r['docs_per_cpu_s']:.2f} | {r['cpu_ratio']:.2f}"
            f" | {r['gflops']:.0f} ({100 * r['gflops'] / peak:.0f} %)"
            f" | {r['min_cosine_vs_st']:.4f} / {r['mean_cosine_vs_st']:.4f} |"
        )
    if args.out:
        write_results(args.out, setup, rows)
    ratios = {f"{r['corpus']} {r['tool']}": r["ratio"] for r in rows if r["tool"] != "sentence-transformers"}
    return below(ratios, args.min_ratio)


if __name__ == "__main__":
    raise SystemExit(main())
