"""Where irkit keeps things: the cache (``$IRKIT_CACHE``) and the evaluation data root (``$IRKIT_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str) -> Path:
    """``$IRKIT_CACHE/<sub>`` (default ``~/.cache/irkit/<sub>``): converted models, built docstores."""
    root = os.environ.get("IRKIT_CACHE") or Path.home() / ".cache" / "irkit"
    return Path(root) / sub


def data_root() -> Path | None:
    """``$IRKIT_DATA``: the directory datasets are named under, if set."""
    root = os.environ.get("IRKIT_DATA")
    return Path(root) if root else None


def eval_data_root() -> Path:
    """``$IRKIT_DATA``, else ``shared/data`` beside the source checkout: what eval scripts and tests read."""
    return data_root() or Path(__file__).resolve().parents[2] / "shared" / "data"
