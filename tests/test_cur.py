"""CUR indexes and CURRetriever (ANNCUR, adaptive ANNCUR).

The math on synthetic score matrices (exact recovery at low rank, exactness on anchors, monotone
recall in k_r, call budgets, stable pseudo-inverses); the index and the retriever with a tiny
random cross-encoder on real SciFact documents (round trip, CLI, YAML, meta, resume after SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from ce_models import save_random_bert

import irkit
from irkit import index
from irkit._java import fatal_signal_handlers
from irkit.cli import main
from irkit.data.io import read_corpus, read_run
from irkit.data.types import Queries
from irkit.errors import IrkitError
from irkit.index.cur import CURIndex, score_matrix
from irkit.index.manifest import work_dir
from irkit.models import cur
from irkit.pipeline import config
from irkit.retrieve.cur import CURRetriever

# --- the math, on synthetic score matrices -----------------------------------------------------------


def low_rank(n_rows: int, n_items: int, rank: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_rows, rank)) @ rng.standard_normal((rank, n_items))


class Lookup:
    """A scorer over a known exact matrix that records every (query, item) it was asked for."""

    def __init__(self, exact: np.ndarray) -> None:
        self.exact, self.asked = exact, [[] for _ in range(len(exact))]

    def __call__(self, rows: Sequence[np.ndarray]) -> list[np.ndarray]:
        assert len(rows) == len(self.exact)
        for j, r in enumerate(rows):
            self.asked[j].extend(int(i) for i in r)
        return [self.exact[j, r] for j, r in enumerate(rows)]


def recall(pool: cur.Pool, exact_row: np.ndarray, k: int) -> float:
    rows, scores = pool
    found = rows[np.argsort(-scores, kind="stable")[:k]]
    return len(set(found.tolist()) & set(np.argsort(-exact_row, kind="stable")[:k].tolist())) / k


def test_exact_recovery_when_the_score_matrix_has_rank_at_most_k_i() -> None:
    m = low_rank(60, 300, rank=6)
    r, test = m[:40], m[40:]
    for k_i in (6, 10, 40):
        anchors = cur.sample_items(300, k_i, seed=1)
        approx = test[:, anchors] @ cur.item_embeddings(r, anchors)
        assert np.allclose(approx, test, atol=1e-4 * np.abs(test).max())
        pools = cur.anncur(Lookup(test), len(test), cur.item_embeddings(r, anchors), anchors, k_r=10)
        assert all(recall(p, row, 10) == 1.0 for p, row in zip(pools, test, strict=True))
    # adaptive: once the first round has >= rank anchors, every later round finds the true top items
    pools = cur.adaptive(Lookup(test), len(test), r, budget=30, rounds=3, seed=1)
    assert all(recall(p, row, 20) == 1.0 for p, row in zip(pools, test, strict=True))
    # below the rank the approximation is not exact
    anchors = cur.sample_items(300, 4, seed=1)
    assert not np.allclose(test[:, anchors] @ cur.item_embeddings(r, anchors), test, atol=1e-2)


def test_approximation_is_exact_on_the_anchor_items() -> None:
    rng = np.random.default_rng(3)
    r, test = rng.standard_normal((50, 400)), rng.standard_normal((7, 400))  # full rank, k_q > k_i
    anchors = cur.sample_items(400, 20, seed=4)
    approx = test[:, anchors] @ cur.item_embeddings(r, anchors)
    assert np.allclose(approx[:, anchors], test[:, anchors], atol=1e-5)
    assert not np.allclose(np.delete(approx, anchors, axis=1), np.delete(test, anchors, axis=1), atol=0.1)


def test_recall_never_decreases_as_k_r_grows() -> None:
    rng = np.random.default_rng(5)
    m = low_rank(70, 500, rank=25, seed=5) + 0.8 * rng.standard_normal((70, 500))  # not exactly low rank
    r, test = m[:50], m[50:]
    anchors = cur.sample_items(500, 15, seed=6)
    e = cur.item_embeddings(r, anchors)
    curves = np.array(
        [
            [recall(p, row, 10) for p, row in zip(cur.anncur(Lookup(test), 20, e, anchors, k_r), test, strict=True)]
            for k_r in range(0, 486, 15)
        ]
    )
    assert (np.diff(curves, axis=0) >= 0).all()
    assert curves[0].mean() < 0.5 and (curves[-1] == 1.0).all()  # from the anchors alone to every item scored


def test_call_counts_equal_the_budget_and_anchors_stay_in_the_pool() -> None:
    rng = np.random.default_rng(7)
    r, test = rng.standard_normal((30, 200)), rng.standard_normal((5, 200))
    anchors = cur.sample_items(200, 12, seed=0)
    scorer = Lookup(test)
    pools = cur.anncur(scorer, 5, cur.item_embeddings(r, anchors), anchors, k_r=25)
    for (rows, scores), asked, row in zip(pools, scorer.asked, test, strict=True):
        assert len(asked) == len(set(asked)) == 12 + 25  # no item is scored twice
        assert set(anchors.tolist()) <= set(rows.tolist()) and sorted(asked) == sorted(rows.tolist())
        assert np.array_equal(scores, row[rows])  # the pool carries exact scores
    for budget, rounds in ((37, 1), (37, 4), (40, 5), (200, 3)):
        scorer = Lookup(test)
        pools = cur.adaptive(scorer, 5, r, budget, rounds, seed=0)
        assert all(len(a) == len(set(a)) == budget for a in scorer.asked)
        assert all(len(rows) == budget for rows, _ in pools)
    assert cur.round_sizes(37, 4) == [10, 9, 9, 9]
    # k_r larger than what is left scores every item once
    scorer = Lookup(test)
    cur.anncur(scorer, 5, cur.item_embeddings(r, anchors), anchors, k_r=1000)
    assert all(sorted(a) == list(range(200)) for a in scorer.asked)


def test_pinv_is_stable_on_duplicate_and_rank_deficient_anchors() -> None:
    rng = np.random.default_rng(8)
    m = low_rank(45, 100, rank=5, seed=8)
    m[:, 1] = m[:, 0]  # two items with identical scores (a duplicated document)
    r, test = m[:30].astype(np.float32).astype(np.float64), m[30:].copy()  # R is stored in float32
    test[:, 1] += 1e-6 * rng.standard_normal(len(test))  # a new query sees the duplicate with rounding noise
    for anchors in (np.arange(8), np.array([0, 0, 2, 3, 3, 5, 6, 7, 8])):  # duplicated documents; an item drawn twice
        block = r[:, anchors]
        p = cur.pinv(block)
        sigma = np.linalg.svd(block, compute_uv=False)[0]
        assert np.isfinite(p).all() and np.abs(p).max() <= 1 / (cur.RCOND * sigma)  # no direction inverted blindly
        assert np.abs(np.linalg.pinv(block, rcond=1e-15)).max() > 1e4 / sigma  # what numpy's default rcond gives
        assert np.allclose(block @ p @ block, block, atol=1e-9 * sigma)  # still a pseudo-inverse
        e = cur.item_embeddings(r, anchors)
        assert np.isfinite(e).all() and np.allclose(test[:, anchors] @ e, test, atol=1e-5 * np.abs(test).max())
    assert not cur.pinv(np.zeros((4, 3))).any() and cur.pinv(np.zeros((4, 3))).shape == (3, 4)
    with pytest.raises(IrkitError, match="NaN or infinite"):
        cur.pinv(np.array([[1.0, np.nan]]))
    with pytest.raises(IrkitError, match="cannot draw 11 anchors from 10"):
        cur.sample_items(10, 11, seed=0)
    with pytest.raises(IrkitError, match="1 <= rounds <= budget"):
        cur.round_sizes(3, 4)


# --- the index and the retriever with a tiny real cross-encoder -------------------------------------------

N_DOCS, N_ANCHOR_QUERIES, K_I = 60, 12, 8


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_bert(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="module")
def corpus(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cur-corpus") / "corpus.jsonl"
    lines = (scifact_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:N_DOCS]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _build_args(corpus: Path, out: Path, model: Path, scifact_dir: Path, *extra: str) -> list[str]:
    return [
        *("index", "build", "--type", "cur", "--corpus", str(corpus), "--out", str(out), "--quiet"),
        *("--anchor-queries", str(scifact_dir), "--num-anchor-queries", str(N_ANCHOR_QUERIES)),
        *("--model", str(model), "--max-length", "96", "--k-i", str(K_I), *extra),
    ]


@pytest.fixture(scope="module")
def built(corpus: Path, tiny_ce: Path, scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cur") / "index"
    assert main(_build_args(corpus, out, tiny_ce, scifact_dir)) == 0
    return out


@pytest.fixture(scope="module")
def test_queries(scifact_dir: Path) -> Queries:
    queries = irkit.load_dataset(scifact_dir, "test").queries
    return queries.subset(list(queries)[:4])


def test_index_round_trip(built: Path, corpus: Path, tiny_ce: Path, scifact_dir: Path) -> None:
    idx = index.open(built)
    assert isinstance(idx, CURIndex) and index.type_of(built) == "cur"
    m = idx.manifest
    train = irkit.load_dataset(scifact_dir, "train").queries
    assert len(m["anchor_queries"]) == N_ANCHOR_QUERIES and set(m["anchor_queries"]) <= set(train)
    assert m["model"] == str(tiny_ce) and m["max_length"] == 96 and m["seed"] == 0 and m["rcond"] == cur.RCOND
    assert m["cross_encoder_calls"] == N_ANCHOR_QUERIES * N_DOCS and m["doc_count"] == N_DOCS
    docs = list(read_corpus(corpus))
    assert idx.docids == [d.docid for d in docs]
    # R is the cross-encoder's score of every (anchor query, document) pair, in docstore order
    ce = idx.cross_encoder()
    query = train[m["anchor_queries"][3]]
    direct = ce.predict([(query, d.contents) for d in docs])
    assert idx.scores.dtype == np.float32 and idx.scores.shape == (N_ANCHOR_QUERIES, N_DOCS)
    assert np.allclose(idx.scores[3], direct, atol=1e-5)
    # the stored anchors and E are the seeded ones; another k_i is derived from R
    anchors, e = idx.embeddings()
    assert [idx.docids[i] for i in anchors] == m["anchor_items"] and len(anchors) == K_I
    assert np.array_equal(anchors, cur.sample_items(N_DOCS, K_I, 0))
    assert np.allclose(e, cur.item_embeddings(idx.scores, anchors), atol=1e-6)
    anchors5, e5 = idx.embeddings(k_i=5)
    assert e5.shape == (5, N_DOCS) and np.allclose(e5, cur.item_embeddings(idx.scores, anchors5), atol=1e-6)
    assert index.read_manifest(built, verify=True)["type"] == "cur"


def test_retriever_budget_meta_and_pool(built: Path, test_queries: Queries) -> None:
    from irkit.rerank.cross_encoder import CrossEncoder

    pairs = []
    original = CrossEncoder.predict

    def counting(self, batch, *a, **kw):  # counts the pairs the real model scores
        pairs.extend(batch)
        return original(self, batch, *a, **kw)

    retriever = CURRetriever(built, k_r=10)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CrossEncoder, "predict", counting)
        run = retriever.transform_k(test_queries, K_I + 10)
    assert len(pairs) == len(test_queries) * (K_I + 10) == len(set(pairs))
    anchor_docs = set(retriever.index.manifest["anchor_items"])
    for q in test_queries:
        assert run.meta[q] == {"method": "anncur", "k_i": K_I, "k_r": 10, "ce_calls": K_I + 10}
        docids, scores = run[q]
        assert anchor_docs <= set(docids) and len(docids) == K_I + 10  # anchors in the final pool
        assert np.all(np.diff(scores) <= 0)
    top5 = (retriever % 5)(test_queries)
    assert all(list(top5[q][0]) == list(run[q][0][:5]) for q in test_queries)
    adaptive = CURRetriever(built, k_i=6, k_r=9, adaptive_rounds=3)(test_queries)
    assert {json.dumps(m, sort_keys=True) for m in adaptive.meta.values()} == {
        json.dumps({"method": "adaptive", "budget": 15, "rounds": 3, "ce_calls": 15}, sort_keys=True)
    }
    with pytest.raises(IrkitError, match="adaptive_rounds = 20 exceeds the budget"):
        CURRetriever(built, k_i=5, k_r=10, adaptive_rounds=20)


def test_retriever_equals_search_over_the_exact_matrix(built: Path, test_queries: Queries) -> None:
    """The evaluation's simulation (the same search code over a cached exact matrix) is what the retriever does."""
    idx = CURIndex.load(built)
    exact = score_matrix(test_queries, idx.docstore, idx.cross_encoder(), show_progress=False)
    for params in ({"k_r": 12}, {"k_i": 5, "k_r": 20}, {"k_i": 6, "k_r": 14, "adaptive_rounds": 4}):
        run = CURRetriever(built, depth=40, **params)(test_queries)
        if "adaptive_rounds" in params:
            pools = cur.adaptive(Lookup(exact), len(exact), idx.scores, 20, 4, seed=0)
        else:
            anchors, e = idx.embeddings(params.get("k_i"))
            pools = cur.anncur(Lookup(exact), len(exact), e, anchors, params["k_r"])
        for q, (rows, scores) in zip(test_queries, pools, strict=True):
            order = np.argsort(-scores, kind="stable")
            assert list(run[q][0]) == [idx.docids[i] for i in rows[order]]
            assert np.allclose(run[q][1], scores[order], atol=1e-5)


