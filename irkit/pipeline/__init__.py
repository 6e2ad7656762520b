"""Stages, their roles, the operators that compose them, the YAML form and the runner."""

from __future__ import annotations

from irkit._lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(["Stage", "Retriever", "Reranker", "QueryRewriter", "Filter"], "irkit.pipeline.stage"),
    **dict.fromkeys(["Then", "TopK", "Fuse", "Interpolate"], "irkit.pipeline.operators"),
    **dict.fromkeys(["load_pipeline", "to_yaml", "register"], "irkit.pipeline.config"),
    "Runner": "irkit.pipeline.runner",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
