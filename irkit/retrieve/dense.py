"""Dense retrieval: encode queries with the index's bi-encoder and search FAISS in one batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.types import Ranking
from irkit.errors import IrkitError
from irkit.index.dense import DenseIndex
from irkit.pipeline.stage import Stage, StageInput, queries_of


class Dense(Stage):
    """First-stage dense retriever: ``Dense(index="indexes/scifact-minilm") % 100``.

    ``model`` defaults to the one the index was built with (from its manifest); a model
    whose vectors have another dimension than the index is an IrkitError, and so is one whose
    query prefix differs from the manifest's (an index built before prefixes were recorded
    has none): queries are always encoded with the prefix the index was built for. ``search_params``
    are FAISS search-time settings such as ``"nprobe=16"`` (IVF) or ``"efSearch=128"`` (HNSW).
    """

    name = "dense"

    def __init__(
        self,
        index: str | Path,
        model: str | None = None,
        k: int = 1000,
        batch_size: int = 32,
        search_params: str | None = None,
    ) -> None:
        if k < 1 or batch_size < 1:
            raise IrkitError(f"Dense needs k >= 1 and batch_size >= 1, got k={k}, batch_size={batch_size}")
        self.index_path, self.model, self.k, self.batch_size = str(index), model, int(k), int(batch_size)
        self.search_params = search_params
        self._open()

    def _open(self) -> None:
        from irkit.models.encoder import BiEncoder

        self.index = DenseIndex.load(self.index_path)
        if self.search_params:
            self.index.set_search_params(self.search_params)
        model = self.model or self.index.model
        self.encoder = BiEncoder(model, max_length=int(self.index.manifest["build"]["max_length"]))
        if self.encoder.dim != self.index.dim:
            raise IrkitError(
                f"encoder {model!r} gives {self.encoder.dim}-dimensional vectors, but the index holds "
                f"{self.index.dim}-dimensional vectors of {self.index.model!r}",
                path=self.index_path,
            )
        expected = str(self.index.manifest.get("query_prefix", ""))
        if self.encoder.query_prefix != expected:
            raise IrkitError(
                f"encoder {model!r} prefixes queries with {self.encoder.query_prefix!r}, but this index was built "
                f"for queries prefixed with {expected!r} (see its manifest)",
                path=self.index_path,
            )

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"index": self.index_path, "k": self.k, "batch_size": self.batch_size}
        if self.model is not None:
            p["model"] = self.model
        if self.search_params is not None:
            p["search_params"] = self.search_params
        return p

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("index", "encoder")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def transform(self, inp: StageInput) -> Ranking:
        return self.transform_k(inp, self.k)

    def transform_k(self, inp: StageInput, k: int) -> Ranking:
        """Top ``k`` documents per query by inner product of normalised vectors."""
        queries = queries_of(inp, self)
        qids = list(queries)
        if not qids:
            return Ranking({}, queries, self.index.docstore)
        vectors = self.encoder.encode_queries([queries[q] for q in qids], batch_size=self.batch_size)
        scores, rows = self.index.search(vectors, k)
        docids = self.index.docids
        results = {}
        for i, q in enumerate(qids):
            keep = rows[i] >= 0  # FAISS pads with -1 when fewer than k documents are found
            results[q] = ([docids[r] for r in rows[i][keep]], scores[i][keep].astype(np.float64))
        return Ranking(results, queries, self.index.docstore)
