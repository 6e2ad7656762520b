"""Rerankers (Ranking → Ranking): cross-encoder, bi-encoder cosine, SPLADE, in-context reranking (ICR),
pairwise ranking prompts (PRP)."""

from __future__ import annotations

from irkit._lazy import lazy_exports

_LAZY = {
    "BiEncoderReranker": "irkit.rerank.bi_encoder",
    "CrossEncoder": "irkit.rerank.cross_encoder",
    "ICR": "irkit.rerank.icr",
    "PRP": "irkit.rerank.prp",
    "SpladeReranker": "irkit.rerank.splade",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
