"""Index kinds: each index is a directory whose manifest ``type`` names its kind.

A kind is one module (a build function, an index class with ``load(path)``) plus one line
in :data:`KINDS`, which also names the retriever stage that searches it. ``irkit index
build --type KIND``, ``irkit search`` and :func:`open` are driven by this table, so a new
kind needs no change anywhere else. Submodules import their heavy libraries (faiss, the
JVM) only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irkit.errors import IrkitError
from irkit.index.manifest import read_manifest


@dataclass(frozen=True)
class IndexKind:
    """Where a kind's parts live: ``"module:attr"`` strings (imported on first use) or the objects."""

    index: str | type  # class with ``load(path)``
    build: str | Callable[..., Any]  # ``build(corpus, out_dir, *, overwrite, show_progress, **options)``
    retriever: str | type  # Retriever stage class taking ``index=path`` as its first parameter

    def get(self, part: str) -> Any:
        target = getattr(self, part)
        if not isinstance(target, str):
            return target
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


KINDS: dict[str, IndexKind] = {
    "bm25": IndexKind("irkit.index.bm25:BM25Index", "irkit.index.bm25:build_bm25_index", "irkit.retrieve.bm25:BM25"),
    "cur": IndexKind("irkit.index.cur:CURIndex", "irkit.index.cur:build_cur_index", "irkit.retrieve.cur:CURRetriever"),
    "dense": IndexKind(
        "irkit.index.dense:DenseIndex", "irkit.index.dense:build_dense_index", "irkit.retrieve.dense:Dense"
    ),
    "splade": IndexKind(
        "irkit.index.splade:SpladeIndex",
        "irkit.index.splade:build_splade_index",
        "irkit.retrieve.splade:SpladeRetriever",
    ),
}


def register(name: str, kind: IndexKind) -> None:
    """Add an index kind (its manifest ``type`` and ``--type`` value is ``name``)."""
    KINDS[name] = kind


def kind(name: str) -> IndexKind:
    """The registered kind ``name``; an unknown one is an IrkitError listing the known kinds."""
    if name not in KINDS:
        raise IrkitError(f"unknown index type {name!r}; known types: {', '.join(sorted(KINDS))}")
    return KINDS[name]


def type_of(path: str | Path) -> str:
    """The kind of the index at ``path``, read from its manifest."""
    return str(read_manifest(path)["type"])


def open(path: str | Path) -> Any:
    """Load the index at ``path`` with the class its manifest's type names."""
    return kind(type_of(path)).get("index").load(path)


def build(kind_name: str, corpus: object, out_dir: str | Path, **options: Any) -> Any:
    """Build an index of kind ``kind_name`` from ``corpus`` into ``out_dir`` (see each kind's build function)."""
    return kind(kind_name).get("build")(corpus, out_dir, **options)


def retriever(path: str | Path, **params: Any) -> Any:
    """The retriever stage that searches the index at ``path`` (``params`` go to its constructor)."""
    return kind(type_of(path)).get("retriever")(path, **params)


__all__ = ["KINDS", "IndexKind", "build", "kind", "open", "read_manifest", "register", "retriever", "type_of"]
