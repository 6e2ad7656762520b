"""Dense index building on real SciFact documents with the real bundled MiniLM encoder and FAISS."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from irkit.data.io import read_corpus
from irkit.errors import IrkitError
from irkit.index.dense import DenseIndex, build_dense_index
from irkit.index.manifest import sha256_file


@pytest.fixture(scope="module")
def few_docs(scifact_dir: Path) -> list:
    """The first 40 SciFact documents: enough to train small IVF/PQ quantisers."""
    docs = []
    for d in read_corpus(scifact_dir / "corpus.jsonl"):
        docs.append(d)
        if len(docs) == 40:
            return docs
    raise AssertionError("SciFact has fewer than 40 documents")


@pytest.fixture(scope="module")
def flat_index(tmp_path_factory: pytest.TempPathFactory, few_docs: list) -> DenseIndex:
    return build_dense_index(few_docs, tmp_path_factory.mktemp("dense") / "idx", chunk_size=16, show_progress=False)


def test_manifest_describes_and_checksums_the_index(flat_index: DenseIndex) -> None:
    m = json.loads((flat_index.path / "manifest.json").read_text())
    assert m["type"] == "dense"
    assert (m["model"], m["dimension"], m["metric"], m["factory"]) == ("minilm", 384, "inner_product", "Flat")
    assert m["doc_count"] == 40 == len(flat_index)
    assert m["build"] == {"batch_size": 32, "max_length": 256, "chunk_size": 16}
    assert set(m["files"]) == {"index.faiss", "docstore.sqlite"}
    for rel, meta in m["files"].items():
        assert meta["sha256"] == sha256_file(flat_index.path / rel)
    # nothing but the index itself is left beside it (no partial or work directories)
    assert [p.name for p in flat_index.path.parent.iterdir()] == ["idx"]


def test_build_progress_moves_within_a_checkpoint_chunk(
    few_docs: list, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """One chunk of a large model takes many minutes: the build shows its batches, not just its chunks."""
    build_dense_index(few_docs, tmp_path / "idx", chunk_size=len(few_docs))
    err = capfd.readouterr().err
    batches = re.findall(r"encode: +100%\|[^|]*\| (\d+)/(\d+) \[[^]]*batch/s", err)
    assert batches and batches[-1][0] == batches[-1][1] and int(batches[-1][0]) > 1, err
    assert re.search(rf"encode idx: +100%\|[^|]*\| {len(few_docs)}/{len(few_docs)} ", err), err


def test_rows_follow_the_corpus_and_hold_its_encodings(flat_index: DenseIndex, few_docs: list) -> None:
    from irkit.models.encoder import BiEncoder

    docs = few_docs
    assert flat_index.docids == [d.docid for d in docs]
    assert flat_index.docstore.get(docs[7].docid) == docs[7]
    vectors = flat_index.vectors()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the same documents encoded in one call (other batch composition) give the same vectors
    again = BiEncoder("minilm").encode([d.contents for d in docs[:20]])
    assert np.min(np.sum(again * vectors[:20], axis=1)) > 0.9999


@pytest.mark.parametrize("factory", ["HNSW8", "IVF2,Flat", "PQ8x4"])
def test_factory_strings_build_searchable_indexes(tmp_path: Path, few_docs: list, factory: str) -> None:
    index = build_dense_index(few_docs, tmp_path / "idx", factory=factory, show_progress=False)
    assert index.manifest["factory"] == factory and len(index) == 40
    if factory.startswith("IVF"):
        index.set_search_params("nprobe=2")
    # every document's own vector finds that document first
    exact = index.vectors() if factory != "PQ8x4" else None
    if exact is not None:
        _, rows = index.search(exact, 1)
        assert rows[:, 0].tolist() == list(range(40))
    else:  # PQ stores codes: its reconstruction must still rank the document near the top
        _, rows = index.search(index.vectors(), 3)
        assert np.mean([i in rows[i] for i in range(40)]) >= 0.9
    reloaded = DenseIndex.load(tmp_path / "idx")
    assert reloaded.index.ntotal == 40 and reloaded.docids == index.docids


def test_bad_factory_string_fails_before_encoding(tmp_path: Path, few_docs: list) -> None:
    with pytest.raises(IrkitError, match="cannot build 'NoSuchIndex'"):
        build_dense_index(few_docs, tmp_path / "idx", factory="NoSuchIndex", show_progress=False)
    with pytest.raises(IrkitError, match="cannot train 'IVF64,Flat' on 40 vectors"):
        build_dense_index(few_docs, tmp_path / "idx", factory="IVF64,Flat", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, few_docs: list) -> None:
    first = build_dense_index(few_docs[:5], tmp_path / "idx", show_progress=False)
    with pytest.raises(IrkitError, match="output exists"):
        build_dense_index(few_docs[:6], tmp_path / "idx", show_progress=False)
    assert len(DenseIndex.load(first.path)) == 5
    assert len(build_dense_index(few_docs[:6], tmp_path / "idx", overwrite=True, show_progress=False)) == 6
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
