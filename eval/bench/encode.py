"""Dense encoding speed: irkit ``BiEncoder.encode`` vs sentence-transformers ``SentenceTransformer.encode``.

One run, both tools in one process, the same weights (all-MiniLM-L6-v2 as bundled by irkit),
max length 256, normalised vectors, the same batch size, on SciFact (title + text, long) and
the TREC DL 2019 passages (short). Reports docs/s, the ratio, useful GFLOP/s (matmul FLOPs at
each text's real token length, so padding counts as waste) against the CPU's fp32 peak, and
the smallest cosine between the two tools' vectors for the same text.

    python eval/bench/encode.py --limit 256           # quick
    python eval/bench/encode.py --out encode.json     # full corpora
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from irkit.data.io import atomic_path, read_corpus
from irkit.models.registry import resolve

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("IRKIT_DATA", ROOT.parent / "shared" / "data"))
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
    """Model name, nominal clock (GHz) and fp32 FLOP per cycle per core from /proc/cpuinfo."""
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
    }


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N docs of each corpus (quick run)")
    ap.add_argument("--batch-size", type=int, default=32, help="texts per forward pass, both tools (default 32)")
    ap.add_argument("--corpus", action="append", choices=sorted(CORPORA), help="repeatable; default: all")
    ap.add_argument("--ghz", type=float, default=None, help="core clock for the peak (default: /proc/cpuinfo)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from sentence_transformers import SentenceTransformer

    from irkit.models.encoder import BiEncoder

    cpu = cpu_info()
    ghz = args.ghz or cpu["nominal_ghz"]
    peak = cpu["cores"] * ghz * cpu["flop_per_cycle"]
    avx2_peak = cpu["cores"] * ghz * 32

    ours = BiEncoder("minilm", max_length=256, normalize=True)
    theirs = SentenceTransformer(resolve("minilm"), device="cpu")
    theirs.max_seq_length = 256
    cfg = ours.model.config
    tools = {
        "sentence-transformers": lambda t: theirs.encode(
            t, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ),
        "irkit": lambda t: ours.encode(t, batch_size=args.batch_size),
    }
    warm = ["warm-up text"] * 4
    for fn in tools.values():
        fn(warm)

    rows = []
    for name in args.corpus or sorted(CORPORA, reverse=True):
        texts = [d.contents for d in read_corpus(CORPORA[name])][: args.limit]
        lengths = np.array([len(x) for x in ours.tokenizer(texts, truncation=True, max_length=256)["input_ids"]])
        flops = float(flops_per_text(lengths, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size).sum())
        vectors, seconds, cpu_seconds = {}, {}, {}
        for tool, fn in tools.items():
            vectors[tool], seconds[tool], cpu_seconds[tool] = timed(fn, texts)
        a, b = vectors["irkit"], vectors["sentence-transformers"]
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        row = {
            "corpus": name,
            "docs": len(texts),
            "mean_tokens": float(lengths.mean()),
            "at_cap": float((lengths == 256).mean()),
            "gflop_per_doc": flops / len(texts) / 1e9,
            "min_cosine": float(cosine.min()),
        }
        for tool in tools:
            row[f"{tool}_seconds"] = seconds[tool]
            row[f"{tool}_docs_per_s"] = len(texts) / seconds[tool]
            row[f"{tool}_docs_per_cpu_s"] = len(texts) / cpu_seconds[tool]
            row[f"{tool}_gflops"] = flops / seconds[tool] / 1e9
        row["ratio"] = row["irkit_docs_per_s"] / row["sentence-transformers_docs_per_s"]
        row["cpu_ratio"] = row["irkit_docs_per_cpu_s"] / row["sentence-transformers_docs_per_cpu_s"]
        rows.append(row)

    setup = {
        "cpu": cpu["model"],
        "cores": cpu["cores"],
        "ghz": ghz,
        "flop_per_cycle": cpu["flop_per_cycle"],
        "peak_gflops": peak,
        "avx2_peak_gflops": avx2_peak,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "limit": args.limit,
        "load_average": os.getloadavg(),
    }
    print(
        f"{setup['cpu']}, {cpu['cores']} cores at {ghz:.2f} GHz x {cpu['flop_per_cycle']} fp32 FLOP/cycle"
        f" = {peak:.0f} GFLOP/s peak (AVX2 FMA rate: {avx2_peak:.0f}); torch threads {setup['torch_threads']},"
        f" batch {args.batch_size}, load average {setup['load_average'][0]:.2f}\n"
    )
    print(
        "| corpus | docs | mean tokens | GFLOP/doc | sentence-transformers docs/s | irkit docs/s | ratio"
        " | ST GFLOP/s (% peak) | irkit GFLOP/s (% peak) | irkit % AVX2 peak | min cosine"
        " | ST docs/CPU-s | irkit docs/CPU-s | CPU ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        st, ik = r["sentence-transformers_gflops"], r["irkit_gflops"]
        print(
            f"| {r['corpus']} | {r['docs']} | {r['mean_tokens']:.0f} | {r['gflop_per_doc']:.2f}"
            f" | {r['sentence-transformers_docs_per_s']:.2f} | {r['irkit_docs_per_s']:.2f} | {r['ratio']:.2f}"
            f" | {st:.0f} ({100 * st / peak:.0f} %) | {ik:.0f} ({100 * ik / peak:.0f} %)"
            f" | {100 * ik / avx2_peak:.0f} % | {r['min_cosine']:.6f}"
            f" | {r['sentence-transformers_docs_per_cpu_s']:.2f} | {r['irkit_docs_per_cpu_s']:.2f}"
            f" | {r['cpu_ratio']:.2f} |"
        )
    if args.out:
        write_results(args.out, setup, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
