"""irkit.filter: Filter-role stages that shorten candidate lists (the Cosine Adapter) and their training.

Imports torch on first use of a name, not on ``import irkit.filter``.
"""

from __future__ import annotations

from irkit._lazy import lazy_exports

_LAZY = {
    "CosineFilter": "irkit.filter.cosine_adapter",
    "FitConfig": "irkit.filter.cosine_adapter",
    "FAMILIES": "irkit.filter.cosine_adapter",
    "fit": "irkit.filter.cosine_adapter",
    "train": "irkit.filter.cosine_adapter",
    "training_set": "irkit.filter.cosine_adapter",
    "TrainingSet": "irkit.filter.cosine_adapter",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
