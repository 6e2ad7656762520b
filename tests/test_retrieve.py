"""BM25 and Dense stages on a real SciFact slice: scores match their definitions, rankings are usable."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from irkit.cli import main
from irkit.data.datasets import Dataset, load_dataset
from irkit.data.io import read_run
from irkit.data.types import Queries, Ranking
from irkit.evaluation import evaluate
from irkit.retrieve.bm25 import BM25
from irkit.retrieve.dense import Dense


@pytest.fixture(scope="module")
def data(scifact_slice: Path) -> Dataset:
    return load_dataset(scifact_slice, "test")


@pytest.fixture(scope="module")
def indexes(slice_indexes: Path) -> dict[str, Path]:
    return {"bm25": slice_indexes / "indexes" / "scifact-bm25", "dense": slice_indexes / "indexes" / "scifact-minilm"}


@pytest.fixture(scope="module")
def dense(indexes: dict[str, Path]) -> Dense:
    return Dense(indexes["dense"])


@pytest.fixture(scope="module")
def bm25(indexes: dict[str, Path]) -> BM25:
    return BM25(indexes["bm25"])


def test_dense_scores_are_inner_products_of_normalised_vectors(dense: Dense, data: Dataset) -> None:
    queries = data.queries.subset(list(data.queries)[:5])
    run = (dense % 20)(queries)
    doc_vectors = dense.index.vectors()
    q_vectors = dense.encoder.encode([queries[q] for q in queries])
    for i, q in enumerate(queries):
        docids, scores = run[q]
        assert len(docids) == 20
        exact = doc_vectors @ q_vectors[i]
        best = np.argsort(-exact, kind="stable")[:20]
        assert list(docids) == [dense.index.docids[j] for j in best]
        np.testing.assert_allclose(scores, exact[best], rtol=1e-5, atol=1e-6)
    assert run.queries is queries and run.docstore is dense.index.docstore


def test_both_retrievers_find_relevant_documents(dense: Dense, bm25: BM25, data: Dataset) -> None:
    # the slice keeps only test queries with a relevant document among its 300 documents
    for stage in (bm25, dense):
        run = stage(data.queries)
        assert set(run) == set(data.queries)
        lengths = {len(run[q][0]) for q in run}
        # k=1000 exceeds the corpus: dense ranks every document, BM25 those sharing a term with the query
        assert lengths == {300} if stage is dense else min(lengths) > 0 and max(lengths) <= 300
        result = evaluate(run, data.qrels, ["nDCG@10", "R@100"])
        assert result["nDCG@10"] > 0.6 and result["R@100"] > 0.9, (stage, result)


def test_bm25_scores_follow_k1_and_b(indexes: dict[str, Path], bm25: BM25, data: Dataset) -> None:
    q = next(iter(data.queries))
    default = bm25.search(data.queries[q], k=5)
    assert len(default) == 5 and [s for _, s in default] == sorted((s for _, s in default), reverse=True)
    flat_tf = BM25(indexes["bm25"], k1=0.0).search(data.queries[q], k=5)
    # k1=0 ignores term frequency: every matching document scores a sum of its query terms' idf
    assert [s for _, s in flat_tf] != [s for _, s in default]
    assert BM25(indexes["bm25"], k1=0.9, b=0.4).search(data.queries[q], k=5) == default


def test_topk_asks_retrievers_for_exactly_k(bm25: BM25, dense: Dense, data: Dataset) -> None:
    for stage in (bm25, dense):
        run = (stage % 3)(data.queries)
        assert {len(d) for d, _ in run.results.values()} == {3}
        assert run.docstore is not None and len(run.docstore.get_many(run[next(iter(run))][0])) == 3


def test_stages_rebuild_from_params_and_pickle(bm25: BM25, dense: Dense) -> None:
    for stage in (bm25, dense):
        again = type(stage)(**stage.params())
        assert again.params() == stage.params()
        copy = pickle.loads(pickle.dumps(stage))
        assert copy.search("cancer cells", k=5) == stage.search("cancer cells", k=5)


def test_empty_queries_give_an_empty_ranking(bm25: BM25, dense: Dense) -> None:
    for stage in (bm25, dense):
        assert len(stage(Queries({}))) == 0


def test_cli_search_writes_the_stage_ranking(
    indexes: dict[str, Path], bm25: BM25, data: Dataset, scifact_slice: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs" / "bm25.trec"
    args = [
        "search",
        "--index",
        str(indexes["bm25"]),
        "--dataset",
        str(scifact_slice),
        "--depth",
        "10",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    written = read_run(out)
    direct: Ranking = (bm25 % 10)(data.queries)
    assert set(written) == set(direct)
    for q in direct:
        assert written[q][0] == direct[q][0]
        np.testing.assert_allclose(written[q][1], direct[q][1], atol=1e-6)


def test_cli_builds_both_index_types(scifact_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join((scifact_slice / "corpus.jsonl").read_text().splitlines(keepends=True)[:12]))
    for kind in ("bm25", "dense"):
        rc = main(["index", "build", "--type", kind, "--corpus", str(corpus), "--out", str(tmp_path / kind), "--quiet"])
        assert rc == 0
        assert main(["index", "info", str(tmp_path / kind), "--verify"]) == 0
        assert f'"type": "{kind}"' in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25", "corpus.jsonl", "dense"]


def test_bm25_relative_index_path_follows_python_cwd(
    indexes: dict[str, Path], bm25: BM25, data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the JVM resolves relative paths against its own start directory; irkit must not
    monkeypatch.chdir(indexes["bm25"].parent)
    relative = BM25(indexes["bm25"].name)
    q = next(iter(data.queries))
    assert relative.search(data.queries[q], k=5) == bm25.search(data.queries[q], k=5)
