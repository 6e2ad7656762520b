"""BiEncoder on real MiniLM weights and real SciFact texts, against a plain per-text computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
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
    with pytest.raises(IrkitError, match="cannot load encoder"):
        BiEncoder(str(tmp_path / "no-such-model"))
