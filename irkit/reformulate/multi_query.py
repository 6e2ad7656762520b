"""Multi-query retrieval fused by reciprocal rank, without clustering (GenQRFusion-like; Dhole et al., 2024).

Each query is reformulated by several prompts, every reformulation (and the query itself) is
retrieved on its own, and the runs are fused by RRF. By default the prompts, sample count and
sampling settings are GenCRF's, so the generations are the very ones GenCRF clusters (shared
through the reply cache): against GenCRF this isolates what clustering and weighting add.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from irkit.data.types import Queries
from irkit.errors import IrkitError
from irkit.models.llm import CausalLM
from irkit.pipeline.stage import FUSION, QueryRewriter, StageInput
from irkit.reformulate.gencrf import generate_reformulations
from irkit.reformulate.llm_cache import CachedLLM


class MultiQuery(QueryRewriter):
    """Every generated reformulation retrieved on its own, the runs fused by RRF: ``MultiQuery() >> BM25(index)``."""

    name: ClassVar[str | None] = "multi_query"

    def __init__(
        self,
        llm: str | CausalLM = "smollm2",
        n: int = 2,
        include_query: bool = True,
        temperature: float = 0.8,
        top_p: float = 0.95,
        max_new_tokens: int = 32,
        seed: int = 0,
        batch_size: int = 16,
        cache: str | None = None,
    ) -> None:
        if n < 1:
            raise IrkitError(f"multi_query needs n >= 1, got {n}")
        self._llm_arg, self.n, self.include_query = llm, int(n), bool(include_query)
        self.temperature, self.top_p, self.max_new_tokens, self.seed = temperature, top_p, int(max_new_tokens), seed
        self.batch_size, self.cache_path = batch_size, cache
        self.llm = CachedLLM(llm, cache, batch_size)

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {
            "llm": self._llm_arg if isinstance(self._llm_arg, str) else self._llm_arg.name,
            "n": self.n,
            "include_query": self.include_query,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }
        if self.cache_path is not None:
            p["cache"] = self.cache_path
        return p

    def transform(self, inp: StageInput) -> Queries:
        out = super().transform(inp)
        out.fields[FUSION] = {**out.fields.get(FUSION, {}), **dict.fromkeys(out.fields.get("variants", {}), "rrf")}
        return out

    def rewrite_batch(self, queries: Sequence[str]) -> list[str | list[tuple[str, float]]]:
        generated = generate_reformulations(
            self.llm, queries, self.n, self.temperature, self.top_p, self.max_new_tokens, self.seed
        )
        out: list[str | list[tuple[str, float]]] = []
        for q, gen in zip(queries, generated, strict=True):
            texts = list(dict.fromkeys(([q] if self.include_query else []) + [g for g in gen if g]))
            out.append([(t, 1.0) for t in texts] if len(texts) > 1 else (texts[0] if texts else q))
        return out