def test_cli_search_yaml_and_reranking_after_it(
    built: Path, test_queries: Queries, tiny_ce: Path, tmp_path: Path
) -> None:
    from irkit.rerank.cross_encoder import CrossEncoder

    out, topics = tmp_path / "cur.trec", tmp_path / "topics.tsv"
    topics.write_text("".join(f"{q}\t{test_queries[q]}\n" for q in test_queries), encoding="utf-8")
    argv = ["search", "--index", str(built), "--queries", str(topics), "--out", str(out)]
    assert main([*argv, "--depth", "5", "--k-i", "6", "--k-r", "7"]) == 0
    python = CURRetriever(built, depth=5, k_i=6, k_r=7)(test_queries)
    cli = read_run(out)
    assert list(cli) == list(python) and all(list(cli[q][0]) == list(python[q][0]) for q in cli)
    spec = {"pipeline": [{"cur": {"index": str(built), "k_r": 7, "adaptive_rounds": 2}, "top_k": 6}]}
    pipe = config.load_pipeline(spec)
    assert config.to_dict(pipe) == config.to_dict(CURRetriever(built, k_r=7, adaptive_rounds=2) % 6)
    reranked = (CURRetriever(built, k_r=7) % 6 >> CrossEncoder(str(tiny_ce), max_length=32))(test_queries)
    assert all(len(reranked[q][0]) == 6 and reranked.meta[q]["ce_calls"] == K_I + 7 for q in test_queries)
    assert "input_score" in reranked.columns


