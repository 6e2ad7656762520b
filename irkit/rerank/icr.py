"""ICR: in-context reranking from the attention an LLM pays to each document (Chen et al., 2024).

All N candidates go into one prompt, followed by a retrieval instruction and the query.
A document token's score is the attention it receives from the query span (averaged over
the span's tokens, summed over layers and heads), minus the same quantity for the
content-free query "N/A" (calibration against the model's positional bias). Per document,
tokens whose calibrated score falls below mean - 2·std are dropped and the rest summed.

Cost: exactly two forward passes per ranking. The calibration pass runs the whole prompt;
the query pass reuses its KV cache for the shared prefix (instruction + documents) and runs
only the query suffix. Memory stays O(layers × |query span| × T): a custom attention
function sees each layer's post-RoPE queries and keys and computes softmax rows for the
query span only; no T×T attention map is ever materialised.

Documents are listed in reverse first-stage order, so the first-stage top document sits
nearest the query. Each is cut to ``max_doc_tokens``; a prompt longer than the model's
context raises IrkitError (rerank fewer candidates, or lower the budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from irkit.data.docstore import Doc
from irkit.errors import IrkitError
from irkit.models.llm import CausalLM, load_llm
from irkit.pipeline.stage import Reranker, doc_text

ATTN_NAME = "irkit_query_rows"
INSTRUCTION = "Here are some passages:"
RETRIEVAL_INSTRUCTION = "Please find information that is relevant to the following query in the passages above."
_SENTINEL = "\u2063IRKIT\u2063"


@dataclass
class Prompt:
    """Token ids split at the query: ``prefix`` (instruction + documents) is shared by both passes."""

    prefix: list[int]
    suffix: list[int]
    spans: list[tuple[int, int]]  # token [start, end) of each document, in input (first-stage) order
    prefix_text: str
    suffix_text: str


class _QueryRows:
    """Collects, per layer, the attention rows of the query span (positions >= ``start``)."""

    def __init__(self, start: int, keep_layers: bool = False) -> None:
        self.start = start
        self.keep_layers = keep_layers
        self.layers: dict[int, Any] = {}  # layer -> (heads, span, keys) probabilities, only if keep_layers
        self.total: Any = None  # (keys,) sum over layers and heads of the span-mean attention

    def add(self, layer: int, query: Any, key: Any, scaling: float) -> None:
        import torch

        q_len, k_len = query.shape[2], key.shape[2]
        past = k_len - q_len
        first = max(self.start - past, 0)
        q = query[0, :, first:].float()
        k = key[0].float().repeat_interleave(q.shape[0] // key.shape[1], dim=0)  # GQA: head h uses kv h // groups
        logits = q @ k.transpose(-1, -2) * scaling
        rows = past + first + torch.arange(q.shape[1])
        logits.masked_fill_(torch.arange(k_len)[None, None, :] > rows[None, :, None], float("-inf"))
        probs = logits.softmax(-1)
        if self.keep_layers:
            self.layers[layer] = probs
        per_key = probs.mean(1).sum(0)
        self.total = per_key if self.total is None else self.total + per_key


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """SDPA attention that also hands post-RoPE q/k to an active ``_QueryRows`` capture."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    capture = getattr(module, "_irkit_capture", None)
    if capture is not None:
        capture.add(module.layer_idx, query, key, kwargs.get("scaling") or module.scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _install(model: Any) -> None:
    """Switch ``model`` to the capturing attention (identical outputs to SDPA)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, _attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    if model.config._attn_implementation != ATTN_NAME:
        model.set_attn_implementation(ATTN_NAME)


class ICR(Reranker):
    """Rerank candidates by calibrated query-to-document attention in one long prompt."""

    name: ClassVar[str | None] = "icr"

    def __init__(
        self, model: str | CausalLM = "smollm2", max_doc_tokens: int = 256, calibration_query: str = "N/A"
    ) -> None:
        if max_doc_tokens < 1:
            raise IrkitError(f"max_doc_tokens must be >= 1, got {max_doc_tokens}")
        self.llm = load_llm(model)
        self.max_doc_tokens = max_doc_tokens
        self.calibration_query = calibration_query
        self.attention_modules = [
            m for m in self.llm.model.modules() if hasattr(m, "layer_idx") and hasattr(m, "q_proj")
        ]
        if not self.attention_modules:
            raise IrkitError(f"ICR needs a decoder with q_proj/k_proj attention layers; {self.llm.name!r} has none")
        _install(self.llm.model)
        #: model forward passes run so far (two per ranked query)
        self.forward_passes = self._passes = 0

    def params(self) -> dict[str, Any]:
        return {
            "model": self.llm.name,
            "max_doc_tokens": self.max_doc_tokens,
            "calibration_query": self.calibration_query,
        }

    # -- prompt -----------------------------------------------------------------------------

    def _template(self) -> tuple[str, str]:
        head, _, tail = self.llm.chat(_SENTINEL).partition(_SENTINEL)
        return head, tail

    def prompt(self, query: str, passages: Sequence[str]) -> Prompt:
        """The ICR prompt for ``passages`` (first-stage order), with each document's token span."""
        head, tail = self._template()
        order = list(range(len(passages)))[::-1]  # first-stage top document last, next to the query
        parts = [head + INSTRUCTION]
        char_spans: dict[int, tuple[int, int]] = {}
        pos = len(parts[0])
        for label, i in enumerate(order, start=1):
            body = f"[{label}] {self.llm.truncate(passages[i].strip(), self.max_doc_tokens).strip()}"
            parts.append("\n\n" + body)
            char_spans[i] = (pos + 2, pos + 2 + len(body))
            pos += 2 + len(body)
        prefix_text = "".join(parts)
        suffix_text = f"\n\n{RETRIEVAL_INSTRUCTION}\nQuery: {query.strip()}{tail}"
        special = not getattr(self.llm.tokenizer, "chat_template", None)  # no template: let the tokenizer add BOS
        enc = self.llm.tokenizer(prefix_text, add_special_tokens=special, return_offsets_mapping=True)
        starts = np.array([s for s, _ in enc["offset_mapping"]])
        spans = []
        for i in range(len(passages)):
            cs, ce = char_spans[i]
            idx = np.flatnonzero((starts >= cs) & (starts < ce))
            spans.append((int(idx[0]), int(idx[-1]) + 1))
        suffix = self.llm.encode(suffix_text)
        return Prompt(list(enc["input_ids"]), suffix, spans, prefix_text, suffix_text)

    # -- attention ----------------------------------------------------------------------------

    def query_rows(self, ids: Sequence[int], start: int, cache: Any = None, keep_layers: bool = False) -> _QueryRows:
        """Run ``ids`` (continuing ``cache`` if given) and collect attention rows of positions >= ``start``."""
        import torch

        capture = _QueryRows(start, keep_layers)
        for m in self.attention_modules:
            m._irkit_capture = capture
        try:
            with torch.inference_mode():
                self.llm.model(input_ids=torch.tensor([list(ids)]), cache=cache, use_cache=True, logits_to_keep=1)
        finally:
            for m in self.attention_modules:
                del m._irkit_capture
        self.forward_passes += 1
        return capture

    def query_meta(self) -> dict[str, Any]:
        return {"forward_passes": self._passes}

    def score(self, query: str, passages: Sequence[Doc | str]) -> np.ndarray:
        """ICR scores of ``passages`` (in input order) for ``query``: two forward passes."""
        import torch
        from transformers import DynamicCache

        self._passes = 0
        if not passages:
            return np.zeros(0)
        start = self.forward_passes
        texts = [doc_text(p) for p in passages]
        real = self.prompt(query, texts)
        calib = self.prompt(self.calibration_query, texts)
        n = len(real.prefix)
        self.llm.check_length(n + max(len(real.suffix), len(calib.suffix)), "ICR prompt")
        cache = DynamicCache(config=self.llm.model.config)
        base = self.query_rows(calib.prefix + calib.suffix, n, cache).total
        cache.crop(-len(calib.suffix))
        attn = self.query_rows(real.suffix, n, cache).total
        scores = np.zeros(len(texts))
        for i, (s, e) in enumerate(real.spans):
            calibrated = attn[s:e] - base[s:e]
            keep = calibrated > calibrated.mean() - 2 * calibrated.std() if e - s > 1 else torch.ones(1, dtype=bool)
            scores[i] = float(calibrated[keep].sum())
        self._passes = self.forward_passes - start
        return scores
