"""ICR mechanics on a tiny random Llama (GQA) with the real SmolLM2 tokenizer and real DL19 passages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llm_models import smollm2_tokenizer, tiny_llama, tiny_llm

from irkit.data.docstore import Doc, DocStore
from irkit.data.io import read_topics_tsv
from irkit.data.types import Ranking
from irkit.errors import IrkitError
from irkit.pipeline.stage import doc_text
from irkit.rerank.icr import ICR

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def passages(dl19_dir: Path) -> list[Doc]:
    docs = []
    with open(dl19_dir / "passages.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append(Doc(d["_id"], d.get("title", ""), d["text"]))
            if len(docs) == 8:
                break
    return docs


@pytest.fixture(scope="module")
def icr(tokenizer) -> ICR:
    return ICR(tiny_llm(tokenizer, initializer_range=0.3), max_doc_tokens=48)


def test_spans_match_retokenisation(icr: ICR, passages: list[Doc]) -> None:
    texts = [doc_text(p) for p in passages[:5]]
    p = icr.prompt("how long do fleas live", texts)
    tok = icr.llm.tokenizer
    # the ids the model sees are exactly what the whole prompt text tokenises to
    assert p.prefix + p.suffix == tok(p.prefix_text + p.suffix_text, add_special_tokens=False)["input_ids"]
    # reversed order: input document i is shown as [N - i], so the first-stage top one sits last
    for i, (s, e) in enumerate(p.spans):
        assert tok.decode(p.prefix[s:e]) == f"[{5 - i}] {icr.llm.truncate(texts[i].strip(), 48).strip()}"
    starts = [s for s, _ in p.spans]
    assert starts == sorted(starts, reverse=True)
    assert p.spans[0][1] <= len(p.prefix) and "Query: how long do fleas live" in p.suffix_text


def test_hook_rows_equal_eager_attentions(tokenizer, passages: list[Doc]) -> None:
    model = tiny_llama(tokenizer, initializer_range=0.3)
    eager = tiny_llama(tokenizer, initializer_range=0.3, attn="eager")
    eager.load_state_dict(model.state_dict())
    icr = ICR(tiny_llm(tokenizer, initializer_range=0.3), max_doc_tokens=32)
    icr.llm.model.load_state_dict(model.state_dict())
    p = icr.prompt("what is a flea", [doc_text(d) for d in passages[:4]])
    ids = p.prefix + p.suffix
    rows = icr.query_rows(ids, len(p.prefix), keep_layers=True)
    with torch.inference_mode():
        out = eager(input_ids=torch.tensor([ids]), output_attentions=True)
    assert len(rows.layers) == len(out.attentions) == 2
    for layer, full in enumerate(out.attentions):
        expect = full[0, :, len(p.prefix) :, :]
        got = rows.layers[layer]
        assert got.shape == (4, len(p.suffix), len(ids))  # heads x query span x T: no T x T map
        torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-4)
    total = sum(full[0, :, len(p.prefix) :, :].mean(1).sum(0) for full in out.attentions)
    torch.testing.assert_close(rows.total, total, atol=1e-5, rtol=1e-4)


def test_kv_reuse_equals_full_recompute(icr: ICR, passages: list[Doc]) -> None:
    from transformers import DynamicCache

    texts = [doc_text(d) for d in passages[:6]]
    real, calib = icr.prompt("flea lifespan", texts), icr.prompt("N/A", texts)
    assert real.prefix == calib.prefix
    n = len(real.prefix)
    cache = DynamicCache(config=icr.llm.model.config)
    icr.query_rows(calib.prefix + calib.suffix, n, cache)
    cache.crop(-len(calib.suffix))
    reused = icr.query_rows(real.suffix, n, cache).total
    full = icr.query_rows(real.prefix + real.suffix, n).total
    torch.testing.assert_close(reused, full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_exactly_two_forward_passes(icr: ICR, passages: list[Doc], n: int) -> None:
    calls = []
    handle = icr.llm.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        before = icr.forward_passes
        scores = icr.score("flea", passages[:n])
    finally:
        handle.remove()
    assert len(calls) == 2 and icr.forward_passes - before == 2
    assert scores.shape == (n,) and np.isfinite(scores).all()


def test_transform_is_a_permutation(icr: ICR, passages: list[Doc], dl19_dir: Path, tmp_path: Path) -> None:
    store = DocStore.build(tmp_path / "docs.sqlite", passages)
    topics = read_topics_tsv(dl19_dir / "topics.tsv")
    qids = list(topics)[:2]
    docids = [d.docid for d in passages]
    run = Ranking.from_lists({q: (docids, np.arange(len(docids), 0, -1)) for q in qids}, topics.subset(qids), store)
    out = icr(run)
    for q in qids:
        ranked, scores = out[q]
        assert sorted(ranked) == sorted(docids)
        assert list(scores) == sorted(scores, reverse=True)
        assert out.meta[q] == {"forward_passes": 2}
        # the first-stage score of each document travels with it
        assert dict(zip(ranked, out.column("input_score", q), strict=True)) == dict(zip(docids, run[q][1], strict=True))
    assert out.docstore is store and icr.params()["max_doc_tokens"] == 48


def test_truncation_and_context_limit(tokenizer, passages: list[Doc]) -> None:
    short = ICR(tiny_llm(tokenizer, context=512), max_doc_tokens=16)
    p = short.prompt("q", [doc_text(d) for d in passages[:3]])
    for s, e in p.spans:
        assert e - s <= 16 + 4  # the budget plus the "[i] " label
    with pytest.raises(IrkitError, match="at most 512"):
        ICR(short.llm, max_doc_tokens=200).score("q", passages)


def test_needs_docstore(icr: ICR) -> None:
    from irkit.data.types import Queries

    run = Ranking.from_lists({"1": (["a"], [1.0])}, Queries({"1": "q"}))
    with pytest.raises(IrkitError, match="docstore"):
        icr(run)


def test_yaml_round_trip_from_a_model_directory(tokenizer, tmp_path: Path) -> None:
    from irkit.pipeline.config import load_pipeline, to_dict

    tiny_llama(tokenizer).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    spec = {
        "pipeline": [
            {"icr": {"model": str(tmp_path / "tiny"), "max_doc_tokens": 32}},
            {"prp": {"model": str(tmp_path / "tiny"), "variant": "sorting", "passes": 3}},
        ]
    }
    pipe = load_pipeline(spec)
    icr, prp = pipe.stages
    assert isinstance(icr, ICR) and icr.max_doc_tokens == 32 and prp.variant == "sorting" and prp.passes == 3
    assert load_pipeline(to_dict(pipe)).stages[1].params() == prp.params()
