"""SPLADE: the vocabulary-row scores equal the full masked-LM computation, on a tiny random model
and on the real SPLADE-tiny weights; document term vectors are the quantised weights."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from fetched import needs
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

from irkit.data.io import read_corpus, read_queries
from irkit.errors import IrkitError
from irkit.models.registry import resolve
from irkit.models.splade import Splade

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve("minilm"))


@pytest.fixture(scope="module")
def tiny(tokenizer) -> Splade:
    """A randomly initialised 2-layer BertForMaskedLM with the real 30,522-term vocabulary; a negative
    output bias makes its weights sparse (a few hundred terms per text), as trained SPLADE weights are."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    mlm = BertForMaskedLM(config)
    with torch.no_grad():
        mlm.get_output_embeddings().bias.fill_(-0.4)
    return Splade.from_model(mlm, tokenizer, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def texts(scifact_dir) -> list[str]:
    """SciFact abstracts (over the token cap) and short claims: mixed lengths, so batches are padded."""
    docs = [d.contents for d in itertools.islice(read_corpus(scifact_dir / "corpus.jsonl"), 5)]
    queries = [q for _, q in itertools.islice(read_queries(scifact_dir / "queries.jsonl").items(), 5)]
    return [t for pair in zip(docs, queries, strict=True) for t in pair]


def reference_weights(splade: Splade, texts: list[str]) -> np.ndarray:
    """One text at a time, no padding, the model's own full-vocabulary MLM logits:
    max over tokens of log(1 + relu(logits))."""
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = splade.tokenizer(text, truncation=True, max_length=splade.max_length, return_tensors="pt")
            logits = splade.mlm(**enc).logits[0]
            rows.append(torch.log1p(torch.relu(logits)).amax(dim=0).numpy())
    return np.stack(rows)


def check_scores(splade: Splade, query: str, docs: list[str]) -> None:
    ref = reference_weights(splade, [query, *docs])
    expected = ref[1:] @ ref[0]
    for onednn in (True, False):
        splade._fast.enabled = onednn
        got = splade.score(query, docs, batch_size=3)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    splade._fast.enabled = True


def test_vocabulary_rows_equal_full_vocabulary_scores(tiny, texts):
    lengths = [len(tiny.tokenizer(t)["input_ids"]) for t in texts]
    assert max(lengths) > MAX_LENGTH and min(lengths) < 30  # truncation and padding both exercised
    query = texts[1]
    assert 0 < tiny.encode([query]).nnz < 200  # the row trick skips most of the vocabulary
    check_scores(tiny, query, texts)


def test_encode_is_the_reference_in_input_order(tiny, texts):
    ref = reference_weights(tiny, texts)
    for batch_size in (1, 4):
        got = tiny.encode(texts, batch_size=batch_size)
        assert got.shape == (len(texts), tiny.vocab_size) and got.dtype == np.float32
        np.testing.assert_allclose(got.toarray(), ref, rtol=1e-5, atol=1e-6)
    assert got.nnz == np.count_nonzero(ref)  # sparse: zeros are not stored


def test_terms_are_quantised_weights(tiny, texts):
    weights = tiny.encode(texts[:3]).toarray()
    vectors = tiny.terms(texts[:3], scale=100)
    for row, vector in zip(weights, vectors, strict=True):
        ids = tiny.tokenizer.convert_tokens_to_ids(list(vector))
        assert all(isinstance(w, int) and w > 0 for w in vector.values())
        assert [vector[t] for t in vector] == [int(np.rint(100 * row[i])) for i in ids]
        kept = np.flatnonzero(np.rint(100 * row) > 0)
        assert sorted(ids) == kept.tolist()  # every term that survives quantisation, no other
        json.dumps({"id": "d", "vector": vector})  # Anserini JsonVectorCollection line


def test_empty_inputs(tiny):
    assert tiny.score("a query", []).shape == (0,)
    assert tiny.encode([]).shape == (0, tiny.vocab_size)
    assert tiny.terms([]) == []


def test_a_head_without_bert_transform_is_refused(tokenizer):
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    with pytest.raises(IrkitError, match="BERT masked-LM head"):
        Splade.from_model(DistilBertForMaskedLM(config), tokenizer)


@pytest.fixture(scope="module")
def splade_tiny() -> Splade:
    return Splade("splade-tiny")


@pytest.fixture(scope="module")
def dl19(dl19_dir):
    """Five DL19 queries with their BM25 top 100 and judgments."""
    from irkit.data.io import read_qrels, read_run, read_topics_tsv

    topics = read_topics_tsv(dl19_dir / "topics.tsv")
    qrels = read_qrels(dl19_dir / "qrels.txt")
    run = read_run(dl19_dir / "bm25-top100.run")
    qids = [q for q in run if q in qrels][:5]
    wanted = {d for q in qids for d in run[q][0]}
    passages = {d.docid: d.contents for d in read_corpus(dl19_dir / "passages.jsonl") if d.docid in wanted}
    return [(topics[q], [(d, passages[d]) for d in run[q][0]], qrels[q]) for q in qids]


@needs("splade-tiny")
def test_real_splade_tiny_vocabulary_rows_equal_full_scores(splade_tiny, dl19):
    for query, docs, _ in dl19[:3]:
        check_scores(splade_tiny, query, [text for _, text in docs[:6]])


@needs("splade-tiny")
def test_real_splade_tiny_puts_relevant_passages_first(splade_tiny, dl19):
    """On each of five DL19 queries, judged-relevant BM25 candidates outscore judged non-relevant ones."""
    for query, docs, judged in dl19:
        scores = dict(zip([d for d, _ in docs], splade_tiny.score(query, [t for _, t in docs]), strict=True))
        relevant = [scores[d] for d in scores if judged.get(d, 0) >= 2]
        non_relevant = [scores[d] for d in scores if d in judged and judged[d] == 0]
        assert relevant and non_relevant, query
        assert np.mean(relevant) > np.mean(non_relevant), query


@needs("splade-tiny")
def test_splade_reranker_stage_orders_by_splade_scores(splade_tiny, dl19, tmp_path):
    """The `splade` stage (Python and YAML) reranks a candidate list by exactly Splade.score."""
    from irkit.data.docstore import Doc, DocStore
    from irkit.data.types import Queries, Ranking
    from irkit.pipeline import config
    from irkit.rerank.splade import SpladeReranker

    queries = Queries({f"q{i}": query for i, (query, _, _) in enumerate(dl19[:2])})
    texts = {d: t for _, docs, _ in dl19[:2] for d, t in docs[:8]}
    store = DocStore.build(tmp_path / "docs.sqlite", [Doc(d, "", t) for d, t in texts.items()])
    results = {f"q{i}": ([d for d, _ in docs[:8]], np.arange(8, 0, -1.0)) for i, (_, docs, _) in enumerate(dl19[:2])}
    candidates = Ranking(results, queries, store)
    stage = config.load_pipeline({"pipeline": [{"splade": {"max_length": 256}}]})
    assert isinstance(stage, SpladeReranker) and config.to_dict(stage) == {"pipeline": [{"splade": stage.params()}]}
    ranked = stage(candidates)
    for q, (query, docs, _) in zip(queries, dl19[:2], strict=True):
        expected = splade_tiny.score(query, [t for _, t in docs[:8]])
        order = np.argsort(-expected, kind="stable")
        assert ranked[q][0] == [docs[i][0] for i in order]
        np.testing.assert_allclose(ranked[q][1], expected[order], rtol=1e-6)
    with pytest.raises(IrkitError, match="batch_size"):
        SpladeReranker(batch_size=0)
