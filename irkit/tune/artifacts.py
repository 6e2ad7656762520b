"""Tuned models for training: build a backbone with a tuning method applied, save what training changed.

The artifact format (``irkit_adapter.json`` + ``adapter.safetensors``) and loading for
inference live in :mod:`irkit.models.tuned`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from irkit.errors import IrkitError
from irkit.models.tuned import CONFIG_NAME, FORMAT, KINDS, WEIGHTS_NAME


def build(kind: str, backbone: str, tune: dict[str, Any], pooling: str = "mean"):
    """A fresh (untrained) tuned model and its tokenizer: the backbone with the method applied."""
    from transformers import AutoModel, AutoTokenizer

    from irkit.models import nomic
    from irkit.models.registry import resolve
    from irkit.tune.adapters import TuneConfig, TunedCrossEncoder, TunedEncoder

    if kind not in KINDS:
        raise IrkitError(f"unknown model kind {kind!r} (choose from {', '.join(KINDS)})")
    path = resolve(backbone)
    if (gguf := nomic.find_gguf(path)) is not None:  # nomic-embed: our own module, with its task prefixes
        net, tokenizer = nomic.load_nomic(gguf)
        encoder = TunedEncoder(net.train(), TuneConfig(**tune), prompts=nomic.PROMPTS)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = TunedEncoder(AutoModel.from_pretrained(path, add_pooling_layer=False), TuneConfig(**tune))
    model = TunedCrossEncoder(encoder, pooling=pooling) if kind == "cross-encoder" else encoder
    return model, tokenizer


def save(model, out_dir: str | Path, *, kind: str, backbone: str, pooling: str = "mean", **extra: Any) -> Path:
    """Write the trainable parameters and the config into ``out_dir``, atomically (temp dir + rename)."""
    from safetensors.torch import save_file

    from irkit.tune.adapters import count_params, trainable_state

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder if kind == "cross-encoder" else model
    trainable, total = count_params(model)
    config = {
        "format": FORMAT,
        "kind": kind,
        "backbone": str(backbone),
        "pooling": pooling,
        "tune": encoder.tune_config.to_dict(),
        "trainable_params": trainable,
        "total_params": total,
        **extra,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {k: v.contiguous() for k, v in trainable_state(model).items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": str(FORMAT)})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():  # mkdtemp makes the directory private; an artifact is meant to be shared
            f.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
