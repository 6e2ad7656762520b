"""Full SciFact test split: RRF of BM25 and dense MiniLM (examples/pipelines/bm25-dense-rrf.yaml) scores as recorded.

Uses the repository's ``indexes/scifact-bm25`` and ``indexes/scifact-minilm``, building them
when absent or unverifiable. Run with ``pytest -m integration tests/integration``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from irkit.cli import main
from irkit.data.datasets import load_dataset
from irkit.data.io import read_run
from irkit.errors import IrkitError
from irkit.evaluate import evaluate
from irkit.index.bm25 import Bm25Index, build_bm25_index
from irkit.index.dense import DenseIndex, build_dense_index

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# RRF (k=60) of BM25 top 100 and MiniLM Flat top 100; measured by irkit on 2026-11-28, eval/results/fusion.md
RRF_NDCG10, RRF_R100 = 0.7179, 0.9550


def _ensure(load, build, path: Path, corpus: Path) -> None:
    try:
        load(path)
    except IrkitError:
        build(corpus, path, overwrite=True, show_progress=False)


def test_rrf_bm25_dense_matches_the_recorded_score(scifact_dir: Path, tmp_path: Path) -> None:
    _ensure(Bm25Index.load, build_bm25_index, ROOT / "indexes" / "scifact-bm25", scifact_dir)
    _ensure(DenseIndex.load, build_dense_index, ROOT / "indexes" / "scifact-minilm", scifact_dir)
    text = (ROOT / "examples" / "pipelines" / "bm25-dense-rrf.yaml").read_text()
    pipeline = tmp_path / "rrf.yaml"
    pipeline.write_text(text.replace("index: indexes/", f"index: {ROOT}/indexes/"))
    out = tmp_path / "rrf.trec"
    assert main(["run", str(pipeline), "--dataset", str(scifact_dir), "--split", "test", "--out", str(out)]) == 0
    result = evaluate(read_run(out), load_dataset(scifact_dir, "test").qrels, ["nDCG@10", "R@100"])
    assert result["nDCG@10"] == pytest.approx(RRF_NDCG10, abs=0.003)
    assert result["R@100"] == pytest.approx(RRF_R100, abs=0.003)
