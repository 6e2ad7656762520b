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
from irkit.evaluation import evaluate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# RRF (k=60) of BM25 top 100 and MiniLM Flat top 100; measured by irkit on 2026-11-28, eval/results/fusion.md
RRF_NDCG10, RRF_R100 = 0.7179, 0.9550


def test_rrf_bm25_dense_matches_the_recorded_score(
    scifact_dir: Path, scifact_bm25: Path, scifact_minilm: Path, tmp_path: Path
) -> None:
    text = (ROOT / "examples" / "pipelines" / "bm25-dense-rrf.yaml").read_text()
    pipeline = tmp_path / "rrf.yaml"
    pipeline.write_text(text.replace("index: indexes/", f"index: {ROOT}/indexes/"))
    out = tmp_path / "rrf.trec"
    assert main(["run", str(pipeline), "--dataset", str(scifact_dir), "--split", "test", "--out", str(out)]) == 0
    result = evaluate(read_run(out), load_dataset(scifact_dir, "test").qrels, ["nDCG@10", "R@100"])
    assert result["nDCG@10"] == pytest.approx(RRF_NDCG10, abs=0.003)
    assert result["R@100"] == pytest.approx(RRF_R100, abs=0.003)
