"""Reliability: what irkit must never do (delete what is not its own, die silently on Ctrl-C, expand hostile
YAML, write what it cannot read back, race another build), each with the repro that once broke it.

Real components throughout: the Anserini indexer through the JVM irkit starts, FAISS, SQLite, the
bundled MiniLM, and real processes interrupted with real signals.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from irkit.cli import main
from irkit.data.docstore import DocStore, DocTexts
from irkit.data.io import read_corpus, read_qrels, read_queries, read_run, write_qrels, write_run
from irkit.data.types import Qrels, Ranking
from irkit.errors import IrkitError, IrkitWarning
from irkit.evaluation import evaluate
from irkit.index.bm25 import BM25Index, build_bm25_index
from irkit.index.dense import DenseIndex, build_dense_index
from irkit.index.manifest import read_manifest, work_dir
from irkit.models.registry import resolve
from irkit.pipeline.config import load_pipeline
from irkit.pipeline.operators import Fuse
from irkit.retrieve import bm25 as bm25_module
from irkit.retrieve.bm25 import BM25

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "0", "PYTHONPATH": str(ROOT)}


def _as_in_a_terminal() -> None:
    """Ctrl-C handled as in a terminal: a test run from a background job inherits SIGINT ignored,
    and Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _slice(scifact_slice: Path, n: int) -> list[str]:
    return (scifact_slice / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:n]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, scifact_slice: Path) -> Path:
    """The first 40 real SciFact documents."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(_slice(scifact_slice, 40)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("bm25") / "idx"
    build_bm25_index(corpus, out, show_progress=False)
    return out


# 1. --overwrite never deletes what irkit did not write


def test_overwrite_refuses_a_directory_whose_manifest_is_not_irkits(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    x = tmp_path / "x"
    x.mkdir()
    (x / "manifest.json").write_text('{"name": "ext"}')  # a browser extension's manifest
    (x / "precious.txt").write_text("precious")
    rc = main(["index", "build", "--type", "bm25", "--corpus", str(corpus), "--out", str(x), "--overwrite", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "not an irkit index" in err and "refusing to overwrite" in err
    assert (x / "precious.txt").read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_overwrite_refuses_an_index_holding_files_its_manifest_does_not_list(
    bm25_index: Path, corpus: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(bm25_index, copy)
    (copy / "notes.txt").write_text("mine")
    with pytest.raises(IrkitError, match=r"files its manifest does not list \(notes.txt\)"):
        build_bm25_index(corpus, copy, overwrite=True, show_progress=False)
    assert (copy / "notes.txt").read_text() == "mine" and BM25Index.load(copy).manifest["doc_count"] == 40
    (copy / "notes.txt").unlink()
    assert len(build_bm25_index(corpus, copy, overwrite=True, show_progress=False)) == 40  # its own index: replaced


def test_overwrite_of_a_file_is_refused_in_one_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("keep")
    rc = main(["index", "build", "--type", "bm25", "--corpus", str(corpus), "--out", str(target), "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"irkit: error: {target}: output exists and is not a directory; refusing to overwrite it"
    assert target.read_text() == "keep"


# 2. Ctrl-C after the JVM starts is a KeyboardInterrupt, and the CLI exits 130 with resumable state

SEARCH_UNTIL_INTERRUPTED = """
import sys
from irkit.retrieve.bm25 import BM25
bm25 = BM25(sys.argv[1], depth=10)
bm25("insulin")  # the JVM runs now
try:
    print("searching", flush=True)
    while True:
        bm25("blood glucose insulin resistance")
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
finally:
    print("finally ran", flush=True)
