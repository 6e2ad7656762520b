"""BiEncoder on real MiniLM weights and real SciFact texts, against a plain per-text computation; prefixes
and Dense layers of sentence-transformers folders, and their enforcement by the dense index and retriever."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ce_models import save_random_bert
from fetched import needs
from transformers import AutoModel

from irkit.data.io import read_corpus, read_queries
from irkit.errors import IrkitError
from irkit.models.encoder import BiEncoder
from irkit.models.registry import resolve


@pytest.fixture(scope="module")
def encoder() -> BiEncoder:
    return BiEncoder("minilm", max_length=256)


@pytest.fixture(scope="module")
def texts(scifact_dir) -> list[str]:
    """Long abstracts (most hit the 256-token cap) interleaved with short queries."""
    docs = [d.contents for d in itertools.islice(read_corpus(scifact_dir / "corpus.jsonl"), 6)]
    queries = [q for _, q in itertools.islice(read_queries(scifact_dir / "queries.jsonl").items(), 6)]
    return [t for pair in zip(docs, queries, strict=True) for t in pair]


def reference(texts: list[str], tokenizer) -> np.ndarray:
    """One text at a time, no padding, eager attention: mean of token states, L2-normalised."""
    model = AutoModel.from_pretrained(resolve("minilm"), attn_implementation="eager").eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state[0]
            rows.append(torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy())
    return np.stack(rows)


def test_matches_per_text_reference_in_input_order(encoder, texts):
    ref = reference(texts, encoder.tokenizer)
    lengths = [len(encoder.tokenizer(t)["input_ids"]) for t in texts]
    assert max(lengths) > 256 and min(lengths) < 40  # mixed lengths, so sorting reorders
    for onednn in (True, False):
        encoder.onednn = onednn
        try:
            got = encoder.encode(texts, batch_size=3)
        finally:
            encoder.onednn = True
        assert got.dtype == np.float32 and got.shape == (len(texts), 384)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert (got * ref).sum(1).min() >= 0.9999, onednn


def test_order_does_not_depend_on_batching(encoder, texts):
    whole = encoder.encode(texts, batch_size=32)
    backwards = encoder.encode(texts[::-1], batch_size=1)[::-1]
    assert (whole * backwards).sum(1).min() >= 0.9999


def test_empty_input(encoder):
    out = encoder.encode([])
    assert out.shape == (0, encoder.dim) and out.dtype == np.float32


def test_weights_changed_in_place_are_seen(texts):
    """The packed oneDNN weights follow the model: a tuned model encodes with its new weights."""
    enc = BiEncoder("minilm")
    before = enc.encode(texts[:2])
    with torch.no_grad():
        enc.model.encoder.layer[0].intermediate.dense.weight.mul_(0.5)
    after = enc.encode(texts[:2])
    enc.onednn = False
    stock = enc.encode(texts[:2])
    assert (after * stock).sum(1).min() >= 0.9999
    assert (after * before).sum(1).max() < 0.999


def test_model_is_left_trainable(encoder, texts):
    """oneDNN kernels (and the fused feed-forward GELU) are used only inside ``encode``."""
    with encoder._fast(encoder.model):
        assert "forward" in encoder.model.encoder.layer[0].intermediate.__dict__  # the fused path is live
    encoder.encode(texts[:2])
    assert all("forward" not in m.__dict__ for m in encoder.model.modules())
    enc = encoder.tokenizer(texts[:1], return_tensors="pt")
    out = encoder.model(**enc).last_hidden_state.sum()
    out.backward()
    assert encoder.model.encoder.layer[0].intermediate.dense.weight.grad is not None
    encoder.model.zero_grad(set_to_none=True)


def test_unknown_model_is_irkit_error(tmp_path):
    with pytest.raises(IrkitError, match="unknown model"):
        BiEncoder(str(tmp_path / "no-such-model"))


@pytest.fixture(scope="module")
def prefixed_dir(tmp_path_factory) -> Path:
    """A tiny random BERT saved as a sentence-transformers folder with query/document prompts,
    mean pooling and a Dense layer 32 -> 16 (the layout of EmbeddingGemma's folder)."""
    from safetensors.torch import save_file

    out = save_random_bert(tmp_path_factory.mktemp("prefixed") / "model", hidden=32)
    (out / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: ", "STS": "sts: "}})
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False, "include_prompt": True})
    )
    (out / "2_Dense").mkdir()
    (out / "2_Dense" / "config.json").write_text(
        json.dumps(
            {
                "in_features": 32,
                "out_features": 16,
                "bias": True,
                "activation_function": "torch.nn.modules.linear.Identity",
            }
        )
    )
    torch.manual_seed(1)
    save_file(
        {"linear.weight": torch.randn(16, 32), "linear.bias": torch.randn(16)}, out / "2_Dense" / "model.safetensors"
    )
    return out


