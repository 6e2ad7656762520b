"""HyDE (Gao et al., 2023): search with an LLM-written hypothetical document instead of the query.

With ``n = 1`` the passage replaces the query text: a dense retriever searches the passage's
embedding, BM25 its words. With ``n > 1`` the passages become equally weighted variants, so
``Dense`` searches their mean embedding (the paper's form); ``include_query`` adds the query
itself as one more variant, as the paper's implementation does. The passage prompt and its
cached generations are shared with :class:`irkit.reformulate.query2doc.Query2Doc`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from irkit.errors import IrkitError
from irkit.models.llm import CausalLM
from irkit.pipeline.stage import QueryRewriter
from irkit.reformulate.query2doc import _init_llm, _llm_params, passages


class HyDE(QueryRewriter):
    """A generated passage in place of the query: ``HyDE() >> Dense(index) % 100``."""

    name: ClassVar[str | None] = "hyde"

    def __init__(
        self,
        llm: str | CausalLM = "smollm2",
        n: int = 1,
        include_query: bool = False,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int = 0,
        batch_size: int = 16,
        cache: str | None = None,
    ) -> None:
        if n < 1:
            raise IrkitError(f"HyDE needs n >= 1 passages, got {n}")
        self.n, self.include_query = int(n), bool(include_query)
        _init_llm(self, llm, max_new_tokens, temperature, top_p, seed, batch_size, cache)

    def params(self) -> dict[str, Any]:
        return _llm_params(self) | {"n": self.n, "include_query": self.include_query}

    def rewrite_batch(self, queries: Sequence[str]) -> list[str | list[tuple[str, float]]]:
        docs = passages(self.llm, queries, self.n, self.max_new_tokens, self.temperature, self.top_p, self.seed)
        out: list[str | list[tuple[str, float]]] = []
        for q, d in zip(queries, docs, strict=True):
            texts = [t for t in d if t] + ([q] if self.include_query else [])
            if not texts:  # the LLM wrote nothing: search the query
                out.append(q)
            elif len(texts) == 1:
                out.append(texts[0])
            else:
                out.append([(t, 1.0 / len(texts)) for t in texts])
        return out
