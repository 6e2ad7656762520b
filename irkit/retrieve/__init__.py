"""Retrievers (Queries → Ranking): BM25, dense, learned sparse (SPLADE), and stored runs."""

from __future__ import annotations

from irkit._lazy import lazy_exports

_LAZY = {
    "BM25": "irkit.retrieve.bm25",
    "Dense": "irkit.retrieve.dense",
    "RunFile": "irkit.retrieve.run_file",
    "SpladeRetriever": "irkit.retrieve.splade",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
