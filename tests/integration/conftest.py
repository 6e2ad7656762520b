"""Full-size SciFact indexes for integration tests, built once into the git-ignored ``indexes/``.

An index already there is reused while its manifest verifies and it was built with the
settings the recorded scores assume; otherwise it is rebuilt.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from irkit.errors import IrkitError
from irkit.index.bm25 import BM25Index, build_bm25_index
from irkit.index.dense import DenseIndex, build_dense_index

INDEXES = Path(__file__).resolve().parents[2] / "indexes"
SCIFACT_DOCS = 5183
DENSE_SETTINGS = {"doc_count": SCIFACT_DOCS, "model": "minilm", "factory": "Flat", "max_length": 256}


def _matches(load, path: Path, **expected: object) -> bool:
    try:
        m = load(path).manifest
    except IrkitError:
        return False
    return {k: m.get(k, m.get("build", {}).get(k)) for k in expected} == expected


@pytest.fixture(scope="session")
def scifact_bm25(scifact_dir: Path) -> Path:
    path = INDEXES / "scifact-bm25"
    if not _matches(BM25Index.load, path, doc_count=SCIFACT_DOCS):
        build_bm25_index(scifact_dir, path, overwrite=True, show_progress=False)
    return path


@pytest.fixture(scope="session")
def scifact_minilm(scifact_dir: Path) -> Path:
    path = INDEXES / "scifact-minilm"
    if not _matches(DenseIndex.load, path, **DENSE_SETTINGS):
        build_dense_index(scifact_dir, path, model="minilm", factory="Flat", max_length=256, overwrite=True)
    return path
