"""Inference backends (fp32 / int8) and the batch runner, on real models: a tiny random BERT for mechanics,
all-MiniLM-L6-v2 on real SciFact texts for agreement. Speed is measured in eval/bench/, never here."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ce_models import save_random_bert

from irkit.data.io import read_corpus, read_queries
from irkit.errors import IrkitError
from irkit.models.batching import TOKENS_PER_PASS, run_batches, sorted_batches
from irkit.models.encoder import BiEncoder
from irkit.pipeline.config import load_pipeline, to_dict, to_yaml
from irkit.rerank.bi_encoder import BiEncoderReranker
from irkit.rerank.cross_encoder import CrossEncoder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_bert(tmp_path_factory.mktemp("tiny-bert"), hidden=64)


@pytest.fixture(scope="module")
def pairs(scifact_dir: Path) -> list[tuple[str, str]]:
    """Real SciFact claims with real abstracts of mixed lengths."""
    docs = [d.contents for d in itertools.islice(read_corpus(scifact_dir / "corpus.jsonl"), 8)]
    queries = [q for _, q in itertools.islice(read_queries(scifact_dir / "queries.jsonl").items(), 2)]
    return [(q, d) for q in queries for d in docs]


def test_int8_replaces_every_linear_layer(tiny_dir: Path) -> None:
    fp32, int8 = CrossEncoder(str(tiny_dir)), CrossEncoder(str(tiny_dir), backend="int8")
    kinds = [type(m) for m in int8.model.modules()]
    # 6 linear layers in each of the 2 BERT layers, the pooler and the one-label head
    assert kinds.count(torch.ao.nn.quantized.dynamic.Linear) == 2 * 6 + 2 and torch.nn.Linear not in kinds
    assert torch.ao.nn.quantized.dynamic.Linear not in {type(m) for m in fp32.model.modules()}


def test_int8_cross_encoder_scores_track_fp32(pairs) -> None:
    """The bundled (trained) cross-encoder on real pairs. Stated tolerance: every int8 score within 10 % of
    the fp32 scores' range of its fp32 score, rank correlation >= 0.9."""
    fp32, int8 = CrossEncoder(batch_size=4), CrossEncoder(batch_size=4, backend="int8")
    a, b = fp32.predict(pairs), int8.predict(pairs)
    assert b.dtype == np.float32 and b.shape == a.shape and not np.array_equal(a, b)  # really another path
    spread = a.max() - a.min()
    assert spread > 0 and np.abs(a - b).max() <= 0.1 * spread
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(ranks(a), ranks(b))[0, 1] >= 0.9


def test_int8_minilm_vectors_agree_with_fp32(scifact_dir: Path) -> None:
    """Real weights, real texts: cosine(int8, fp32) >= 0.95 per text, >= 0.98 on average."""
    texts = [d.contents for d in itertools.islice(read_corpus(scifact_dir / "corpus.jsonl"), 8)]
    texts += [q for _, q in itertools.islice(read_queries(scifact_dir / "queries.jsonl").items(), 8)]
    fp32, int8 = BiEncoder("minilm"), BiEncoder("minilm", backend="int8")
    assert fp32.backend == "fp32" and int8.backend == "int8"
    a, b = fp32.encode(texts, batch_size=4), int8.encode(texts, batch_size=4)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosine = (a * b).sum(1)
    assert cosine.min() >= 0.95 and cosine.mean() >= 0.98 and cosine.min() < 0.9999


def test_backend_survives_yaml_round_trip(tiny_dir: Path, tmp_path: Path) -> None:
    stage = CrossEncoder(str(tiny_dir), backend="int8")
    step = {"cross_encoder": {"model": str(tiny_dir), "max_length": 512, "batch_size": 32, "backend": "int8"}}
    assert to_dict(stage) == {"pipeline": [step]}
    path = tmp_path / "ce.yaml"
    to_yaml(stage, path)
    again = load_pipeline(path)
    assert isinstance(again, CrossEncoder) and again.backend == "int8"
    assert torch.ao.nn.quantized.dynamic.Linear in {type(m) for m in again.model.modules()}
    assert "backend" not in CrossEncoder(str(tiny_dir)).params()  # fp32 stays the implicit default

    bi = load_pipeline({"pipeline": [{"bi_encoder": {"model": "minilm", "backend": "int8"}}]})
    assert isinstance(bi, BiEncoderReranker) and bi.params()["backend"] == "int8"
    assert bi.queries.model is bi.documents.model and bi.documents.backend == "int8"
    assert load_pipeline(to_dict(bi)).params() == bi.params()


def test_unknown_backend_is_irkit_error(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(IrkitError, match="unknown backend 'int4'; choose one of: fp32, int8"):
        CrossEncoder(str(tiny_dir), backend="int4")
    with pytest.raises(IrkitError, match="unknown backend 'fp16'"):
        BiEncoder("minilm", backend="fp16")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"pipeline:\n  - cross_encoder: {{model: {tiny_dir}, backend: int4}}\n")
    with pytest.raises(IrkitError, match=r"bad\.yaml.*pipeline\[0\]\.cross_encoder.*unknown backend 'int4'"):
        load_pipeline(bad)


