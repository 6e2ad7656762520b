"""CrossEncoder mechanics on real models: a tiny random BERT and the MiniLM backbone with an untrained head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ce_models import save_minilm_head, save_random_bert

from irkit.data.docstore import DocStore
from irkit.data.io import read_corpus, read_run, read_topics_tsv
from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.rerank.cross_encoder import DEFAULT_MODEL, CrossEncoder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_minilm_head(tmp_path_factory.mktemp("minilm-head"))


@pytest.fixture(scope="module")
def dl19_pairs(dl19_dir: Path) -> list[tuple[str, str]]:
    """Real, variable-length (query, passage) pairs: 3 queries x 20 BM25 candidates from DL19."""
    topics = read_topics_tsv(dl19_dir / "topics.tsv")
    run = read_run(dl19_dir / "bm25-top100.run", topics)
    wanted = {d for q in list(run)[:3] for d in run[q][0][:20]}
    texts = {d.docid: d.contents for d in read_corpus(dl19_dir / "passages.jsonl") if d.docid in wanted}
    return [(topics[q], texts[d]) for q in list(run)[:3] for d in run[q][0][:20]]


def _one_by_one(ce: CrossEncoder, pairs: list[tuple[str, str]]) -> np.ndarray:
    return np.concatenate([ce.predict([p]) for p in pairs])


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_batched_scores_equal_one_by_one(which: str, tiny_dir: Path, minilm_dir: Path, dl19_pairs) -> None:
    ce = CrossEncoder(str(tiny_dir if which == "tiny" else minilm_dir), batch_size=7)
    pairs = dl19_pairs if which == "tiny" else dl19_pairs[:24]
    lengths = [len(x) for x in ce.tokenize(pairs)["input_ids"]]
    assert max(lengths) > 2 * min(lengths)  # batches really mix lengths, so padding is exercised
    batched = ce.predict(pairs)
    single = _one_by_one(ce, pairs)
    assert batched.dtype == np.float32 and batched.shape == (len(pairs),)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert np.std(batched) > 0  # a real model gives different pairs different scores
    np.testing.assert_allclose(ce.predict(pairs, batch_size=64), batched, atol=1e-5)


def test_onednn_linears_match_pytorch(minilm_dir: Path, dl19_pairs) -> None:
    fast, plain = CrossEncoder(str(minilm_dir)), CrossEncoder(str(minilm_dir), onednn=False)
    assert plain.params()["onednn"] is False and "onednn" not in fast.params()
    np.testing.assert_allclose(fast.predict(dl19_pairs[:16]), plain.predict(dl19_pairs[:16]), atol=1e-5)


def test_truncation_to_max_length(tiny_dir: Path, dl19_pairs) -> None:
    ce = CrossEncoder(str(tiny_dir), max_length=16)
    lengths = [len(x) for x in ce.tokenize(dl19_pairs)["input_ids"]]
    assert max(lengths) == 16
    full = CrossEncoder(str(tiny_dir))
    assert not np.allclose(ce.predict(dl19_pairs), full.predict(dl19_pairs))


def test_rank_orders_by_score(tiny_dir: Path, dl19_pairs) -> None:
    ce = CrossEncoder(str(tiny_dir))
    query = dl19_pairs[0][0]
    docs = [d for q, d in dl19_pairs if q == query]
    scores = ce.predict([(query, d) for d in docs])
    hits = ce.rank(query, docs, top_k=5, return_documents=True)
    assert [h["corpus_id"] for h in hits] == list(np.argsort(-scores, kind="stable")[:5])
    assert [h["text"] for h in hits] == [docs[h["corpus_id"]] for h in hits]
    assert hits[0]["score"] == pytest.approx(float(scores.max()))
    assert len(ce.rank(query, docs)) == len(docs)


def test_transform_reranks_with_docstore_texts(tiny_dir: Path, dl19_dir: Path, tmp_path: Path) -> None:
    topics = read_topics_tsv(dl19_dir / "topics.tsv")
    run = read_run(dl19_dir / "bm25-top100.run", topics)
    run = run.subset(list(run)[:2]).top_k(10)
    wanted = {d for _, (ids, _) in run.items() for d in ids}
    store = DocStore.build(
        tmp_path / "ds.sqlite", (d for d in read_corpus(dl19_dir / "passages.jsonl") if d.docid in wanted)
    )
    run.docstore = store
    ce = CrossEncoder(str(tiny_dir))
    out = ce(run)
    assert out.queries is run.queries and out.docstore is store
    for qid, (ids, scores) in out.items():
        assert sorted(ids) == sorted(run[qid][0])
        assert np.all(np.diff(scores) <= 0)
        expected = ce.predict([(topics[qid], store.get(d).contents) for d in ids])
        np.testing.assert_allclose(scores, expected, atol=1e-5)
    top = (ce % 3)(run)
    assert all(len(ids) == 3 for _, (ids, _) in top.items())


def test_reranker_needs_candidates_and_texts(tiny_dir: Path) -> None:
    ce = CrossEncoder(str(tiny_dir))
    with pytest.raises(IrkitError, match="given bare queries"):
        ce(Queries({"1": "a query"}))
    with pytest.raises(IrkitError, match="no docstore"):
        ce(Ranking.from_lists({"1": (["d1"], [1.0])}, Queries({"1": "a query"})))
    with pytest.raises(IrkitError, match="carries none"):
        ce(Ranking.from_lists({"1": (["d1"], [1.0])}))


def test_irkit_adapter_artifact_loads_through_irkit_tune(tiny_dir: Path, dl19_pairs, tmp_path: Path) -> None:
    import torch

    from irkit.tune import artifacts

    model, tok = artifacts.build("cross-encoder", str(tiny_dir), {"method": "connected", "rank": 4})
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.05)  # a "trained" adapter and head, so the artifact's weights matter
    out = artifacts.save(model, tmp_path / "ce", kind="cross-encoder", backbone=str(tiny_dir))
    ce = CrossEncoder(str(out))
    pairs = dl19_pairs[:12]
    expected = []
    with torch.inference_mode():
        for q, d in pairs:
            enc = tok(q, d, truncation=True, max_length=512, return_tensors="pt")
            expected.append(float(model.eval()(**enc).logits[0, 0]))
    np.testing.assert_allclose(ce.predict(pairs), expected, atol=1e-5)
    assert np.std(expected) > 0


def test_default_model_is_the_shipped_artifact_at_its_training_length() -> None:
    ce = CrossEncoder()
    assert ce.params()["model"] == DEFAULT_MODEL
    assert ce.max_length == 128  # from irkit_adapter.json, what it was trained with
    assert CrossEncoder(max_length=64).max_length == 64


def test_bad_model_is_an_irkit_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(IrkitError, match="cannot load cross-encoder"):
        CrossEncoder(str(tmp_path))
    with pytest.raises(IrkitError, match="unknown model 'no-such-org/no-such-model'"):
        CrossEncoder("no-such-org/no-such-model")