def test_prompts_and_dense_layers_of_a_sentence_transformers_folder(prefixed_dir):
    from safetensors.torch import load_file

    enc = BiEncoder(str(prefixed_dir))
    assert (enc.query_prefix, enc.document_prefix, enc.dim) == ("query: ", "passage: ", 16)
    with pytest.raises(IrkitError, match="use encode_queries or encode_documents"):
        enc.encode(["fleas"])
    texts = ["how long do fleas live", "A flea can live up to a year."]
    model = AutoModel.from_pretrained(prefixed_dir).eval()
    dense = load_file(prefixed_dir / "2_Dense" / "model.safetensors")
    for method, prefix in ((enc.encode_queries, "query: "), (enc.encode_documents, "passage: ")):
        expected = []
        with torch.no_grad():
            for text in texts:
                hidden = model(**enc.tokenizer(prefix + text, return_tensors="pt")).last_hidden_state[0]
                vec = dense["linear.weight"] @ hidden.mean(0) + dense["linear.bias"]
                expected.append(torch.nn.functional.normalize(vec, dim=0).numpy())
        np.testing.assert_allclose(method(texts, batch_size=1), np.stack(expected), atol=1e-5)
    plain = BiEncoder(str(prefixed_dir), query_prefix="", document_prefix="")
    assert plain.symmetric and plain.encode(texts).shape == (2, 16)


def test_training_embeddings_are_the_encoded_vectors_on_the_autograd_graph(prefixed_dir):
    """``embed`` (the trainer's forward pass) pools, applies Dense and normalises exactly as ``encode`` does."""
    enc = BiEncoder(str(prefixed_dir))
    texts = ["how long do fleas live", "A flea can live up to a year, longer in a warm house."]
    enc.model.train()
    vecs = enc.embed(["query: " + texts[0], "passage: " + texts[1]])
    vecs.sum().backward()
    assert next(enc.model.parameters()).grad is not None
    enc.model.eval()
    with torch.no_grad():
        again = enc.embed(["query: " + texts[0], "passage: " + texts[1]]).numpy()
    np.testing.assert_allclose(again[0], enc.encode_queries(texts[:1])[0], atol=1e-5)
    np.testing.assert_allclose(again[1], enc.encode_documents(texts[1:])[0], atol=1e-5)


def test_bi_encoder_reranker_scores_by_cosine_with_prefixes_from_yaml(prefixed_dir):
    """``{bi_encoder: {...}}``: the cosine of the prefixed query (cut at its own length) and each document."""
    import pickle

    from irkit.pipeline.config import load_pipeline
    from irkit.rerank.bi_encoder import BiEncoderReranker

    stage = load_pipeline({"pipeline": [{"bi_encoder": {"model": str(prefixed_dir), "query_max_length": 8}}]})
    assert isinstance(stage, BiEncoderReranker)
    query = "how long do fleas live in a warm house in the winter"
    docs = ["A flea can live up to a year.", "Cats sleep sixteen hours a day.", "A flea can live up to a year."]
    enc = BiEncoder(str(prefixed_dir))
    short = BiEncoder(str(prefixed_dir), max_length=8)
    expected = enc.encode_documents(docs) @ short.encode_queries([query])[0]
    np.testing.assert_allclose(stage.score(query, docs), expected, atol=1e-5)
    assert not np.allclose(expected, enc.encode_documents(docs) @ enc.encode_queries([query])[0], atol=1e-4)
    rebuilt = pickle.loads(pickle.dumps(stage))  # stages pickle by their params (Ray workers)
    assert rebuilt.params() == {"model": str(prefixed_dir), "max_length": 256, "query_max_length": 8, "batch_size": 32}
    np.testing.assert_allclose(rebuilt.score(query, docs), expected, atol=1e-5)


