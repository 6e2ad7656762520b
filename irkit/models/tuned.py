"""Tuned-model artifacts for inference: recognise and load what ``irkit tune`` saved.

An artifact directory holds only what training changed (adapter weights, score head) in
safetensors plus ``irkit_adapter.json``; the backbone is named (a registry name such as
``minilm``, or a path) and loaded from its own files. Nothing is pickled, and the config is
plain JSON that is validated, never executed. ``CrossEncoder``, ``BiEncoder`` (and so
``Dense``) load an artifact by its directory through this module; building and saving for
training live in :mod:`irkit.tune.artifacts`.

Format 2 (issue #16): ``"connected"`` means the paper's in-block adapters joined by the aside
pathway. Format 1 artifacts still load: their ``"connected"`` was the side network, now method
``"side"``, and their parameter names are mapped to today's (``aside`` -> ``side``,
``houlsby`` -> ``adapters``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irkit.data.io import read_json_object
from irkit.errors import IrkitError

CONFIG_NAME = "irkit_adapter.json"
WEIGHTS_NAME = "adapter.safetensors"
FORMAT = 2
READS = (1, 2)
# format 1 -> 2: (method as stored, method now, parameter-name part then, part now)
_V1 = {"connected": ("side", ".aside.", ".side."), "houlsby": ("houlsby", ".houlsby.", ".adapters.")}
KINDS = ("cross-encoder", "bi-encoder")


def is_artifact(path: str | Path) -> bool:
    """Whether ``path`` is an artifact directory (written by :func:`irkit.tune.artifacts.save`)."""
    return (Path(path) / CONFIG_NAME).is_file()


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated ``irkit_adapter.json`` of an artifact directory (a format-1 one says its method of today)."""
    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file():
        raise IrkitError(f"not an irkit adapter directory (no {CONFIG_NAME})", path=path)
    cfg = read_json_object(cfg_path, "adapter config")
    for key, typ in (("format", int), ("kind", str), ("backbone", str), ("tune", dict), ("pooling", str)):
        if not isinstance(cfg.get(key), typ):
            raise IrkitError(f"field {key!r} missing or not a {typ.__name__}", path=cfg_path)
    if cfg["format"] not in READS:
        raise IrkitError(f"unsupported adapter format {cfg['format']} (this irkit reads {READS})", path=cfg_path)
    if cfg["kind"] not in KINDS:
        raise IrkitError(f"unknown kind {cfg['kind']!r}", path=cfg_path)
    if cfg["format"] == 1 and cfg["tune"].get("method") in _V1:
        cfg["tune"] = {**cfg["tune"], "method": _V1[cfg["tune"]["method"]][0]}
    return cfg


def _v1_names(state: dict, method: str) -> dict:
    """Format-1 parameter names of ``method`` (as it is called now) mapped to today's."""
    then, now = next(((a, b) for m, a, b in _V1.values() if m == method), ("", ""))
    return {k.replace(then, now) if then else k: v for k, v in state.items()}


def load(path: str | Path):
    """``(model, tokenizer, config)`` from an artifact directory, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_config(path)
    from irkit.tune.artifacts import build

    try:
        model, tokenizer = build(cfg["kind"], cfg["backbone"], cfg["tune"], cfg["pooling"])
    except TypeError as e:  # unknown keys in "tune"
        raise IrkitError(f"bad 'tune' section ({e})", path=path / CONFIG_NAME) from None
    try:
        state = load_file(str(path / WEIGHTS_NAME))
    except (SafetensorError, FileNotFoundError, OSError) as e:
        raise IrkitError(f"cannot read adapter weights ({e})", path=path / WEIGHTS_NAME) from None
    if cfg["format"] == 1:
        state = _v1_names(state, cfg["tune"].get("method", ""))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise IrkitError(
            f"weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})",
            path=path / WEIGHTS_NAME,
        )
    params = dict(model.named_parameters())
    for name, tensor in state.items():
        if params[name].shape != tensor.shape:
            raise IrkitError(
                f"{name}: shape {tuple(tensor.shape)} != {tuple(params[name].shape)}", path=path / WEIGHTS_NAME
            )
    model.load_state_dict(state, strict=False)
    return model.eval(), tokenizer, cfg


def load_cross_encoder(path: str | Path):
    """``(model, tokenizer)``: ``model(input_ids=, attention_mask=, token_type_ids=).logits`` is ``(B, 1)``."""
    model, tokenizer, cfg = load(path)
    if cfg["kind"] != "cross-encoder":
        raise IrkitError(f"{path} holds a {cfg['kind']}, not a cross-encoder")
    return model, tokenizer


def load_bi_encoder(path: str | Path):
    """``(encoder, tokenizer)``: ``encoder(input_ids, attention_mask).last_hidden_state``, to mean-pool."""
    model, tokenizer, cfg = load(path)
    if cfg["kind"] != "bi-encoder":
        raise IrkitError(f"{path} holds a {cfg['kind']}, not a bi-encoder")
    return model, tokenizer
