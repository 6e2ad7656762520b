"""query2doc (Wang et al., 2023): expand the query with one LLM-written passage that answers it.

The expanded query is ``query`` repeated ``repeats`` times followed by the passage (the paper
repeats the query 5 times for BM25 so the passage does not drown it, and uses it once in front of
a dense encoder). The passage prompt is shared with :class:`irkit.reformulate.hyde.HyDE`, and so
are its cached generations: the two differ only in what they do with the passage. Zero-shot (the
paper uses four in-domain examples, which SciFact-style claims do not come with).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from irkit.errors import IrkitError
from irkit.models.llm import CausalLM
from irkit.pipeline.stage import QueryRewriter
from irkit.reformulate.llm_cache import CachedLLM, Request

PASSAGE_PROMPT = (
    "Write a short passage that answers the query below, or that gives the evidence for or against it if it "
    "is a claim.\n\nQuery: {query}"
)
PASSAGE_LEAD = "Passage:"


def passages(
    llm: CachedLLM, queries: Sequence[str], n: int, max_new_tokens: int, temperature: float, top_p: float, seed: int
) -> list[list[str]]:
    """``n`` generated passages per query (sample ``j`` seeded ``seed + j``), stripped."""
    requests = [Request(PASSAGE_PROMPT.format(query=q), q, seed + j, PASSAGE_LEAD) for q in queries for j in range(n)]
    replies = [r.strip() for r in llm.generate(requests, max_new_tokens, temperature=temperature, top_p=top_p)]
    return [replies[i * n : (i + 1) * n] for i in range(len(queries))]


class Query2Doc(QueryRewriter):
    """``query × repeats + passage`` as the new query text: ``Query2Doc(repeats=5) >> BM25(index)``."""

    name: ClassVar[str | None] = "query2doc"

    def __init__(
        self,
        llm: str | CausalLM = "smollm2",
        repeats: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int = 0,
        batch_size: int = 16,
        cache: str | None = None,
    ) -> None:
        if repeats < 1:
            raise IrkitError(f"query2doc needs repeats >= 1, got {repeats}")
        self.repeats = int(repeats)
        _init_llm(self, llm, max_new_tokens, temperature, top_p, seed, batch_size, cache)

    def params(self) -> dict[str, Any]:
        return _llm_params(self) | {"repeats": self.repeats}

    def rewrite_batch(self, queries: Sequence[str]) -> list[str | list[tuple[str, float]]]:
        docs = passages(self.llm, queries, 1, self.max_new_tokens, self.temperature, self.top_p, self.seed)
        return [" ".join([q] * self.repeats + [d[0]]).strip() for q, d in zip(queries, docs, strict=True)]


def _init_llm(
    stage: Any,
    llm: str | CausalLM,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int,
    cache: str | None,
) -> None:
    """Set the LLM and sampling attributes every passage-writing rewriter shares (read by :func:`_llm_params`)."""
    stage._llm_arg, stage.max_new_tokens, stage.temperature, stage.top_p = llm, int(max_new_tokens), temperature, top_p
    stage.seed, stage.batch_size, stage.cache_path = seed, batch_size, cache
    stage.llm = CachedLLM(llm, cache, batch_size)


def _llm_params(stage: Any) -> dict[str, Any]:
    """The LLM and sampling parameters every passage-writing rewriter shares (its YAML body)."""
    p: dict[str, Any] = {
        "llm": stage._llm_arg if isinstance(stage._llm_arg, str) else stage._llm_arg.name,
        "max_new_tokens": stage.max_new_tokens,
        "temperature": stage.temperature,
        "top_p": stage.top_p,
        "seed": stage.seed,
        "batch_size": stage.batch_size,
    }
    if stage.cache_path is not None:
        p["cache"] = stage.cache_path
    return p