"""


def test_ctrl_c_after_the_jvm_starts_raises_keyboard_interrupt(bm25_index: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SEARCH_UNTIL_INTERRUPTED, str(bm25_index)],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_as_in_a_terminal,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "searching\n"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave a searching process behind when the assertion fails
    assert (proc.returncode, out) == (0, "KeyboardInterrupt\nfinally ran\n")


DENSE_BUILD_AFTER_JVM = """
import sys
from irkit._java import ensure_jvm
from irkit.cli import main
ensure_jvm()
args = ["index", "build", "--type", "dense", "--corpus", sys.argv[1], "--out", sys.argv[2], "--chunk-size", "10"]
sys.exit(main(args))
"""


def test_ctrl_c_in_the_cli_prints_one_line_exits_130_and_resumes(scifact_slice: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(_slice(scifact_slice, 50)), encoding="utf-8")
    out = tmp_path / "indexes" / "dense"
    work = work_dir(out)
    cmd = [sys.executable, "-c", DENSE_BUILD_AFTER_JVM, str(corpus), str(out)]
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal)
    deadline = time.monotonic() + 600
    while not (work / "vectors-000000.npy").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "irkit: interrupted; rerun the same command to resume"
    assert "Traceback" not in err and not out.exists()
    kept = sorted(p.name for p in work.glob("vectors-*.npy"))
    assert 1 <= len(kept) < 5

    # a damaged checkpoint (right shape, not unit vectors) is encoded again, not reused
    np.save(work / kept[0], np.full((10, 384), 2.0, dtype=np.float32))
    index = build_dense_index(corpus, out, chunk_size=10, show_progress=False)
    from irkit.models.encoder import BiEncoder

    texts = [d.contents for d in read_corpus(corpus)]
    expected = BiEncoder("minilm", max_length=256).encode(texts, batch_size=32)
    np.testing.assert_allclose(index.vectors(), expected, atol=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["dense"]


# 3 and 11. Pipeline YAML: hostile or malformed input fails at once with file and line


def _bomb(levels: int = 9) -> str:
    lines = ["s0: &s0 {bm25: {index: x}}"]
    for i in range(1, levels):
        lines.append(f"s{i}: &s{i} {{pipeline: [{', '.join([f'*s{i - 1}'] * 9)}]}}")
    return "\n".join(lines) + f"\npipeline: [*s{levels - 1}]\n"


def test_yaml_alias_bomb_is_refused_at_its_first_anchor(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert path.stat().st_size < 700
    # in a child process with a deadline: before the fix the bomb ran for minutes and grew past 420 MB
    code = "import sys; from irkit.pipeline.config import load_pipeline\ntry: load_pipeline(sys.argv[1])\n"
    code += "except Exception as e: print(type(e).__name__, e)"
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=ENV, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == (
        f"IrkitError {path}:1: not valid YAML: anchors and aliases (&name, *name) are not allowed in a pipeline"
    )


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("pipeline:\n  - bm25: {index: x, k: !!int abc}\n", r"tags \(tag:yaml.org,2002:int\) are not allowed", 2),
        ("pipeline:\n  - bm25: {index: x, k: !!int }\n", "tags", 2),
        ("pipeline:\n  - bm25: !!python/object:os.system {}\n", "tags", 2),
        ("pipeline: " + "[" * 400 + "]" * 400 + "\n", "nested deeper than 50 levels", 1),
        ("pipeline:\n  - fuse: rrf\n    of: [{bm25: {index: x}}, {bm25: {index: y}}]\n    1: 2\n", "key must be", 4),
        ("pipeline:\n  - bm25: {index: x}\n    bm25: {index: y}\n", "duplicate key 'bm25'", 3),
        ("pipeline:\n  - bm25: {index: 2001-13-45}\n", "'2001-13-45' is not a string, number", 2),
        ("pipeline: 0b_\n", "invalid literal", None),
    ],
)
def test_malformed_yaml_is_one_irkit_error_with_file_and_line(
    tmp_path: Path, text: str, message: str, line: int | None
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(IrkitError, match=message) as err:
        load_pipeline(path)
    assert err.value.path == str(path) and err.value.line == line


def test_non_utf8_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"pipeline:\n  - bm25: {index: caf\xe9}\n")
    with pytest.raises(IrkitError, match="not valid UTF-8") as err:
        load_pipeline(path)
    assert (err.value.path, err.value.line) == (str(path), 2)
    path.write_bytes(b"\xef\xbb\xbfpipeline:\n  - bm25: {index: /nonexistent}\n")  # a BOM is fine
    with pytest.raises(IrkitError, match="index directory not found"):
        load_pipeline(path)


# 4. a byte-order mark is dropped by every reader


def test_a_bom_is_dropped_by_every_reader(scifact_slice: Path, dl19_dir: Path, tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    cases = {
        "qrels.tsv": (scifact_slice / "qrels" / "test.tsv", lambda p: read_qrels(p).judgments),
        "qrels.txt": (dl19_dir / "qrels.txt", lambda p: read_qrels(p).judgments),
        "run.trec": (dl19_dir / "bm25-top100.run", lambda p: read_run(p).to_dict()),
        "topics.tsv": (dl19_dir / "topics.tsv", lambda p: read_queries(p).texts),
        "queries.jsonl": (scifact_slice / "queries.jsonl", lambda p: read_queries(p).texts),
        "corpus.jsonl": (scifact_slice / "corpus.jsonl", lambda p: list(read_corpus(p))),
    }
    for name, (source, read) in cases.items():
        with_bom = tmp_path / name
        with_bom.write_bytes(bom + source.read_bytes())
        assert read(with_bom) == read(source), name


# 5 and 10. ids and scores: validated when read, refused when written; everything written reads back


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corpus.jsonl", '{"_id": "a b", "text": "x"}\n', "'_id' 'a b' is empty or holds whitespace"),
        ("corpus.jsonl", '{"_id": true, "text": "x"}\n', "'_id' must be a string or an integer, got True"),
        ("corpus.jsonl", '{"_id": "", "text": "x"}\n', "empty or holds whitespace"),
        ("corpus.jsonl", '{"_id": "1", "text": 0}\n', "'text' must be a string, got 0"),
        ("corpus.jsonl", '{"_id": "1", "title": 0, "text": "x"}\n', "'title' must be a string"),
        ("corpus.jsonl", '{"_id": "1", "text": "\\ud800"}\n', "lone UTF-16 surrogate"),
        ("queries.jsonl", '{"_id": "q\\t1", "text": "x"}\n', "empty or holds whitespace"),
        ("topics.tsv", "\tquery without an id\n", "query id '' is empty"),
        ("topics.tsv", "q 1\tquery\n", "query id 'q 1' is empty or holds whitespace"),
        ("corpus.jsonl", '{"_id": "\\ufeffa", "text": "x"}\n', "holds whitespace or U\\+FEFF"),
        ("run.trec", "\ufeff\ufeffq1 Q0 d1 1 1.0 x\n", "U\\+FEFF"),  # found by fuzzing: a second BOM became the qid
        ("qrels.txt", "q1 0 d1 9223372036854775808\n", "outside"),
        ("qrels.txt", "q1 0 d1 9223372036854775000\n", "outside"),
    ],
)
def test_ids_texts_and_grades_are_validated_when_read(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    readers = {"corpus.jsonl": lambda p: list(read_corpus(p)), "qrels.txt": read_qrels, "run.trec": read_run}
    reader = readers.get(name, read_queries)
    with pytest.raises(IrkitError, match=message) as err:
        reader(path)
    assert (err.value.path, err.value.line) == (str(path), 1)


@pytest.mark.parametrize(
    ("results", "tag", "message"),
    [
        ({"q1": (["d 1"], [1.0])}, "x", "docid 'd 1'"),
        ({"": (["d1"], [1.0])}, "x", "query id ''"),
        ({"q1": (["d1", "d2"], [1.0, float("nan")])}, "x", "docid 'd2': score nan is not finite"),
        ({"q1": (["d1"], [float("inf")])}, "x", "not finite"),
        ({"q1": (["d1"], [1.0])}, "my run", "run tag 'my run'"),
    ],
)
def test_write_run_refuses_what_read_run_would_refuse(tmp_path: Path, results: dict, tag: str, message: str) -> None:
    run = Ranking({q: (d, np.array(s)) for q, (d, s) in results.items()})
    with pytest.raises(IrkitError, match=message):
        write_run(run, tmp_path / "run.trec", tag=tag)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(IrkitError, match="whitespace"):
        write_qrels(Qrels({"q1": {"d 1": 1}}), tmp_path / "q.txt")


def test_write_run_to_a_directory_is_an_irkit_error(tmp_path: Path) -> None:
    with pytest.raises(IrkitError, match="output is a directory") as err:
        write_run(Ranking({"q1": (["d1"], np.array([1.0]))}), tmp_path)
    assert err.value.path == str(tmp_path)


def test_ids_from_a_real_corpus_and_topics_round_trip_through_a_run(
    bm25_index: Path, dl19_dir: Path, tmp_path: Path
) -> None:
    topics = read_queries(dl19_dir / "topics.tsv")
    run = BM25(bm25_index, depth=5)(topics)
    write_run(run, tmp_path / "run.trec")
    again = read_run(tmp_path / "run.trec", topics, docids=BM25Index.load(bm25_index).docstore)
    assert {q: d for q, (d, _) in again.items()} == {q: d for q, (d, _) in run.items() if d}


# 6. two builds into one --out: the second fails at once, the first is untouched

SLOW_BUILD = """
import sys
from irkit.index.dense import build_dense_index
build_dense_index(sys.argv[1], sys.argv[2], chunk_size=5, batch_size=5, show_progress=False)
"""


def test_a_second_build_into_the_same_out_fails_at_once(scifact_slice: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(_slice(scifact_slice, 40)), encoding="utf-8")
    out = tmp_path / "indexes" / "idx"
    first = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(corpus), str(out)], env=ENV)
    deadline = time.monotonic() + 600
    while not (work_dir(out) / "vectors-000000.npy").exists():
        assert first.poll() is None and time.monotonic() < deadline, "the first build did not start encoding"
        time.sleep(0.05)
    for build in (build_bm25_index, build_dense_index):
        for overwrite in (False, True):
            with pytest.raises(IrkitError, match=r"another build is writing this index \(it holds .idx.lock\)"):
                build(corpus, out, overwrite=overwrite, show_progress=False)
    assert first.wait(timeout=600) == 0
    assert len(DenseIndex.load(out)) == 40
    assert sorted(p.name for p in out.parent.iterdir()) == ["idx"]  # no lock, work or partial left


# 7. any legal path holds a DocStore, opened read-only


def test_docstore_at_a_path_with_uri_characters_opens_read_only(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    index = build_bm25_index(corpus, Path("run#1?mode=rw&x=%41"), show_progress=False)
    assert len(index.docstore) == 40 and index.docstore.get(index.docstore.docids()[3]).text
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        index.docstore._conn().execute("CREATE TABLE t (x)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run#1?mode=rw&x=%41"]  # no stray "run" file


# 9. unknown model names never reach a model hub


def test_an_unknown_model_name_is_an_error_not_a_download(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(IrkitError, match=r"unknown model 'minlm'.*write it as hf:minlm"):
        resolve("minlm")
    assert resolve("hf:sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve("minilm").endswith("model") and resolve(str(tmp_path)) == str(tmp_path)
    with pytest.raises(IrkitError, match="unknown model"):
        build_dense_index(corpus, tmp_path / "idx", model="all-minilm-typo", show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# 10. numeric parameters are checked where they are taken, and named


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("k1", float("nan"), "k1 must be finite and >= 0, got nan"),
        ("k1", -0.5, "k1 must be finite"),
        ("b", 1.5, "b must be between 0 and 1, got 1.5"),
        ("b", float("inf"), "b must be between 0 and 1"),
        ("depth", 2**31, "depth must be between 1 and 2\\*\\*31 - 1"),
        ("threads", 0, "threads must be >= 1, got 0"),
    ],
)
def test_bm25_parameters_are_validated(tmp_path: Path, param: str, value: float, message: str) -> None:
    with pytest.raises(IrkitError, match=message):
        BM25(tmp_path / "no-index", **{param: value})
    yaml_value = ".nan" if math.isnan(value) else ".inf" if math.isinf(value) else value
    path = tmp_path / "p.yaml"
    path.write_text(f"pipeline:\n  - bm25:\n      index: x\n      {param}: {yaml_value}\n")
    with pytest.raises(IrkitError, match=f"pipeline\\[0\\].bm25: BM25 {message}") as err:
        load_pipeline(path)
    assert (err.value.path, err.value.line) == (str(path), 3)  # where the stage's parameters start


def test_build_sizes_are_validated_before_any_work(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    for kwargs, message in (
        ({"max_length": 0}, "max_length must be an integer >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"chunk_size": -1}, "chunk_size must be"),
    ):
        with pytest.raises(IrkitError, match=message):
            build_dense_index(corpus, out, show_progress=False, **kwargs)
    with pytest.raises(IrkitError, match="threads must be an integer >= 1, got 0"):
        build_bm25_index(corpus, out, threads=0, show_progress=False)
    assert list(tmp_path.iterdir()) == []  # no .work, .partial or lock left


# 11. manifests, OS errors, grades


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format_version", "1", "format_version '1' is not an integer"),
        ("type", None, "type None is not a name"),
        ("doc_count", -1, "doc_count -1 is not a count"),
        ("files", ["lucene"], "files is not a mapping"),
        ("files", {"docstore.sqlite": "abc"}, "lacks sha256 and bytes"),
        ("files", {"../outside.txt": {"sha256": "0", "bytes": 1}}, "'../outside.txt' is not a path inside"),
        ("files", {"/etc/passwd": {"sha256": "0", "bytes": 1}}, "not a path inside"),
    ],
)
def test_malformed_manifest_fields_are_irkit_errors(
    bm25_index: Path, tmp_path: Path, field: str, value: object, message: str
) -> None:
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(bm25_index, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest[field] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IrkitError, match=message) as err:
        read_manifest(copy)
    assert err.value.path == str(copy / "manifest.json")


def test_a_manifest_entry_may_not_lead_outside_the_index(bm25_index: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(bm25_index, copy)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the index's")
    (copy / "link.txt").symlink_to(secret)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["link.txt"] = {"sha256": "0" * 64, "bytes": secret.stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IrkitError, match=r"'link\.txt' resolves outside the index directory"):
        read_manifest(copy)


def test_os_errors_are_one_line(bm25_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "q.tsv").write_text("q1\tinsulin\n")
    (tmp_path / "file").write_text("a file, not a directory")
    out = tmp_path / "file" / "run.trec"
    rc = main(["search", "--index", str(bm25_index), "--queries", str(tmp_path / "q.tsv"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("irkit: error: ") and str(tmp_path / "file") in err and "\n" not in err


# 12. BM25 searches in bounded batches with the same results as one batch


def test_bm25_batches_give_the_same_ranking_as_one_batch(
    bm25_index: Path, scifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = read_queries(scifact_dir / "queries.jsonl").subset(list(read_queries(scifact_dir / "queries.jsonl"))[:25])
    bm25 = BM25(bm25_index, depth=8)
    hits = bm25.searcher().batch_search([queries[q] for q in queries], list(queries), k=8, threads=2)
    one_batch = {q: ([h.docid for h in hits[q]], [h.score for h in hits[q]]) for q in queries}
    monkeypatch.setattr(bm25_module, "HITS_PER_BATCH", 24)  # 3 queries per batch: 9 batches
    batched = bm25(queries)
    assert list(batched) == list(queries)
    assert {q: (d, s.tolist()) for q, (d, s) in batched.items()} == one_batch


def test_doc_texts_read_on_demand_give_the_same_training_examples(scifact_slice: Path, tmp_path: Path) -> None:
    from irkit.tune.trainer import build_examples

    docs = list(read_corpus(scifact_slice / "corpus.jsonl"))
    in_memory = {d.docid: d.contents for d in docs}
    on_disk = DocTexts(DocStore.build(tmp_path / "docs.sqlite", docs))
    assert len(on_disk) == len(in_memory) and "nope" not in on_disk and on_disk.get("nope") is None
    qrels = read_qrels(scifact_slice / "qrels" / "test.tsv").judgments
    queries = dict(read_queries(scifact_slice / "queries.jsonl").items())
    ids = sorted(in_memory)
    candidates = {q: ids[i : i + 30] for i, q in enumerate(qrels)}
    examples = build_examples(qrels, queries, candidates, in_memory, n_negatives=3)
    assert len(examples) > 10
    assert build_examples(qrels, queries, candidates, on_disk, n_negatives=3) == examples


# 13. smaller ones


def test_version(capsys: pytest.CaptureFixture) -> None:
    from irkit import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"irkit {__version__}"


def test_quiet_also_silences_transformers(scifact_slice: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(_slice(scifact_slice, 5)), encoding="utf-8")
    code = "import sys; from irkit.cli import main; sys.exit(main(sys.argv[1:]))"
    build = [sys.executable, "-c", code, "index", "build", "--type", "dense", "--corpus", str(corpus)]
    loud = subprocess.run([*build, "--out", str(tmp_path / "a")], env=ENV, capture_output=True, text=True)
    quiet = subprocess.run([*build, "--out", str(tmp_path / "b"), "--quiet"], env=ENV, capture_output=True, text=True)
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert "Loading weights" in loud.stderr and "encode a" in loud.stderr
    assert quiet.stderr == ""


def test_a_gzipped_corpus_is_read(corpus: Path, tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl.gz").write_bytes(gzip.compress(corpus.read_bytes()))
    assert list(read_corpus(beir / "corpus.jsonl.gz")) == list(read_corpus(corpus))
    index = build_bm25_index(beir, tmp_path / "idx", show_progress=False)  # a BEIR directory holding only the .gz
    assert index.docstore.docids() == [d.docid for d in read_corpus(corpus)]
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(corpus.read_bytes())[:-200])
    with pytest.raises(IrkitError, match="corrupt gzip file") as err:
        list(read_corpus(broken))
    assert err.value.path == str(broken) and err.value.line is not None


def test_qrels_that_judge_nothing_in_the_run_warn(
    dl19_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = read_run(dl19_dir / "bm25-top100.run")
    qrels = read_qrels(dl19_dir / "qrels.txt")
    other = Qrels({f"x{q}": docs for q, docs in qrels.items()})
    shifted = Qrels({q: {f"x{d}": g for d, g in docs.items()} for q, docs in qrels.items()})
    for judged, message in (
        (Qrels({}), "judge no document relevant"),
        (other, "none of the run's 43 queries is among the 43 judged ones"),
        (shifted, "retrieves no judged document"),
    ):
        with pytest.warns(IrkitWarning, match=message):
            assert evaluate(run, judged, ["nDCG@10"])["nDCG@10"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert evaluate(run, qrels, ["nDCG@10"])["nDCG@10"] > 0.4
    write_qrels(other, tmp_path / "other.txt")
    assert main(["eval", str(dl19_dir / "bm25-top100.run"), str(tmp_path / "other.txt")]) == 0
    assert "irkit: warning: none of the run's 43 queries" in capsys.readouterr().err


def test_huge_grades_never_reach_pytrec_eval(tmp_path: Path) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text(f"q1 0 d1 {10**6 - 1}\nq1 0 d2 -2\n")
    qrels = read_qrels(path)
    run = Ranking({"q1": (["d1", "d2"], np.array([2.0, 1.0]))})
    assert math.isclose(evaluate(run, qrels, ["nDCG@10"])["nDCG@10"], 1.0)
    # pytrec_eval's nDCG walks every grade level: 2**31 - 1 took 27 s for this one query
    path.write_text(f"q1 0 d1 {2**31 - 1}\n")
    with pytest.raises(IrkitError, match=r"relevance grade 2147483647 is outside ±999999") as err:
        read_qrels(path)
    assert err.value.path == str(path) and err.value.line == 1


@pytest.mark.parametrize(
    ("fuse", "message"),
    [
        ("{fuse: rrf, k: -1", "pipeline[0].k: expected a non-negative integer, got -1"),
        ("{fuse: linear, weights: [.nan, 1.0]", "pipeline[0].weights: weights must be finite numbers, got [nan, 1.0]"),
        ("{fuse: linear, weights: [.inf, 1.0]", "pipeline[0].weights: weights must be finite numbers, got [inf, 1.0]"),
    ],
)
def test_fusion_parameters_are_validated_before_any_search(
    bm25_index: Path, tmp_path: Path, fuse: str, message: str
) -> None:
    """Defect 10: fuse k <= -1 divided by zero, NaN weights wrote a run of nan with exit 0."""
    stage = f"{{bm25: {{index: {bm25_index}}}}}"
    path = tmp_path / "p.yaml"
    path.write_text(f"pipeline:\n  - {fuse}, of: [{stage}, {stage}]}}\n", encoding="utf-8")
    with pytest.raises(IrkitError, match=re.escape(message)) as err:
        load_pipeline(path)
    assert f"{path}:2" in str(err.value)
    bm25 = BM25(bm25_index)
    with pytest.raises(IrkitError, match="fusion k must be >= 0, got -1"):
        Fuse([bm25, bm25], k=-1)
    with pytest.raises(IrkitError, match="fusion weight must be a finite number, got nan"):
        Fuse([bm25, bm25], method="linear", weights=[float("nan"), 1.0])
