"""Cross-encoder speed: irkit ``CrossEncoder.predict`` (fp32, int8) vs sentence-transformers ``CrossEncoder.predict``.

All tools in one process, each timed over ``--rounds`` passes in alternating order (the median
is reported), the same model and the same (query, passage) pairs:
the 4,300 pairs of the TREC DL 2019 BM25 top-100 run (43 queries), passages as title + text.
No trained cross-encoder ships offline, so the model is the MiniLM backbone with an untrained
one-label head (seeded, saved to a temporary directory): speed and score agreement do not
depend on the head being trained. Scores are raw logits for both tools (sentence-transformers'
default sigmoid is switched off). Reports pairs/s, the ratio, the largest |score difference| and
useful GFLOP/s (matmul FLOPs at each pair's real token length) against the CPU's fp32 peak,
for irkit's fp32 and int8 backends, with the date and the CPU flags (avx2 / avx512f, torch's
``get_cpu_capability``). Exits 1 when a wall-clock ratio is below ``--min-ratio`` (default 1.3).

    python eval/bench/rerank.py --limit 640           # quick
    python eval/bench/rerank.py --out rerank.json     # all 4,300 pairs

To measure AVX2 kernels on an AVX-512 machine, run it under
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (see eval/bench/encode.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode import DATA, below, cpu_info, describe, flops_per_text, machine, timed_rounds

from irkit.data.io import atomic_path, read_corpus, read_run, read_topics_tsv
from irkit.models.registry import resolve

DL19 = DATA / "trec-dl-2019"


def dl19_pairs() -> list[tuple[str, str]]:
    """(query, passage) for every line of the BM25 top-100 run, in run order."""
    topics = read_topics_tsv(DL19 / "topics.tsv")
    run = read_run(DL19 / "bm25-top100.run", topics)
    texts = {d.docid: d.contents for d in read_corpus(DL19 / "passages.jsonl")}
    return [(topics[q], texts[d]) for q, (docids, _) in run.items() for d in docids]


def save_model(out: Path, seed: int) -> Path:
    """MiniLM backbone + untrained one-label head, seeded, with its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_pretrained(resolve("minilm"), num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N pairs (quick run)")
    ap.add_argument("--batch-size", type=int, default=32, help="pairs per forward pass, both tools (default 32)")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes per tool, order alternating (default 3)")
    ap.add_argument("--max-length", type=int, default=512, help="token cap per pair, both tools (default 512)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the untrained head")
    ap.add_argument("--ablate", action="store_true", help="also time irkit fp32 with oneDNN off")
    ap.add_argument("--backend", action="append", choices=["fp32", "int8"], help="irkit backends (default: both)")
    ap.add_argument("--min-ratio", type=float, default=1.3, help="exit 1 if a wall-clock ratio is lower (default 1.3)")
    ap.add_argument("--ghz", type=float, default=None, help="core clock for the peak (default: /proc/cpuinfo)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from irkit.rerank.cross_encoder import CrossEncoder

    cpu = cpu_info()
    ghz = args.ghz or cpu["nominal_ghz"]
    peak = cpu["cores"] * ghz * cpu["flop_per_cycle"]
    pairs = dl19_pairs()[: args.limit]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(save_model(Path(tmp) / "minilm-head", args.seed))
        theirs = STCrossEncoder(model_dir, max_length=args.max_length, activation_fn=torch.nn.Identity(), device="cpu")
        tools = {
            "sentence-transformers": lambda p: theirs.predict(p, batch_size=args.batch_size, show_progress_bar=False),
        }
        for backend in args.backend or ["fp32", "int8"]:
            ours = CrossEncoder(model_dir, max_length=args.max_length, batch_size=args.batch_size, backend=backend)
            tools[f"irkit {backend}"] = ours.predict
        if args.ablate:
            plain = CrossEncoder(model_dir, max_length=args.max_length, batch_size=args.batch_size, onednn=False)
            tools["irkit fp32, oneDNN off"] = plain.predict
        for fn in tools.values():
            fn(pairs[:8])  # warm-up

        cfg = ours.model.config
        lengths = np.array([len(x) for x in ours.tokenize(pairs)["input_ids"]])
        flops = float(flops_per_text(lengths, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size).sum())
        start = machine(cpu)
        passes = timed_rounds(tools, pairs, args.rounds)
        scores = {tool: np.asarray(out, dtype=np.float32) for tool, (out, _, _) in passes.items()}
        seconds = {tool: wall for tool, (_, wall, _) in passes.items()}

    ref = scores["sentence-transformers"]
    rows = []
    for tool in tools:
        rows.append(
            {
                "tool": tool,
                "seconds": seconds[tool],
                "pairs_per_s": len(pairs) / seconds[tool],
                "gflops": flops / seconds[tool] / 1e9,
                "ratio": seconds["sentence-transformers"] / seconds[tool],
                "max_abs_diff": float(np.abs(scores[tool] - ref).max()),
            }
        )
    setup = {
        **machine(cpu),
        "load_average_start": start["load_average"],
        "ghz": ghz,
        "flop_per_cycle": cpu["flop_per_cycle"],
        "peak_gflops": peak,
        "pairs": len(pairs),
        "mean_tokens": float(lengths.mean()),
        "min_tokens": int(lengths.min()),
        "max_tokens": int(lengths.max()),
        "gflop_per_pair": flops / len(pairs) / 1e9,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "rounds": args.rounds,
    }
    print(
        f"{describe(setup)} (at start {start['load_average'][0]:.2f})\n"
        f"peak {cpu['cores']} x {ghz:.2f} GHz x {cpu['flop_per_cycle']} fp32 FLOP/cycle = {peak:.0f} GFLOP/s;"
        f" batch {args.batch_size}\n"
        f"{len(pairs)} DL19 pairs, {setup['mean_tokens']:.0f} tokens on average"
        f" ({setup['min_tokens']}-{setup['max_tokens']}), {setup['gflop_per_pair']:.2f} GFLOP/pair\n"
    )
    print("| tool | pairs/s | ratio vs sentence-transformers | GFLOP/s (% peak) | max abs score diff |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['tool']} | {r['pairs_per_s']:.1f} | {r['ratio']:.2f} | {r['gflops']:.0f}"
            f" ({100 * r['gflops'] / peak:.0f} %) | {r['max_abs_diff']:.2e} |"
        )
    if args.out:
        with atomic_path(args.out) as tmp_out:
            tmp_out.write_text(json.dumps({"setup": setup, "results": rows}, indent=2) + "\n")
    ratios = {r["tool"]: r["ratio"] for r in rows if r["tool"].startswith("irkit") and "off" not in r["tool"]}
    return below(ratios, args.min_ratio)


if __name__ == "__main__":
    raise SystemExit(main())