def test_sorted_batches_respect_the_token_budget() -> None:
    lengths = [300, 250, 120, 100, 90, 30, 20, 10, 5, 5, 5]
    columns = {"input_ids": [[1] * n for n in lengths]}
    seen = []
    for idx, inputs, mask in sorted_batches(columns, batch_size=4, pad_id=0, max_tokens=256):
        rows, longest = inputs["input_ids"].shape
        assert rows <= 4 and (rows == 1 or rows * longest <= 256)
        assert mask.sum().item() == sum(lengths[i] for i in idx)
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(lengths)))
    assert TOKENS_PER_PASS >= 512  # one 512-token pair still makes a batch of its own


def test_run_batches_one_thread_each_then_restores() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        done: list[int] = []
        threads: dict[int, set[str]] = {}
        lock = threading.Lock()

        def step(i: int) -> None:
            with lock:
                done.append(i)
                threads.setdefault(torch.get_num_threads(), set()).add(threading.current_thread().name)
            assert torch.is_inference_mode_enabled()

        run_batches(range(10), step)
        assert sorted(done) == list(range(10)) and set(threads) == {1}
        assert all(name.startswith("irkit-batch-") for name in threads[1])
        assert torch.get_num_threads() == 2

        single: list[int] = []
        run_batches([0], lambda _: single.append(torch.get_num_threads()))  # one batch: all threads on it
        assert single == [2]

        def failing(i: int) -> None:
            if i == 3:
                raise ValueError("batch 3 broke")

        with pytest.raises(ValueError, match="batch 3 broke"):
            run_batches(range(8), failing)
        assert torch.get_num_threads() == 2
        assert not [t for t in threading.enumerate() if t.name.startswith("irkit-batch-")]  # none outlives it
    finally:
        torch.set_num_threads(before)


def test_ctrl_c_in_run_batches_waits_for_every_running_batch() -> None:
    """A real SIGINT while the caller waits: the KeyboardInterrupt is raised only after every
    batch that started has finished (an interrupted Thread.join used to let it out early)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    # Python's own Ctrl-C handler, whatever this process inherited: a test run started as a
    # background job (`pytest &`) inherits SIGINT ignored, and a signal would then do nothing
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    started: list[int] = []
    finished: list[int] = []

    def step(i: int) -> None:
        started.append(i)
        if i == 0:
            time.sleep(0.2)  # the caller is waiting by now
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
        finished.append(i)

    try:
        with pytest.raises(KeyboardInterrupt):
            run_batches(range(6), step)
        assert sorted(finished) == sorted(started) and 1 <= len(started) < 6
        assert not [t for t in threading.enumerate() if t.name.startswith("irkit-batch-")]
    finally:
        signal.signal(signal.SIGINT, handler)
        torch.set_num_threads(before)


def test_run_batches_on_one_thread_runs_every_batch_in_order() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a one-CPU Ray actor
    try:
        done: list[int] = []
        run_batches(range(10), done.append)
        assert done == list(range(10))
    finally:
        torch.set_num_threads(before)


def test_threaded_batches_equal_a_single_thread_run(scifact_dir: Path) -> None:
    """MiniLM on 200 real abstracts: batches side by side give the vectors of one thread, bit for bit
    (what lets one-thread Ray actors reproduce an in-process build), for fp32 and int8."""
    texts = [d.contents for d in itertools.islice(read_corpus(scifact_dir / "corpus.jsonl"), 200)]
    before = torch.get_num_threads()
    try:
        for backend in ("fp32", "int8"):
            encoder = BiEncoder("minilm", backend=backend)
            torch.set_num_threads(2)
            side_by_side = encoder.encode(texts)
            torch.set_num_threads(1)
            assert np.array_equal(side_by_side, encoder.encode(texts)), backend
    finally:
        torch.set_num_threads(before)


def test_rerank_cli_takes_the_backend(tiny_dir: Path, dl19_dir: Path, tmp_path: Path) -> None:
    """``irkit rerank --stage cross_encoder --backend int8`` scores like ``CrossEncoder(backend="int8")``."""
    from irkit.cli import main
    from irkit.data.docstore import DocStore
    from irkit.data.io import read_corpus, read_run

    lines = (dl19_dir / "bm25-top100.run").read_text(encoding="utf-8").splitlines()
    qid = lines[0].split()[0]
    run = tmp_path / "bm25.run"
    top = [x for x in lines if x.split()[0] == qid][:10]
    run.write_text("\n".join(top) + "\n", encoding="utf-8")
    wanted = {x.split()[2] for x in top}
    store = tmp_path / "passages.sqlite"
    DocStore.build(store, (d for d in read_corpus(dl19_dir / "passages.jsonl") if d.docid in wanted))
    out = tmp_path / "int8.trec"
    args = ["rerank", "--run", str(run), "--corpus", str(store), "--topics", str(dl19_dir / "topics.tsv")]
    args += ["--stage", "cross_encoder", "--model", str(tiny_dir), "--backend", "int8", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    docids, scores = read_run(out)[qid]
    query = dict(line.split("\t", 1) for line in (dl19_dir / "topics.tsv").read_text().splitlines())[qid]
    texts = [DocStore(store).get_many([d])[0].contents for d in docids]
    int8 = CrossEncoder(str(tiny_dir), backend="int8").predict([(query, t) for t in texts])
    fp32 = CrossEncoder(str(tiny_dir)).predict([(query, t) for t in texts])
    np.testing.assert_allclose(scores, int8, rtol=1e-4, atol=1e-7)
    assert np.abs(np.asarray(scores) - fp32).max() > 1e-5
