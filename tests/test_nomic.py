"""nomic-bert from GGUF tensors reproduces llama.cpp's embeddings of fixed texts (tests/data), for a
tiny random model rebuilt here and for the real nomic-embed-text-v1.5; prefixes are applied."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from fetched import needs
from nomic_reference import DOCUMENTS, QUERIES, prefixed, write_tiny_nomic

from irkit.errors import IrkitError
from irkit.models.encoder import BiEncoder
from irkit.models.nomic import NomicBert, find_gguf
from irkit.models.registry import resolve

REFERENCE = json.loads((Path(__file__).parent / "data" / "nomic_reference.json").read_text(encoding="utf-8"))
TOLERANCE = 1e-4  # largest allowed difference of any vector component


def check_against_reference(encoder: BiEncoder, expected: list[list[float]]) -> None:
    assert REFERENCE["texts"] == prefixed()
    for batch_size in (1, 4):
        got = np.concatenate(
            [encoder.encode_queries(QUERIES, batch_size=batch_size), encoder.encode_documents(DOCUMENTS, batch_size)]
        )
        assert got.shape == (len(expected), encoder.dim)
        np.testing.assert_allclose(got, np.array(expected), rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-nomic")
    write_tiny_nomic(folder / "model.gguf")
    return folder


def test_tiny_model_reproduces_llama_cpp(tiny_dir: Path) -> None:
    encoder = BiEncoder(str(tiny_dir))
    assert (encoder.query_prefix, encoder.document_prefix) == ("search_query: ", "search_document: ")
    lengths = [len(encoder.tokenizer(t)["input_ids"]) for t in prefixed()]
    assert min(lengths) < 15 < 60 < max(lengths)  # padded batches, rotary angles far from position 0
    for onednn in (True, False):
        encoder.onednn = onednn
        check_against_reference(encoder, REFERENCE["tiny"])


def test_f16_weights_load_as_their_f32_values(tiny_dir: Path, tmp_path: Path) -> None:
    f16 = write_tiny_nomic(tmp_path / "f16.gguf", f16=True)
    assert f16.stat().st_size < 0.6 * (tiny_dir / "model.gguf").stat().st_size
    a, b = NomicBert.from_gguf(tiny_dir / "model.gguf"), NomicBert.from_gguf(f16)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert x.dtype == y.dtype == torch.float32 and torch.equal(x, y), name


def test_asymmetric_model_refuses_plain_encode(tiny_dir: Path) -> None:
    encoder = BiEncoder(str(tiny_dir))
    with pytest.raises(IrkitError, match="use encode_queries or encode_documents"):
        encoder.encode(QUERIES)
    plain = BiEncoder(str(tiny_dir), query_prefix="", document_prefix="")  # explicitly symmetric
    np.testing.assert_allclose(plain.encode(prefixed()[:2]), encoder.encode_queries(QUERIES), atol=1e-6)


def test_bad_gguf_files_are_irkit_errors(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    other = tmp_path / "llama.gguf"
    writer = GGUFWriter(str(other), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(IrkitError, match="architecture is 'llama', expected 'nomic-bert'"):
        NomicBert.from_gguf(other)
    with pytest.raises(IrkitError, match="cannot read GGUF"):
        NomicBert.from_gguf(tmp_path / "missing.gguf")
    (tmp_path / "two").mkdir()
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / "two" / name).write_bytes(b"")
    with pytest.raises(IrkitError, match="more than one GGUF"):
        find_gguf(tmp_path / "two")


def test_longer_input_than_the_context_is_refused(tiny_dir: Path) -> None:
    model = NomicBert.from_gguf(tiny_dir / "model.gguf")
    with pytest.raises(IrkitError, match="at most 512 tokens"):
        model(torch.ones((1, 513), dtype=torch.long))


@pytest.fixture(scope="module")
def nomic() -> BiEncoder:
    return BiEncoder("nomic-embed-text-v1.5")


@needs("nomic-embed-text-v1.5")
def test_real_model_reproduces_llama_cpp(nomic: BiEncoder) -> None:
    check_against_reference(nomic, REFERENCE["real"])


@needs("nomic-embed-text-v1.5")
def test_real_vocabulary_is_the_minilm_tokenizers() -> None:
    """llama.cpp spells word starts with '▁' and drops WordPiece's '##'; undone, the lists are equal."""
    from gguf import GGUFReader

    reader = GGUFReader(find_gguf(resolve("nomic-embed-text-v1.5")))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    kinds = reader.fields["tokenizer.ggml.token_type"].contents()
    control = 3
    restored = [
        t[1:] if t.startswith("▁") else t if k == control or (t.startswith("[") and t.endswith("]")) else "##" + t
        for t, k in zip(tokens, kinds, strict=True)
    ]
    vocab = (Path(resolve("minilm")) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert restored == vocab


@needs("nomic-embed-text-v1.5")
def test_real_model_ranks_relevant_scifact_abstracts_above_random_ones(nomic: BiEncoder, scifact_dir: Path) -> None:
    from irkit.data.datasets import load_dataset

    ds = load_dataset(scifact_dir, split="test")
    docs = {d.docid: d.contents for d in ds.docs()}
    qids = list(ds.qrels)[:5]
    relevant = [next(iter(ds.qrels[q])) for q in qids]
    judged = {d for q in qids for d in ds.qrels[q]}
    others = [d for d in random.Random(0).sample(sorted(docs), 25) if d not in judged][:20]
    vectors = nomic.encode_documents([docs[d] for d in relevant + others])
    scores = nomic.encode_queries([ds.queries[q] for q in qids]) @ vectors.T
    for i, qid in enumerate(qids):
        assert scores[i, i] > scores[i, len(qids) :].max(), qid
