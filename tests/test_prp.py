"""PRP: variants over plain comparators, and the LLM judge on a tiny random Llama with the SmolLM2 tokenizer."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from llm_models import smollm2_tokenizer, tiny_llm

from irkit.data.docstore import Doc, DocStore
from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.rerank.prp import PROMPT, PRP, both_orders

torch = pytest.importorskip("torch")


def always_a(query: str, a: str, b: str) -> str:
    return "A"


def perfect(query: str, a: str, b: str) -> str:
    """Prefers the passage with the higher planted relevance ``rel=<int>``."""
    return "A" if int(a.split("=")[1]) > int(b.split("=")[1]) else "B"


def test_both_orders() -> None:
    assert both_orders("A", "B") == 1.0 and both_orders("B", "A") == 0.0
    assert both_orders("A", "A") == both_orders("B", "B") == both_orders("?", "B") == 0.5


@pytest.mark.parametrize("variant", ["allpair", "sorting", "sliding"])
def test_always_a_gives_ties_and_keeps_input_order(variant: str) -> None:
    prp = PRP(variant=variant, passes=3, comparator=always_a)
    texts = [f"doc {i}" for i in range(7)]
    scores = prp.score("q", texts)
    assert list(np.argsort(-scores, kind="stable")) == list(range(7))
    if variant == "allpair":
        assert np.all(scores == 3.0)  # 6 ties of 0.5 each


@pytest.mark.parametrize("n,k", [(10, 3), (13, 5), (6, 6)])
def test_sorting_recovers_planted_top_k(n: int, k: int) -> None:
    rels = list(range(n))
    random.Random(n).shuffle(rels)
    texts = [f"rel={r}" for r in rels]
    prp = PRP(variant="sorting", passes=k, comparator=perfect)
    order = np.argsort(-prp.score("q", texts), kind="stable")
    assert [rels[i] for i in order[:k]] == list(range(n - 1, n - 1 - k, -1))
    rest = sorted(order[k:])
    assert list(order[k:]) == rest  # the rest keeps first-stage order
    assert prp.comparisons < n * (n - 1) // 2 or k == n


def test_call_counts_per_variant() -> None:
    n = 16
    texts = [f"rel={r}" for r in range(n)]  # worst case for bubbling: the best document is last
    allpair = PRP(variant="allpair", comparator=perfect)
    assert list(np.argsort(-allpair.score("q", texts))) == list(range(n - 1, -1, -1))
    assert allpair.comparisons == n * (n - 1) // 2 and allpair.llm_calls == n * (n - 1)
    sliding = PRP(variant="sliding", passes=3, comparator=perfect)
    order = np.argsort(-sliding.score("q", texts), kind="stable")
    assert list(order[:3]) == [15, 14, 13]
    assert sliding.comparisons == (n - 1) + (n - 2) + (n - 3) and sliding.llm_calls == 2 * sliding.comparisons
    sorting = PRP(variant="sorting", passes=3, comparator=perfect)
    sorting.score("q", texts)
    # build-heap is linear and each extraction logarithmic: well under all pairs
    assert 0 < sorting.comparisons <= 2 * n + 2 * 3 * math.ceil(math.log2(n)) < n * (n - 1) // 2


def test_bad_arguments() -> None:
    with pytest.raises(IrkitError, match="variant"):
        PRP(variant="bubble", comparator=always_a)
    with pytest.raises(IrkitError, match="mode"):
        PRP(mode="logits", comparator=always_a)
    assert PRP.parse("Passage B") == "B" and PRP.parse(" a.") == "A" and PRP.parse("neither") == "?"


@pytest.fixture(scope="module")
def llm():
    return tiny_llm(smollm2_tokenizer(), initializer_range=0.3)


def test_scoring_matches_unbatched_log_likelihood(llm) -> None:
    prp = PRP(llm, mode="scoring", batch_size=3)
    before = llm.forward_passes
    prompts = [PROMPT.format(query="fleas", a=f"passage {i}", b=f"other text {i * 7}") for i in range(5)]
    answers = prp.ask(prompts)
    assert llm.forward_passes - before == 2  # 5 prompts in batches of 3
    for prompt, answer in zip(prompts, answers, strict=True):
        ids = llm.prompt_ids(prompt)
        loglik = {}
        for label in "AB":
            target = llm.encode(f"Passage {label}")
            with torch.inference_mode():
                logp = llm.model(input_ids=torch.tensor([ids + target])).logits[0].log_softmax(-1)
            loglik[label] = sum(float(logp[len(ids) - 1 + t, tok]) for t, tok in enumerate(target))
        assert answer == max(loglik, key=loglik.get)


@pytest.mark.parametrize("variant", ["allpair", "sorting", "sliding"])
def test_llm_rerank_counts_and_permutation(llm, variant: str, tmp_path: Path) -> None:
    docs = [Doc(f"d{i}", "", f"passage number {i} about fleas and their life cycle") for i in range(5)]
    store = DocStore.build(tmp_path / "docs.sqlite", docs)
    run = Ranking.from_lists({"q1": ([d.docid for d in docs], [5, 4, 3, 2, 1])}, Queries({"q1": "flea"}), store)
    prp = PRP(llm, variant=variant, passes=2, batch_size=4)
    out = prp(run)
    assert sorted(out["q1"][0]) == sorted(d.docid for d in docs)
    stats = out.meta["q1"]
    assert len(stats["outcomes"]) == stats["comparisons"]
    assert stats["llm_calls"] == 2 * stats["comparisons"]
    if variant == "allpair":
        assert stats["comparisons"] == 10 and stats["forward_passes"] == 5  # 20 prompts in batches of 4
    elif variant == "sliding":
        assert stats["comparisons"] <= 4 + 3 and stats["forward_passes"] == stats["comparisons"]
    else:
        assert 0 < stats["comparisons"] < 10


def test_generation_mode_parses_output(llm) -> None:
    prp = PRP(llm, mode="generation", variant="allpair")
    scores = prp.score("flea", ["a flea lives a year", "bananas are yellow", "fleas jump"])
    assert scores.sum() == pytest.approx(3.0)  # every pair hands out exactly one point
    assert prp.llm_calls == 6 and prp.query_meta()["forward_passes"] >= 1
