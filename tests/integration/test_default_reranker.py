"""Full SciFact test split: the default reranking pipeline (examples/pipelines/bm25-ce-fused.yaml) beats BM25.

BM25 top 20, reranked by the bundled cross-encoder and min-max fused with BM25 at the
dev-tuned weight; recorded in eval/results/tune.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from irkit.cli import main
from irkit.data.datasets import load_dataset
from irkit.data.io import read_run
from irkit.evaluation import compare
from irkit.retrieve.bm25 import BM25

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# measured by irkit on 2026-11-28 with the committed irkit/resources/cross-encoder-minilm
FUSED_NDCG10 = 0.7183


def test_default_reranking_pipeline_beats_bm25(scifact_dir: Path, scifact_bm25: Path, tmp_path: Path) -> None:
    text = (ROOT / "examples" / "pipelines" / "bm25-ce-fused.yaml").read_text()
    pipeline = tmp_path / "fused.yaml"
    pipeline.write_text(text.replace("index: indexes/", f"index: {ROOT}/indexes/"))
    out = tmp_path / "fused.trec"
    assert main(["run", str(pipeline), "--dataset", str(scifact_dir), "--split", "test", "--out", str(out)]) == 0
    ds = load_dataset(scifact_dir, "test")
    [row] = compare(BM25(scifact_bm25)(ds.queries), {"fused": read_run(out)}, ds.qrels, "nDCG@10")
    assert row.mean == pytest.approx(FUSED_NDCG10, abs=0.003)
    assert row.mean > row.baseline_mean and row.p_value < 0.05
