"""eval/regress.py, the regression-table driver, imported as a module (eval/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load() -> ModuleType:
    if "regress" not in sys.modules:
        spec = importlib.util.spec_from_file_location("regress", Path(__file__).parents[1] / "eval" / "regress.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["regress"] = module  # dataclasses resolve their annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules["regress"]


regress = _load()
