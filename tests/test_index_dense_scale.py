"""Dense indexes at scale, on real SciFact documents, MiniLM, FAISS and Ray: a Ray build equals the
in-process one and resumes its checkpoints, memory-mapped loading, HNSW / IVF-PQ search parameters."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from crash import kill_when_written

from irkit._java import fatal_signal_handlers
from irkit.cli import main
from irkit.data.datasets import load_dataset
from irkit.data.io import read_corpus, read_run
from irkit.errors import IrkitError
from irkit.index.dense import (
    INDEX_FILE,
    DenseIndex,
    _faiss,
    _sample_vectors,
    build_dense_index,
    make_faiss_index,
    train_size,
)
from irkit.index.manifest import work_dir
from irkit.pipeline.config import load_pipeline
from irkit.retrieve.dense import Dense

DOCS, CHUNK = 60, 10
LOCAL_BUILD = (
    "import sys\n"
    "from irkit.index.dense import build_dense_index\n"
    "build_dense_index(sys.argv[1], sys.argv[2], chunk_size=int(sys.argv[3]), show_progress=False)\n"
)


def _corpus(scifact_slice: Path, out: Path, n: int) -> Path:
    lines = (scifact_slice / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:n]
    out.write_text("".join(lines), encoding="utf-8")
    return out


def _content(index: DenseIndex) -> dict[str, tuple[str, int]]:
    return {name: (f["sha256"], f["bytes"]) for name, f in index.manifest["files"].items()}


def test_ray_build_resumes_a_killed_build_and_equals_the_in_process_build(
    scifact_slice: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    corpus = _corpus(scifact_slice, tmp_path / "corpus.jsonl", DOCS)
    out = tmp_path / "indexes" / "ray"

    # 1. an in-process build killed hard once its first checkpoint shard exists leaves a partial work dir
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCAL_BUILD, str(corpus), str(out), str(CHUNK)], env=env, stderr=subprocess.DEVNULL
    )
    kill_when_written(proc, work_dir(out) / "vectors-000000.npy", 600)
    finished = len(list(work_dir(out).glob("vectors-*.npy")))
    assert 1 <= finished < DOCS // CHUNK and not out.exists()

    # 2. the same build on Ray (a local cluster of 2 CPUs started by the build) encodes only the rest
    handlers = fatal_signal_handlers()
    capfd.readouterr()
    args = ["index", "build", "--type", "dense", "--corpus", str(corpus), "--out", str(out)]
    assert main([*args, "--chunk-size", str(CHUNK), "--executor", "ray", "--workers", "2"]) == 0
    progress = capfd.readouterr().err
    assert not ray.is_initialized()  # the cluster it started is shut down (Ray's own start-up line is
    # printed only by the first ray.init of a process, so it is no evidence here)
    assert fatal_signal_handlers() == handlers  # and the JVM's SIGSEGV handler survives it
    first = re.search(rf"(\d+)/{DOCS}", progress)
    assert first is not None and int(first.group(1)) == finished * CHUNK, progress
    assert not work_dir(out).exists()

    # 3. bit for bit the index an uninterrupted in-process build writes
    reference = build_dense_index(corpus, tmp_path / "indexes" / "local", chunk_size=CHUNK, show_progress=False)
    built = DenseIndex.load(out)
    assert built.docids == reference.docids and len(built) == DOCS
    assert _content(built) == _content(reference)


def test_encodings_do_not_depend_on_the_thread_count(scifact_slice: Path) -> None:
    """What lets a one-CPU Ray actor write the shards the multi-threaded in-process build writes."""
    import torch

    from irkit.models.encoder import BiEncoder

    texts = [d.contents for d in list(read_corpus(scifact_slice / "corpus.jsonl"))[:12]]
    encoder, threads = BiEncoder("minilm"), torch.get_num_threads()
    try:
        by_threads = []
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            by_threads.append(encoder.encode_documents(texts))
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(by_threads[0], v) for v in by_threads[1:])


def test_bad_executor_and_workers_fail_before_any_work(tmp_path: Path, scifact_slice: Path) -> None:
    corpus = _corpus(scifact_slice, tmp_path / "corpus.jsonl", 5)
    with pytest.raises(IrkitError, match="unknown executor 'spark'"):
        build_dense_index(corpus, tmp_path / "idx", executor="spark", show_progress=False)
    with pytest.raises(IrkitError, match="workers must be an integer >= 1, got 0"):
        build_dense_index(corpus, tmp_path / "idx", executor="ray", workers=0, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]


@pytest.mark.parametrize(
    ("factory", "size"),
    [("PQ16", 256 * 256), ("IVF64,Flat", 256 * 256), ("IVF512,PQ16", 256 * 512), ("IVF4096,PQ48", 200_000)],
)
def test_training_sample_is_what_faiss_kmeans_uses_at_most(factory: str, size: int) -> None:
    assert train_size(make_faiss_index(384, factory)) == size


def test_training_sample_is_seeded_uniform_and_read_shard_by_shard(tmp_path: Path) -> None:
    vectors = np.arange(1000 * 4, dtype=np.float32).reshape(1000, 4)
    shards = []
    for i, start in enumerate(range(0, 1000, 300)):
        shards.append(tmp_path / f"vectors-{i:06d}.npy")
        np.save(shards[-1], vectors[start : start + 300])
    sample = _sample_vectors(shards, 1000, 250)
    rows = sample[:, 0].astype(int) // 4
    assert len(set(rows)) == 250 and list(rows) == sorted(rows)
    assert rows.min() < 100 and rows.max() > 900  # spread over the corpus, not its first documents
    assert np.array_equal(_sample_vectors(shards, 1000, 250), sample)  # seeded
    assert np.array_equal(_sample_vectors(shards, 1000, 1000), vectors)  # a small corpus trains on all of it


@pytest.fixture(scope="module")
def docs(scifact_slice: Path) -> list:
    """The first 64 documents of the slice: enough to train a 2-list IVF with 16-centroid PQ codebooks."""
    return list(read_corpus(scifact_slice / "corpus.jsonl"))[:64]


@pytest.fixture(scope="module")
def hnsw(tmp_path_factory: pytest.TempPathFactory, docs: list) -> Path:
    out = tmp_path_factory.mktemp("hnsw") / "idx"
    return build_dense_index(docs, out, factory="HNSW32", max_length=128, show_progress=False).path


@pytest.fixture(scope="module")
def ivfpq(tmp_path_factory: pytest.TempPathFactory, docs: list) -> Path:
    out = tmp_path_factory.mktemp("ivfpq") / "idx"
    return build_dense_index(docs, out, factory="IVF2,PQ16x4", max_length=128, show_progress=False).path


def _mapped(path: Path) -> bool:
    """Is ``path`` memory-mapped into this process?"""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("which", ["hnsw", "ivfpq"])
def test_memory_mapped_index_searches_like_the_loaded_one(which: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which)
    loaded = DenseIndex.load(path)
    assert not _mapped(path / INDEX_FILE)
    mapped = DenseIndex.load(path, mmap=True)
    assert _mapped(path / INDEX_FILE)
    queries = loaded.vectors()
    for index in (loaded, mapped):
        index.set_search_params("nprobe=1" if which == "ivfpq" else "efSearch=16")
    scores, rows = loaded.search(queries, 10)
    mscores, mrows = mapped.search(queries, 10)
    assert np.array_equal(rows, mrows) and np.array_equal(scores, mscores)
    assert mapped.docids == loaded.docids


def test_fast_scan_index_cannot_be_memory_mapped(tmp_path: Path, docs: list) -> None:
    index = build_dense_index(docs[:40], tmp_path / "fs", factory="PQ16x4fs", max_length=64, show_progress=False)
    assert len(DenseIndex.load(index.path)) == 40  # loads into memory as usual
    with pytest.raises(IrkitError, match=r"cannot memory-map a IndexPQFastScan \(factory 'PQ16x4fs'\)"):
        DenseIndex.load(index.path, mmap=True)
    with pytest.raises(IrkitError, match="cannot memory-map"):
        Dense(index.path, mmap=True)


def test_search_params_in_python_yaml_and_cli(
    hnsw: Path, ivfpq: Path, scifact_slice: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    faiss = _faiss()
    queries = load_dataset(scifact_slice, "test").queries
    for path, params in ((hnsw, "efSearch=48"), (ivfpq, "nprobe=2")):
        dense = Dense(path, depth=20, search_params=params, mmap=True)
        inner = faiss.downcast_index(dense.index.index)
        if path == hnsw:
            assert inner.hnsw.efSearch == 48
        else:
            assert faiss.extract_index_ivf(inner).nprobe == 2
        expected = dense(queries)
        assert len(expected) == len(queries) > 0

        yaml = f"pipeline:\n  - dense: {{index: {path}, depth: 20, search_params: '{params}', mmap: true}}\n"
        from_yaml = load_pipeline(yaml)
        assert from_yaml.params() == dense.params()
        assert {q: list(from_yaml(queries)[q][0]) for q in queries} == {q: list(expected[q][0]) for q in queries}

        run = tmp_path / f"{path.parent.name}.trec"
        cli = ["search", "--index", str(path), "--dataset", str(scifact_slice), "--depth", "20", "--out", str(run)]
        assert main([*cli, "--search-params", params, "--mmap"]) == 0
        assert {q: docids for q, (docids, _) in read_run(run).items()} == {q: list(expected[q][0]) for q in queries}

    capfd.readouterr()
    for bad, why in (("nprobe=x", "could not interpret"), ("efSearch=16", "could not set parameter efSearch")):
        cli = ["search", "--index", str(ivfpq), "--dataset", str(scifact_slice), "--out", str(tmp_path / "bad.trec")]
        assert main([*cli, "--search-params", bad]) == 2
        err = capfd.readouterr().err
        assert f"irkit: error: {ivfpq}: search parameters {bad!r} do not apply" in err and why in err, err
    assert not (tmp_path / "bad.trec").exists()


def test_short_result_lists_keep_only_found_documents(ivfpq: Path, scifact_slice: Path) -> None:
    """An IVF search probing one list finds fewer than k documents; FAISS pads with row -1, which
    must never become a docid (``-1`` would index the last one)."""
    queries = load_dataset(scifact_slice, "test").queries
    dense = Dense(ivfpq, search_params="nprobe=1")
    k = len(dense.index)
    vectors = dense.encoder.encode_queries([queries[q] for q in queries])
    _, rows = dense.index.search(vectors, k)
    ranking = dense.search_vectors(queries, vectors, k)
    assert (rows == -1).any(), "every list was full: the test does not exercise padding"
    for i, q in enumerate(queries):
        found = rows[i][rows[i] >= 0]
        assert list(ranking[q][0]) == [dense.index.docids[r] for r in found]
        assert len(ranking[q][1]) == len(found)


def test_int8_index_records_its_backend_and_queries_follow_it(tmp_path: Path, docs: list, scifact_slice: Path) -> None:
    """``irkit index build --backend int8``: the manifest says int8 (an fp32 one says nothing), and
    ``Dense`` encodes queries with int8 too, so scores are int8 query · int8 document vectors."""
    out = tmp_path / "int8"
    argv = ["index", "build", "--type", "dense", "--out", str(out), "--max-length", "64", "--backend", "int8"]
    assert main([*argv, "--corpus", str(_corpus(scifact_slice, tmp_path / "c.jsonl", 20))]) == 0
    index = DenseIndex.load(out)
    assert index.manifest["build"]["backend"] == "int8"
    dense = Dense(out)
    assert dense.encoder.backend == "int8"
    queries = load_dataset(scifact_slice, "test").queries
    vectors = dense.encoder.encode_queries([queries[q] for q in queries])
    ranking = dense(queries)
    stored = index.vectors()
    for i, q in enumerate(queries):
        docids, scores = ranking[q]
        rows = [index.docids.index(d) for d in docids]
        assert np.allclose(scores, stored[rows] @ vectors[i], atol=1e-5)
    fp32 = build_dense_index(docs[:20], tmp_path / "fp32", max_length=64, show_progress=False)
    assert "backend" not in fp32.manifest["build"]
    assert not np.allclose(fp32.vectors(), stored[[index.docids.index(d) for d in fp32.docids]], atol=1e-4)