def test_unsupported_sentence_transformers_modules_are_refused(prefixed_dir, tmp_path):
    import shutil

    other = shutil.copytree(prefixed_dir, tmp_path / "cls")
    (other / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(IrkitError, match=r"mean of tokens; this model asks for \['pooling_mode_cls_token'\]"):
        BiEncoder(str(other))
    (other / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (other / "2_Dense" / "config.json").write_text(
        json.dumps({"in_features": 32, "out_features": 16, "bias": True, "activation_function": "torch.nn.Tanh"})
    )
    with pytest.raises(IrkitError, match=r"activation 'torch\.nn\.Tanh' is not supported"):
        BiEncoder(str(other))


def test_index_manifest_records_prefixes_and_dense_enforces_them(prefixed_dir, tmp_path):
    """Documents are encoded with the document prefix, queries always with the manifest's query
    prefix; an encoder that would prefix queries differently (here: not at all) is refused."""
    import shutil

    from irkit.data.docstore import Doc
    from irkit.data.types import Queries
    from irkit.index.dense import build_dense_index
    from irkit.retrieve.dense import Dense

    docs = [Doc("a", "", "A flea can live up to a year."), Doc("b", "", "Paris is the capital of France.")]
    index = build_dense_index(docs, tmp_path / "index", model=str(prefixed_dir), show_progress=False)
    assert (index.manifest["query_prefix"], index.manifest["document_prefix"]) == ("query: ", "passage: ")
    enc = BiEncoder(str(prefixed_dir))
    np.testing.assert_allclose(index.vectors(), enc.encode_documents([d.text for d in docs]), atol=1e-6)

    dense = Dense(index=tmp_path / "index")
    run = dense(Queries.from_pairs([("q", "how long do fleas live")]))
    expected = index.vectors() @ enc.encode_queries(["how long do fleas live"])[0]
    np.testing.assert_allclose(run["q"][1], np.sort(expected)[::-1], atol=1e-5)

    unprefixed = shutil.copytree(prefixed_dir, tmp_path / "no-prompts")
    (unprefixed / "config_sentence_transformers.json").unlink()
    with pytest.raises(
        IrkitError, match=r"prefixes queries with '', but this index was built for queries prefixed with 'query: '"
    ):
        Dense(index=tmp_path / "index", model=str(unprefixed))


def test_bi_encoder_reranker_scores_with_the_index_s_stored_vectors(slice_indexes, scifact_dir, monkeypatch):
    """On real MiniLM and a SciFact slice: reranking Dense's own top 30 with its index's stored
    vectors gives Dense's scores and the plain reranker's, encodes no candidate the index holds,
    and encodes (with the document prefix and length of the index) those it does not hold."""
    import pickle

    from irkit.data.docstore import Doc
    from irkit.data.types import Queries
    from irkit.pipeline.config import load_pipeline
    from irkit.rerank.bi_encoder import BiEncoderReranker
    from irkit.retrieve.dense import Dense

    ix = slice_indexes / "indexes" / "scifact-minilm"
    stored = load_pipeline({"pipeline": [{"bi_encoder": {"index": str(ix)}}]})
    assert isinstance(stored, BiEncoderReranker)
    assert stored.params() == {"index": str(ix), "batch_size": 32}
    queries = Queries.from_pairs(list(itertools.islice(read_queries(scifact_dir / "queries.jsonl").items(), 3)))
    dense = Dense(index=ix)
    calls: list[int] = []
    encode = stored.documents.encode_documents
    monkeypatch.setattr(stored.documents, "encode_documents", lambda t, *a: calls.append(len(t)) or encode(t, *a))
    run = (dense % 30)(queries)
    reranked = stored(run)
    assert calls == []  # every candidate's vector came from the index
    for q in queries:
        before = dict(zip(*run[q], strict=True))
        docids, scores = reranked[q]
        assert len(docids) == 30
        np.testing.assert_allclose(scores, [before[d] for d in docids], atol=1e-5)

    plain = BiEncoderReranker("minilm")
    q = next(iter(queries))
    docs = dense.index.docstore.get_many(list(run[q][0][:5]))
    outside = [Doc("not-in-the-index", docs[0].title, docs[0].text), docs[1].contents, *docs[2:]]
    np.testing.assert_allclose(stored.score(queries[q], outside), plain.score(queries[q], outside), atol=1e-5)
    assert calls == [2]  # the unknown docid and the bare text, not the three the index holds
    rebuilt = pickle.loads(pickle.dumps(stored))  # stages pickle by their params (Ray workers)
    np.testing.assert_allclose(rebuilt.score(queries[q], docs), stored.score(queries[q], docs), atol=1e-6)
    with pytest.raises(IrkitError, match="takes its lengths and backend from the index's manifest"):
        BiEncoderReranker(index=ix, max_length=128)
    with pytest.raises(IrkitError, match="max_length and query_max_length must be >= 8"):
        BiEncoderReranker("minilm", max_length=0)  # 0 is a bad length, not "the default"


def test_index_lookup_reconstructs_ivf_and_keeps_the_prefixes(prefixed_dir, tmp_path):
    """An IVF index returns its stored vectors (through a direct map) and the reranker over it
    prefixes queries and the documents it encodes as the index was built."""
    from irkit.data.docstore import Doc
    from irkit.index.dense import build_dense_index
    from irkit.rerank.bi_encoder import BiEncoderReranker

    rng = np.random.default_rng(0)
    words = ["flea", "cat", "dog", "year", "house", "winter", "summer", "paris", "france", "city", "capital"]
    docs = [Doc(f"d{i}", "", " ".join(rng.choice(words, 8))) for i in range(200)]
    index = build_dense_index(docs, tmp_path / "ivf", model=str(prefixed_dir), factory="IVF4,Flat", show_progress=False)
    enc = BiEncoder(str(prefixed_dir))
    vectors, found = index.lookup(["d7", "missing", "d3"])
    assert found.tolist() == [True, False, True]
    np.testing.assert_allclose(vectors, enc.encode_documents([docs[7].text, docs[3].text]), atol=1e-6)
    stored = BiEncoderReranker(index=tmp_path / "ivf")
    query = "how long do fleas live in winter"
    candidates = [docs[7], "A flea can live up to a year.", docs[3]]
    expected = enc.encode_documents([docs[7].text, "A flea can live up to a year.", docs[3].text])
    np.testing.assert_allclose(stored.score(query, candidates), expected @ enc.encode_queries([query])[0], atol=1e-5)


@pytest.fixture(scope="module")
def gemma():
    return BiEncoder("embeddinggemma-300m")


@needs("embeddinggemma-300m")
def test_embeddinggemma_matches_sentence_transformers(gemma):
    """Opt-in model (Gemma Terms of Use): skipped unless fetched with --accept-licence."""
    from sentence_transformers import SentenceTransformer

    assert (gemma.query_prefix, gemma.document_prefix, gemma.dim) == (
        "task: search result | query: ",
        "title: none | text: ",
        768,
    )
    queries = ["how long do fleas live", "what is the capital of france"]
    docs = ["A flea can live up to a year, depending on its hosts.", "Paris is the capital and largest city of France."]
    st = SentenceTransformer(resolve("embeddinggemma-300m"), device="cpu")
    np.testing.assert_allclose(
        gemma.encode_queries(queries), st.encode(queries, prompt_name="query", normalize_embeddings=True), atol=1e-4
    )
    np.testing.assert_allclose(
        gemma.encode_documents(docs), st.encode(docs, prompt_name="document", normalize_embeddings=True), atol=1e-4
    )