def test_bad_build_input_is_refused(corpus: Path, tiny_ce: Path, scifact_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bad"
    assert main(["index", "build", "--type", "cur", "--corpus", str(corpus), "--out", str(out)]) == 2
    assert "needs anchor queries" in capsys.readouterr().err
    assert main(_build_args(corpus, out, tiny_ce, scifact_dir, "--k-i", str(N_DOCS + 1))) == 2
    assert f"k_i = {N_DOCS + 1} anchor items, but the corpus has only {N_DOCS}" in capsys.readouterr().err
    assert not out.exists() and not work_dir(out).exists()


def test_ray_executor_gives_the_same_index(
    built: Path, corpus: Path, tiny_ce: Path, scifact_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    handlers = fatal_signal_handlers()
    out = tmp_path / "ray"
    assert main(_build_args(corpus, out, tiny_ce, scifact_dir, "--executor", "ray", "--workers", "2")) == 0
    assert fatal_signal_handlers() == handlers  # the JVM's SIGSEGV handler survives the Ray job
    assert _content(CURIndex.load(out)) == _content(CURIndex.load(built))


def _content(idx: CURIndex) -> dict:
    return {name: (f["sha256"], f["bytes"]) for name, f in idx.manifest["files"].items()}


def test_sigkill_during_scoring_resumes_to_a_byte_identical_index(
    built: Path, corpus: Path, tiny_ce: Path, scifact_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    code = "import sys; from irkit.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [sys.executable, "-c", code, *_build_args(corpus, out, tiny_ce, scifact_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    results = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(work_dir(out).glob("scores-*/results.jsonl"))
        if found and found[0].read_bytes().count(b"\n") >= 2:
            results = found[0]
            break
        time.sleep(0.01)
    assert proc.poll() is None and results is not None, "the build finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = results.read_bytes().count(b"\n")
    assert 2 <= done < N_ANCHOR_QUERIES and not out.exists()

    resumed = subprocess.run(args, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {done} of {N_ANCHOR_QUERIES}" in resumed.stderr  # finished queries were not rescored
    assert _content(CURIndex.load(out)) == _content(CURIndex.load(built))
    assert not work_dir(out).exists()
