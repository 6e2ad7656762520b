"""BM25 index building with the real Anserini indexer (through the JVM irkit starts) on real SciFact docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irkit.data.io import read_corpus
from irkit.errors import IrkitError
from irkit.index.bm25 import BM25Index, build_bm25_index
from irkit.index.manifest import sha256_file


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory: pytest.TempPathFactory, scifact_slice: Path) -> BM25Index:
    return build_bm25_index(scifact_slice, tmp_path_factory.mktemp("bm25") / "idx", show_progress=False)


def test_manifest_and_lucene_contents(bm25_index: BM25Index, scifact_slice: Path) -> None:
    from irkit._java import autoclass

    m = json.loads((bm25_index.path / "manifest.json").read_text())
    assert (m["type"], m["doc_count"]) == ("bm25", 300)
    assert "docstore.sqlite" in m["files"] and any(f.startswith("lucene/segments_") for f in m["files"])
    assert all(meta["sha256"] == sha256_file(bm25_index.path / rel) for rel, meta in m["files"].items())
    assert [p.name for p in bm25_index.path.parent.iterdir()] == ["idx"]

    # Lucene holds every document, with raw contents = title + " " + text (the BEIR "flat" setting)
    docs = list(read_corpus(scifact_slice / "corpus.jsonl"))
    utils = autoclass("io.anserini.index.IndexReaderUtils")
    reader = utils.getReader(str(bm25_index.lucene_dir))
    try:
        assert reader.numDocs() == 300
        raw = json.loads(utils.documentRaw(reader, docs[3].docid))
        assert raw == {"id": docs[3].docid, "contents": docs[3].title + " " + docs[3].text}
    finally:
        reader.close()
    assert bm25_index.docstore.docids() == [d.docid for d in docs]


def test_existing_output_is_refused(bm25_index: BM25Index, scifact_slice: Path) -> None:
    with pytest.raises(IrkitError, match="output exists"):
        build_bm25_index(scifact_slice, bm25_index.path, show_progress=False)
    assert BM25Index.load(bm25_index.path).manifest["doc_count"] == 300
