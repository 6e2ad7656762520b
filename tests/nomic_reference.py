"""Reference embeddings for ``tests/test_nomic.py``, computed by llama.cpp rather than by irkit.

``tests/data/nomic_reference.json`` holds the vectors of a few fixed texts for two models:
the real nomic-embed-text-v1.5 GGUF and a tiny random nomic-bert that ``write_tiny_nomic``
rebuilds identically in the test (so that check runs in CI, without the real weights). They
were computed by llama.cpp as built into the ``gpt4all==2.8.2`` wheel (its CPU backend,
``Embed4All``), in two steps because gpt4all lives in its own virtual environment:

    python tests/nomic_reference.py gguf /tmp/nomic-ref
    /tmp/g4a-venv/bin/python tests/nomic_reference.py embed /tmp/nomic-ref tests/data/nomic_reference.json

Step ``gguf`` (needs ``gguf``; the real model in the irkit cache) writes f32 GGUF copies, so
llama.cpp computes in fp32 like irkit (with f16 weights it rounds activations to f16), named so
gpt4all does not recognise the model (for nomic-embed it otherwise changes the computation
slightly); texts carry their task prefix themselves. Step ``embed`` (needs only ``gpt4all``
and ``numpy``) runs the model on the texts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

QUERIES = ["what is the capital of france", "do statins lower LDL cholesterol?"]
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "Statins inhibit HMG-CoA reductase, the enzyme that controls the rate of cholesterol synthesis in the "
    "liver. In randomised trials of patients with and without heart disease, statin therapy lowered LDL "
    "cholesterol by a third to a half and reduced major vascular events, with the size of the benefit "
    "tracking the absolute reduction in LDL. Muscle symptoms were reported about as often on placebo.",
]
TINY = {"hidden": 32, "layers": 2, "heads": 2, "ff": 48, "context": 512, "rope_base": 1000.0, "vocab": 30522}


def prefixed() -> list[str]:
    """The fixed texts with nomic-embed's task prefixes, queries first."""
    return [f"search_query: {q}" for q in QUERIES] + [f"search_document: {d}" for d in DOCUMENTS]


def write_tiny_nomic(path: Path, f16: bool = False, seed: int = 0, extra: dict | None = None) -> Path:
    """A tiny random nomic-bert GGUF (llama.cpp tensor names). Weights are f16-representable, so
    the ``f16=True`` file holds exactly the values of the f32 one. ``extra`` adds metadata
    fields (the tokenizer, which llama.cpp needs and irkit does not read)."""
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
    h, f, n, vocab = TINY["hidden"], TINY["ff"], TINY["layers"], TINY["vocab"]

    def weight(*shape: int, scale: float = 0.1, offset: float = 0.0) -> np.ndarray:
        return (offset + scale * rng.standard_normal(shape)).astype(np.float16)

    tensors = {
        "token_embd_norm.bias": weight(h),
        "token_embd_norm.weight": weight(h, offset=1.0),
        "token_types.weight": weight(2, h),
        "token_embd.weight": weight(vocab, h, scale=0.5),
    }
    for i in range(n):
        tensors |= {
            f"blk.{i}.attn_qkv.weight": weight(3 * h, h, scale=0.3),
            f"blk.{i}.attn_output.weight": weight(h, h, scale=0.2),
            f"blk.{i}.ffn_up.weight": weight(f, h, scale=0.2),
            f"blk.{i}.ffn_gate.weight": weight(f, h, scale=0.2),
            f"blk.{i}.ffn_down.weight": weight(h, f, scale=0.2),
            f"blk.{i}.attn_output_norm.bias": weight(h),
            f"blk.{i}.attn_output_norm.weight": weight(h, offset=1.0),
            f"blk.{i}.layer_output_norm.bias": weight(h),
            f"blk.{i}.layer_output_norm.weight": weight(h, offset=1.0),
        }
    writer = GGUFWriter(str(path), "nomic-bert")
    writer.add_name("irkit-tiny-nomic")
    writer.add_uint32("nomic-bert.block_count", n)
    writer.add_uint32("nomic-bert.context_length", TINY["context"])
    writer.add_uint32("nomic-bert.embedding_length", h)
    writer.add_uint32("nomic-bert.feed_forward_length", f)
    writer.add_uint32("nomic-bert.attention.head_count", TINY["heads"])
    writer.add_float32("nomic-bert.attention.layer_norm_epsilon", 1e-12)
    writer.add_bool("nomic-bert.attention.causal", False)
    writer.add_uint32("nomic-bert.pooling_type", 1)  # mean
    writer.add_float32("nomic-bert.rope.freq_base", TINY["rope_base"])
    for key, (value, kind) in (extra or {}).items():
        _add_field(writer, key, value, kind)
    for name, data in tensors.items():
        # norms, biases and token types stay f32 as in the real file
        writer.add_tensor(
            name, data if f16 and data.ndim == 2 and "token_types" not in name else data.astype(np.float32)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_field(writer: Any, key: str, value: Any, kind: Any) -> None:
    from gguf import GGUFValueType

    if kind == GGUFValueType.ARRAY:
        writer.add_array(key, value)
    else:
        writer.add_key_value(key, value, kind)


def _gguf_step(out: Path) -> None:
    """f32 copies (renamed) of the cached real model, and the tiny model with the real tokenizer."""
    from gguf import GGUFReader, GGUFWriter

    out.mkdir(parents=True, exist_ok=True)
    real = Path.home() / ".cache" / "irkit" / "models" / "nomic-embed-text-v1.5" / "nomic-embed-text-v1.5.f16.gguf"
    reader = GGUFReader(real)
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.name", "general.file_type"):
            continue
        kind = field.types[0]
        fields[key] = (field.contents(), kind)
    writer = GGUFWriter(str(out / "real.gguf"), "nomic-bert")
    writer.add_name("irkit-reference-nomic")
    for key, (value, kind) in fields.items():
        _add_field(writer, key, value, kind)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tokenizer = {k: v for k, v in fields.items() if k.startswith("tokenizer.")}
    write_tiny_nomic(out / "tiny.gguf", extra=tokenizer)


def _embed_step(folder: Path, out: Path) -> None:
    from gpt4all import Embed4All

    texts = prefixed()
    result = {
        "about": __doc__.split("\n\n")[1].replace("\n", " "),
        "commands": [
            "python tests/nomic_reference.py gguf /tmp/nomic-ref",
            "/tmp/g4a-venv/bin/python tests/nomic_reference.py embed /tmp/nomic-ref tests/data/nomic_reference.json",
        ],
        "texts": texts,
    }
    for model in ("real", "tiny"):
        embedder = Embed4All(f"{model}.gguf", model_path=str(folder), allow_download=False, device="cpu", n_threads=1)
        vectors = embedder.embed(texts, prefix="", long_text_mode="truncate")
        result[model] = [[float(f"{x:.8g}") for x in v] for v in vectors]
    out.write_text(json.dumps(result) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:2] == ["gguf"]:
        _gguf_step(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["embed"]:
        _embed_step(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
