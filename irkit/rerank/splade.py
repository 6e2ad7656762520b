"""SpladeReranker: rerank candidates by the SPLADE dot product of query and document term weights.

SPLADE (Formal et al., SIGIR 2021) maps a text to weights over the vocabulary with a
masked-language-model head; relevance is the dot product of the query's and the document's
weights. The bundled choice is SPLADE-tiny trained on MS MARCO (``splade-tiny``, fetched and
verified by :mod:`irkit.models.fetch`), a 4.4 M-parameter model that transfers to web queries
where the SciFact-trained cross-encoder does not (eval/RESULTS.md). Scoring computes only the
query's non-zero vocabulary rows for the documents (:meth:`irkit.models.splade.Splade.score`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from irkit.errors import IrkitError
from irkit.pipeline.stage import Reranker, doc_text

if TYPE_CHECKING:
    from irkit.data.docstore import Doc


class SpladeReranker(Reranker):
    """``bm25 % 100 >> SpladeReranker()``: SPLADE scores of each candidate; YAML ``{splade: {}}``."""

    name = "splade"

    def __init__(self, model: str = "splade-tiny", max_length: int = 256, batch_size: int = 32) -> None:
        from irkit.models.splade import Splade

        if max_length < 8 or batch_size < 1:
            raise IrkitError(f"max_length must be >= 8 and batch_size >= 1, got {max_length} and {batch_size}")
        self.model_name, self.max_length, self.batch_size = str(model), max_length, batch_size
        self.model = Splade(self.model_name, max_length=max_length)

    def params(self) -> dict[str, Any]:
        return {"model": self.model_name, "max_length": self.max_length, "batch_size": self.batch_size}

    def score(self, query: str, docs: Sequence[Doc | str]) -> np.ndarray:
        return self.model.score(query, [doc_text(d) for d in docs], batch_size=self.batch_size)
