"""Shared fixtures: paths to the read-only evaluation data and small real slices of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from irkit.paths import eval_data_root

DATA = eval_data_root()
SCIFACT = DATA / "beir" / "scifact"
DL19 = DATA / "trec-dl-2019"

os.environ.setdefault("IRKIT_DATA", str(DATA))  # dataset names (beir/scifact) resolve under it, as in CI
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    assert (SCIFACT / "corpus.jsonl").is_file(), f"SciFact not found under {DATA}"
    return SCIFACT


@pytest.fixture(scope="session")
def dl19_dir() -> Path:
    assert (DL19 / "bm25-top100.run").is_file(), f"TREC DL 2019 not found under {DATA}"
    return DL19


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory: pytest.TempPathFactory, scifact_dir: Path) -> Path:
    """A small real BEIR directory: the first 300 SciFact docs plus the test queries judged on them."""
    out = tmp_path_factory.mktemp("scifact-slice")
    lines = (scifact_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    (out / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import json

    ids = {json.loads(x)["_id"] for x in lines}
    qrels = (scifact_dir / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    kept = [qrels[0]] + [r for r in qrels[1:] if r.split("\t")[1] in ids]
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    (out / "queries.jsonl").write_text((scifact_dir / "queries.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def slice_indexes(tmp_path_factory: pytest.TempPathFactory, scifact_slice: Path) -> Path:
    """A directory laid out like the repository, ``indexes/scifact-bm25`` and ``indexes/scifact-minilm``
    over the slice: built once per session and only read by the tests that share it."""
    from irkit.index.bm25 import build_bm25_index
    from irkit.index.dense import build_dense_index

    root = tmp_path_factory.mktemp("work")
    build_bm25_index(scifact_slice, root / "indexes" / "scifact-bm25", show_progress=False)
    build_dense_index(scifact_slice, root / "indexes" / "scifact-minilm", chunk_size=100, show_progress=False)
    return root
