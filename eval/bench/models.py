"""Speed of the fetched models against their peer tools, on the same texts in one run.

* SPLADE-tiny, document encoding (full-vocabulary weights, what an impact index needs):
  irkit ``Splade.encode`` vs sentence-transformers ``SparseEncoder.encode``.
* SPLADE-tiny reranking (query-document pairs scored): irkit ``Splade.score`` (query rows
  of the vocabulary only) vs ``SparseEncoder`` encoding query and documents, then the dot product.
* nomic-embed-text-v1.5, document encoding: irkit ``BiEncoder.encode_documents`` vs llama.cpp
  (the ``gpt4all`` wheel's build, f16 GGUF as shipped) when ``--gpt4all-python`` names a Python
  that has ``gpt4all`` installed (it is no irkit dependency). Texts are cut to 256 tokens
  (prefix included) beforehand, so both tools see the same tokens.

Texts: the first ``--limit`` SciFact abstracts (title + text); rerank pairs: the first 4 test
claims, each against all those abstracts. Reports docs (pairs) per wall second and per CPU
second of the measuring process (the latter moves little when other jobs share the cores;
llama.cpp's CPU time is its subprocess's), the ratio to the peer, the CPU and its flags.

    nice -n 10 python eval/bench/models.py --limit 384 --gpt4all-python /tmp/g4a-venv/bin/python
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from encode import DATA, cpu_info, timed, write_results

from irkit.data.io import read_corpus, read_queries

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx_vnni", "amx_bf16")
MAX_LENGTH = 256
SCIFACT = DATA / "beir" / "scifact"

GPT4ALL = """
import json, sys, time, resource
from gpt4all import Embed4All
folder, name, texts_file, out_file = sys.argv[1:5]
texts = json.load(open(texts_file))
model = Embed4All(name, model_path=folder, allow_download=False, device="cpu", n_threads=2)
model.embed(["warm-up text"], prefix="search_document")
start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
vectors = model.embed(texts, prefix="search_document", long_text_mode="truncate")
end, cpu2 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
seconds = cpu2.ru_utime + cpu2.ru_stime - cpu.ru_utime - cpu.ru_stime
json.dump({"vectors": vectors, "seconds": end - start, "cpu_seconds": seconds}, open(out_file, "w"))
"""


def cpu_flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    present = set(line.partition(":")[2].split())
    return [f for f in FLAGS if f in present]


def row(task: str, items: int, unit: str, ours: tuple, theirs: tuple | None, peer: str) -> dict:
    """Throughput of irkit and its peer from ``timed`` results ``(output, seconds, cpu seconds)``."""
    out = {"task": task, "items": items, "unit": unit, "peer": peer}
    out |= {"irkit_per_s": items / ours[1], "irkit_per_cpu_s": items / ours[2]}
    if theirs is not None:
        out |= {"peer_per_s": items / theirs[1], "peer_per_cpu_s": items / theirs[2]}
        out |= {
            "ratio": out["irkit_per_s"] / out["peer_per_s"],
            "cpu_ratio": out["irkit_per_cpu_s"] / out["peer_per_cpu_s"],
        }
    return out


def bench_splade(docs: list[str], queries: list[str], batch_size: int) -> list[dict]:
    from sentence_transformers import SparseEncoder

    from irkit.models.registry import resolve
    from irkit.models.splade import Splade

    ours = Splade("splade-tiny", max_length=MAX_LENGTH)
    theirs = SparseEncoder(resolve("splade-tiny"), device="cpu")
    theirs.max_seq_length = MAX_LENGTH

    def peer_encode(texts: list[str]) -> np.ndarray:
        return theirs.encode(texts, batch_size=batch_size, convert_to_tensor=True).to_dense().numpy()

    def peer_score(pairs: list[str]) -> np.ndarray:  # per query, as a reranker sees its own candidates
        return np.stack([peer_encode(docs) @ peer_encode([q])[0] for q in queries], axis=1)

    def our_score(pairs: list[str]) -> np.ndarray:
        return np.stack([ours.score(q, docs, batch_size=batch_size) for q in queries], axis=1)

    for fn in (lambda t: ours.encode(t), peer_encode):
        fn(["warm-up text"] * 4)
    enc_ours, enc_theirs = timed(lambda t: ours.encode(t, batch_size=batch_size), docs), timed(peer_encode, docs)
    diff = float(np.abs(enc_ours[0].toarray() - enc_theirs[0]).max())
    pairs = [f"{q}\t{d}" for q in queries for d in docs]
    score_ours, score_theirs = timed(our_score, pairs), timed(peer_score, pairs)
    score_diff = float(np.abs(score_ours[0] - score_theirs[0]).max())
    return [
        row("SPLADE-tiny encode", len(docs), "docs", enc_ours, enc_theirs, "sentence-transformers SparseEncoder")
        | {"max_abs_diff": diff},
        row("SPLADE-tiny rerank", len(pairs), "pairs", score_ours, score_theirs, "sentence-transformers SparseEncoder")
        | {"max_abs_diff": score_diff},
    ]


def bench_nomic(docs: list[str], batch_size: int, gpt4all_python: str | None) -> list[dict]:
    from irkit.models.encoder import BiEncoder
    from irkit.models.nomic import find_gguf
    from irkit.models.registry import resolve

    ours = BiEncoder("nomic-embed-text-v1.5", max_length=MAX_LENGTH)
    # cut each text so that prefix + text + [CLS]/[SEP] fit in MAX_LENGTH tokens: both tools see the same tokens
    room = MAX_LENGTH - 2 - len(ours.tokenizer(ours.document_prefix, add_special_tokens=False)["input_ids"])
    ids = ours.tokenizer(docs, add_special_tokens=False, truncation=True, max_length=room)["input_ids"]
    texts = ours.tokenizer.batch_decode(ids)
    ours.encode_documents(["warm-up text"] * 4)
    mine = timed(lambda t: ours.encode_documents(t, batch_size=batch_size), texts)
    theirs, extra = None, {}
    if gpt4all_python:
        gguf = find_gguf(resolve("nomic-embed-text-v1.5"))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "texts.json").write_text(json.dumps(texts))
            subprocess.run(
                [gpt4all_python, "-c", GPT4ALL, str(gguf.parent), gguf.name, f"{tmp}/texts.json", f"{tmp}/out.json"],
                check=True,
                capture_output=True,
            )
            result = json.loads((Path(tmp) / "out.json").read_text())
        vectors = np.array(result["vectors"], dtype=np.float32)
        theirs = (vectors, result["seconds"], result["cpu_seconds"])
        extra = {"min_cosine": float((vectors * mine[0]).sum(1).min())}
    lengths = np.array([len(x) for x in ours.tokenizer([ours.document_prefix + t for t in texts])["input_ids"]])
    extra |= {"mean_tokens": float(lengths.mean()), "max_tokens": int(lengths.max())}
    return [row("nomic-embed-text-v1.5 encode", len(texts), "docs", mine, theirs, "llama.cpp (gpt4all 2.8.2)") | extra]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=384, help="SciFact abstracts to encode (default 384)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--gpt4all-python", default=None, help="a Python with gpt4all installed (nomic peer)")
    ap.add_argument("--only", choices=["splade", "nomic"], default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    docs = [d.contents for d in read_corpus(SCIFACT / "corpus.jsonl")][: args.limit]
    queries = [q for _, q in list(read_queries(SCIFACT / "queries.jsonl").items())[:4]]
    rows = []
    if args.only in (None, "splade"):
        rows += bench_splade(docs, queries, args.batch_size)
    if args.only in (None, "nomic"):
        rows += bench_nomic(docs, args.batch_size, args.gpt4all_python)
    cpu = cpu_info()
    setup = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "cpu": cpu["model"],
        "cores": cpu["cores"],
        "flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "max_length": MAX_LENGTH,
        "load_average": os.getloadavg(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(
        f"{setup['date']}  {setup['cpu']}, {setup['cores']} cores, flags {' '.join(setup['flags'])}; "
        f"torch threads {setup['torch_threads']}, batch {args.batch_size}, max length {MAX_LENGTH}, "
        f"load average {setup['load_average'][0]:.2f}, peak RSS {setup['peak_rss_mb']:.0f} MB\n"
    )
    print("| task | items | irkit /s | peer /s | ratio | irkit /CPU-s | peer /CPU-s | CPU ratio | peer | agreement |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        agree = f"max abs diff {r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        agree = agree or (f"min cosine {r['min_cosine']:.5f}" if "min_cosine" in r else "")
        peer = [f"{r[k]:.2f}" if k in r else "–" for k in ("peer_per_s", "ratio")]
        peer_cpu = [f"{r[k]:.2f}" if k in r else "–" for k in ("peer_per_cpu_s", "cpu_ratio")]
        print(
            f"| {r['task']} | {r['items']} {r['unit']} | {r['irkit_per_s']:.2f} | {peer[0]} | {peer[1]}"
            f" | {r['irkit_per_cpu_s']:.2f} | {peer_cpu[0]} | {peer_cpu[1]} | {r['peer']} | {agree} |"
        )
    if args.out:
        write_results(args.out, setup, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
