"""Bad input gives one IrkitError naming the file and line (or id), and leaves nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from irkit.cli import main
from irkit.data.docstore import Doc
from irkit.data.io import read_qrels, read_queries, read_run
from irkit.errors import IrkitError
from irkit.index.bm25 import BM25Index, build_bm25_index
from irkit.index.dense import DenseIndex, build_dense_index
from irkit.retrieve.bm25 import BM25
from irkit.retrieve.dense import Dense

GOOD = '{"_id": "a", "title": "Insulin", "text": "Insulin lowers blood glucose."}\n'
CORPORA = {
    "malformed JSON": (GOOD + '{"_id": "b", "text": \n', 2, "malformed JSON"),
    "missing _id": (GOOD + '{"title": "t", "text": "no id here"}\n', 2, "missing '_id'"),
    "duplicate _id": (GOOD + '{"_id": "b", "text": "x"}\n' + '{"_id": "a", "text": "again"}\n', 3, "duplicate _id 'a'"),
    "empty text": (GOOD + '{"_id": "b", "title": "", "text": "   "}\n', 2, "'b' has empty text"),
    "non-UTF-8": (GOOD.encode() + b'{"_id": "b", "text": "caf\xe9"}\n', 2, "not valid UTF-8"),
}
BUILDERS = {"dense": build_dense_index, "bm25": build_bm25_index}


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("case", CORPORA)
def test_bad_corpus_line_names_file_and_line(tmp_path: Path, case: str, kind: str) -> None:
    content, line, message = CORPORA[case]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(IrkitError, match=message) as err:
        BUILDERS[kind](corpus, tmp_path / "indexes" / "idx", show_progress=False)
    assert (err.value.path, err.value.line) == (str(corpus), line)
    assert str(err.value).startswith(f"{corpus}:{line}: ")
    assert list((tmp_path / "indexes").iterdir()) == []  # no index, no partial or work directory


@pytest.mark.parametrize("kind", BUILDERS)
def test_bad_in_memory_documents_name_the_id(tmp_path: Path, kind: str) -> None:
    docs = [Doc("d1", "", "first"), Doc("d2", "", "second"), Doc("d1", "", "first again")]
    with pytest.raises(IrkitError, match="duplicate docid 'd1'"):
        BUILDERS[kind](docs, tmp_path / "idx", show_progress=False)
    with pytest.raises(IrkitError, match=r"'d2' \(corpus item 1\) has empty text"):
        BUILDERS[kind]([Doc("d1", "", "x"), Doc("d2", "", "")], tmp_path / "idx", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_qrels_naming_unknown_queries(tmp_path: Path) -> None:
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "insulin"}\n')
    (tmp_path / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\nq9\ta\t1\n")
    with pytest.raises(IrkitError, match="qrels name query 'q9'") as err:
        read_qrels(tmp_path / "test.tsv", queries=read_queries(tmp_path / "queries.jsonl"))
    assert (err.value.path, err.value.line) == (str(tmp_path / "test.tsv"), 3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A five-document dense and BM25 index, copied by tests that damage them."""
    root = tmp_path_factory.mktemp("tiny")
    docs = [Doc(f"d{i}", f"Title {i}", f"Insulin study number {i} on blood glucose.") for i in range(5)]
    build_dense_index(docs, root / "dense", show_progress=False)
    build_bm25_index(docs, root / "bm25", show_progress=False)
    return {"dense": root / "dense", "bm25": root / "bm25"}


def test_run_naming_docids_absent_from_the_store(tiny: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 ghost 2 1.0 x\n")
    run = read_run(tmp_path / "run.trec")
    store = BM25Index.load(tiny["bm25"]).docstore
    with pytest.raises(IrkitError, match="docid 'ghost' is not in the docstore") as err:
        store.get_many(run["q1"][0])
    assert err.value.path == str(store.path)


def _damage(index: Path, tmp_path: Path, how: str) -> tuple[Path, str, str]:
    """Copy an index and damage it; return (copy, expected message, path the error must name)."""
    copy = tmp_path / index.name
    shutil.copytree(index, copy)
    manifest = copy / "manifest.json"
    if how == "missing manifest":
        manifest.unlink()
        return copy, "manifest.json is missing", str(copy)
    if how == "bad JSON":
        manifest.write_text('{"type": "dense",')
        return copy, "corrupt manifest", str(manifest)
    if how == "missing field":
        m = json.loads(manifest.read_text())
        del m["files"]
        manifest.write_text(json.dumps(m))
        return copy, r"missing field\(s\) \['files'\]", str(manifest)
    if how == "missing file":
        (copy / "docstore.sqlite").unlink()
        return copy, "'docstore.sqlite' listed in the manifest is missing", str(copy)
    if how == "changed bytes":
        target = copy / "docstore.sqlite"
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
        return copy, "does not match its manifest checksum", str(target)
    raise AssertionError(how)


@pytest.mark.parametrize("kind", ["dense", "bm25"])
@pytest.mark.parametrize("how", ["missing manifest", "bad JSON", "missing field", "missing file", "changed bytes"])
def test_corrupt_or_missing_manifest(tiny: dict[str, Path], tmp_path: Path, kind: str, how: str) -> None:
    copy, message, where = _damage(tiny[kind], tmp_path, how)
    load = DenseIndex.load if kind == "dense" else BM25Index.load
    stage = Dense if kind == "dense" else BM25
    for opener in (load, stage):
        with pytest.raises(IrkitError, match=message) as err:
            opener(copy)
        assert err.value.path == where


def test_cli_reports_a_damaged_index_in_one_line(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy, _, where = _damage(tiny["bm25"], tmp_path, "changed bytes")
    (tmp_path / "q.tsv").write_text("q1\tinsulin\n")
    rc = main(["search", "--index", str(copy), "--queries", str(tmp_path / "q.tsv"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"irkit: error: {where}: ") and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_index_of_another_type_or_no_index(tiny: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(IrkitError, match="expected a dense index, found a 'bm25' index"):
        Dense(tiny["bm25"])
    with pytest.raises(IrkitError, match="index directory not found") as err:
        BM25(tmp_path / "nowhere")
    assert err.value.path == str(tmp_path / "nowhere")


def test_dense_index_queried_with_a_different_dimension_encoder(tiny: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from irkit.models.registry import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    BertModel(config).save_pretrained(tmp_path / "tiny-bert")
    tokenizer.save_pretrained(tmp_path / "tiny-bert")
    with pytest.raises(IrkitError, match="gives 32-dimensional vectors, but the index holds 384-dimensional") as err:
        Dense(tiny["dense"], model=str(tmp_path / "tiny-bert"))
    assert err.value.path == str(tiny["dense"])
    with pytest.raises(IrkitError, match="dimension 32, but this index holds 384"):
        DenseIndex.load(tiny["dense"]).search(np.ones((1, 32), dtype=np.float32), 3)
