"""BiEncoderReranker: rerank candidates by the cosine of query and document vectors.

The bi-encoder counterpart of :class:`~irkit.rerank.cross_encoder.CrossEncoder` (what
sentence-transformers users do with ``util.cos_sim`` over a candidate list): each query and
each candidate are encoded on their own by :class:`~irkit.models.encoder.BiEncoder`, with the
model's query and document prefixes, and scored by the dot product of the normalised vectors.
Useful for a model that has no index yet, e.g. one being tuned (``from_model``). Given a dense
``index`` instead, it scores with the vectors the index already stores (pyterrier-dr's
``index.scorer()``): only the queries are encoded, and a candidate the index lacks is encoded
as the index's documents were. That makes a large encoder cheap to rerank with, or to distil
from, once its index exists.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irkit.errors import IrkitError
from irkit.pipeline.stage import Reranker, doc_text

if TYPE_CHECKING:
    from irkit.data.docstore import Doc
    from irkit.index.dense import DenseIndex
    from irkit.models.encoder import BiEncoder


class BiEncoderReranker(Reranker):
    """``bm25 % 100 >> BiEncoderReranker("minilm")``: cosine of each candidate to its query; YAML ``{bi_encoder: {}}``.

    ``max_length`` caps documents, ``query_max_length`` queries (default: the same);
    ``backend="int8"`` encodes both with int8 linear layers (``irkit.models.quantize``).
    ``BiEncoderReranker(index="indexes/scifact-nomic")`` scores with the index's stored vectors;
    its manifest then fixes the model (``model`` may name another of the same dimension and query
    prefix, as in ``Dense``), the lengths and the backend.
    """

    name = "bi_encoder"

    def __init__(
        self,
        model: str | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        batch_size: int = 32,
        backend: str | None = None,
        index: str | Path | None = None,
    ) -> None:
        from irkit.models.encoder import BiEncoder

        self.model_name = None if model is None else str(model)
        if index is None:
            encoder = BiEncoder(
                self.model_name or "minilm",
                max_length=256 if max_length is None else max_length,
                backend="fp32" if backend is None else backend,
            )
            self._setup(encoder, query_max_length, batch_size)
            return
        if (max_length, query_max_length, backend) != (None, None, None):
            raise IrkitError(
                "BiEncoderReranker with an index takes its lengths and backend from the index's manifest; "
                f"got max_length={max_length}, query_max_length={query_max_length}, backend={backend}",
                path=index,
            )
        from irkit.index.dense import DenseIndex

        stored = DenseIndex.load(index)
        self._setup(stored.query_encoder(self.model_name), None, batch_size, stored)

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

    def _setup(
        self, encoder: BiEncoder, query_max_length: int | None, batch_size: int, index: DenseIndex | None = None
    ) -> None:
        query_max_length = encoder.max_length if query_max_length is None else query_max_length
        if min(encoder.max_length, query_max_length) < 8 or batch_size < 1:
            raise IrkitError(
                f"max_length and query_max_length must be >= 8 and batch_size >= 1, "
                f"got {encoder.max_length}, {query_max_length} and {batch_size}"
            )
        self.documents, self.batch_size, self.index = encoder, batch_size, index
        self.queries = copy.copy(encoder)  # the same model, its own length cap
        self.queries.max_length = query_max_length

    def params(self) -> dict[str, Any]:
        if self.index is not None:
            own = {} if self.model_name is None else {"model": self.model_name}
            return {"index": str(self.index.path), **own, "batch_size": self.batch_size}
        p: dict[str, Any] = {"model": self.model_name or "minilm", "max_length": self.documents.max_length}
        if self.queries.max_length != self.documents.max_length:
            p["query_max_length"] = self.queries.max_length
        p["batch_size"] = self.batch_size
        return p if self.documents.backend == "fp32" else {**p, "backend": self.documents.backend}

    def score(self, query: str, docs: Sequence[Doc | str]) -> np.ndarray:
        return self.score_batch([(query, docs)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[Doc | str]]]) -> list[np.ndarray]:
        """All queries encoded in one batch; every candidate's vector looked up or encoded once."""
        vectors = self._vectors([d for _, docs in items for d in docs])
        q = self.queries.encode_queries([query for query, _ in items], self.batch_size)
        scores, start = [], 0
        for i, (_, docs) in enumerate(items):
            scores.append((vectors[start : start + len(docs)] @ q[i]).astype(np.float64))
            start += len(docs)
        return scores

    def _vectors(self, docs: Sequence[Doc | str]) -> np.ndarray:
        """One vector per document: the index's stored one where it holds the docid, else encoded."""
        out = np.zeros((len(docs), self.documents.dim), dtype=np.float32)
        todo = np.ones(len(docs), dtype=bool)
        if self.index is not None:  # a bare text has no docid to look up
            stored, found = self.index.lookup([None if isinstance(d, str) else d.docid for d in docs])
            out[found], todo = stored, ~found
        texts = [doc_text(d) for d, t in zip(docs, todo, strict=True) if t]
        if texts:
            distinct = list(dict.fromkeys(texts))
            row = {t: i for i, t in enumerate(distinct)}
            out[todo] = self.documents.encode_documents(distinct, self.batch_size)[[row[t] for t in texts]]
        return out
