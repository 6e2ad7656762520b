"""BiEncoderReranker: rerank candidates by the cosine of query and document vectors.

The bi-encoder counterpart of :class:`~irkit.rerank.cross_encoder.CrossEncoder` (what
sentence-transformers users do with ``util.cos_sim`` over a candidate list): each query and
each candidate are encoded on their own by :class:`~irkit.models.encoder.BiEncoder`, with the
model's query and document prefixes, and scored by the dot product of the normalised vectors.
Useful for a model that has no index yet, e.g. one being tuned (``from_model``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from irkit.errors import IrkitError
from irkit.pipeline.stage import Reranker, doc_text

if TYPE_CHECKING:
    from irkit.data.docstore import Doc
    from irkit.models.encoder import BiEncoder


class BiEncoderReranker(Reranker):
    """``bm25 % 100 >> BiEncoderReranker("minilm")``: cosine of each candidate to its query; YAML ``{bi_encoder: {}}``.

    ``max_length`` caps documents, ``query_max_length`` queries (default: the same);
    ``backend="int8"`` encodes both with int8 linear layers (``irkit.models.quantize``).
    """

    name = "bi_encoder"

    def __init__(
        self,
        model: str = "minilm",
        max_length: int = 256,
        query_max_length: int | None = None,
        batch_size: int = 32,
        backend: str = "fp32",
    ) -> None:
        from irkit.models.encoder import BiEncoder

        self.model_name = str(model)
        self._setup(BiEncoder(self.model_name, max_length=max_length, backend=backend), query_max_length, batch_size)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        max_length: int = 256,
        query_max_length: int | None = None,
        batch_size: int = 32,
    ) -> BiEncoderReranker:
        """Wrap a model already in memory (e.g. one being tuned): ``BiEncoder.from_model`` scoring."""
        from irkit.models.encoder import BiEncoder

        self = cls.__new__(cls)
        self.model_name = "in-memory"
        self._setup(BiEncoder.from_model(model, tokenizer, max_length), query_max_length, batch_size)
        return self

    def _setup(self, encoder: BiEncoder, query_max_length: int | None, batch_size: int) -> None:
        query_max_length = encoder.max_length if query_max_length is None else query_max_length
        if min(encoder.max_length, query_max_length) < 8 or batch_size < 1:
            raise IrkitError(
                f"max_length and query_max_length must be >= 8 and batch_size >= 1, "
                f"got {encoder.max_length}, {query_max_length} and {batch_size}"
            )
        self.documents, self.batch_size = encoder, batch_size
        self.queries = copy.copy(encoder)  # the same model, its own length cap
        self.queries.max_length = query_max_length

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"model": self.model_name, "max_length": self.documents.max_length}
        if self.queries.max_length != self.documents.max_length:
            p["query_max_length"] = self.queries.max_length
        p["batch_size"] = self.batch_size
        return p if self.documents.backend == "fp32" else {**p, "backend": self.documents.backend}

    def score(self, query: str, docs: Sequence[Doc | str]) -> np.ndarray:
        return self.score_batch([(query, docs)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[Doc | str]]]) -> list[np.ndarray]:
        """Every query and every distinct candidate text encoded once, across all queries."""
        texts = list(dict.fromkeys(doc_text(d) for _, docs in items for d in docs))
        row = {t: i for i, t in enumerate(texts)}
        q = self.queries.encode_queries([query for query, _ in items], self.batch_size)
        d = self.documents.encode_documents(texts, self.batch_size)
        sims = [d[[row[doc_text(x)] for x in docs]] @ q[i] for i, (_, docs) in enumerate(items)]
        return [s.astype(np.float64) for s in sims]
