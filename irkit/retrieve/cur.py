"""CURRetriever: k-NN search with the cross-encoder itself over a CUR index (ANNCUR, adaptive ANNCUR).

No first-stage retriever: each query spends a fixed budget of cross-encoder calls. ANNCUR
scores the ``k_i`` anchor items, approximates every item's score through the index's ``E``
and scores the best ``k_r`` of the others exactly; the adaptive variant spends the same
``k_i + k_r`` calls over ``adaptive_rounds`` rounds, choosing each round's items from the
approximation the previous rounds allow. The list returned holds the top ``k`` of the items
scored exactly (anchor items included), ranked by their exact scores; the math is in
:mod:`irkit.models.cur`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.index.cur import CURIndex
from irkit.models.cur import adaptive, anncur
from irkit.pipeline.stage import Retriever


class CURRetriever(Retriever):
    """``CURRetriever("indexes/scifact-cur", k_i=50, k_r=100) % 10``; YAML ``{cur: {index: ..., k_r: 100}}``.

    ``k_i`` defaults to the index's stored anchor items (another value derives ``E`` from the
    index's score matrix, with ``seed`` and ``rcond`` defaulting to the index's). With
    ``adaptive_rounds`` >= 1 the budget ``k_i + k_r`` is spent in that many rounds instead.
    Each query's ``Ranking.meta`` reports the cross-encoder calls it cost (``ce_calls``).
    Without a ``%`` cut the top ``depth`` of the scored items are returned.
    """

    name = "cur"

    def __init__(
        self,
        index: str | Path,
        depth: int = 100,
        k_i: int | None = None,
        k_r: int = 100,
        adaptive_rounds: int = 0,
        seed: int | None = None,
        rcond: float | None = None,
        batch_size: int = 32,
    ) -> None:
        if depth < 1 or k_r < 0 or adaptive_rounds < 0 or batch_size < 1 or (k_i is not None and k_i < 1):
            raise IrkitError(
                "cur needs depth >= 1, k_i >= 1, k_r >= 0, adaptive_rounds >= 0 and batch_size >= 1, got "
                f"depth={depth}, k_i={k_i}, k_r={k_r}, adaptive_rounds={adaptive_rounds}, batch_size={batch_size}"
            )
        self.index_path, self.depth, self.k_i, self.k_r = str(index), int(depth), k_i, int(k_r)
        self.adaptive_rounds, self.seed, self.rcond, self.batch_size = int(adaptive_rounds), seed, rcond, batch_size
        self.index = CURIndex.load(self.index_path)
        self.budget = (self.index.k_i if k_i is None else int(k_i)) + self.k_r
        if self.adaptive_rounds > self.budget:
            raise IrkitError(f"adaptive_rounds = {self.adaptive_rounds} exceeds the budget k_i + k_r = {self.budget}")
        self.anchors = self.embeddings = np.zeros(0)
        if not self.adaptive_rounds:  # ANNCUR's fixed anchors and E (the adaptive variant builds its own per query)
            self.anchors, self.embeddings = self.index.embeddings(k_i, seed, rcond)
        self.cross_encoder = self.index.cross_encoder(batch_size)

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"index": self.index_path, "depth": self.depth, "k_r": self.k_r}
        optional = {"k_i": self.k_i, "seed": self.seed, "rcond": self.rcond}
        p.update({name: v for name, v in optional.items() if v is not None})
        if self.adaptive_rounds:
            p["adaptive_rounds"] = self.adaptive_rounds
        return p if self.batch_size == 32 else {**p, "batch_size": self.batch_size}

    def retrieve(self, queries: Queries, k: int) -> Ranking:
        """Top ``k`` per query by exact cross-encoder score among the ``k_i + k_r`` items it scored."""
        qids = list(queries)
        texts = [queries[q] for q in qids]
        calls = np.zeros(len(qids), dtype=np.int64)
        docids = self.index.docids
        store = self.index.docstore

        def scorer(rows: Sequence[np.ndarray]) -> list[np.ndarray]:
            calls[:] += [len(r) for r in rows]
            items = [(text, store.get_many([docids[i] for i in r])) for text, r in zip(texts, rows, strict=True)]
            return self.cross_encoder.score_batch(items)

        if self.adaptive_rounds:
            seed = int(self.index.manifest["seed"]) if self.seed is None else self.seed
            rcond = float(self.index.manifest["rcond"]) if self.rcond is None else self.rcond
            pools = adaptive(scorer, len(qids), self.index.scores, self.budget, self.adaptive_rounds, seed, rcond)
            facts = {"method": "adaptive", "budget": self.budget, "rounds": self.adaptive_rounds}
        else:
            pools = anncur(scorer, len(qids), self.embeddings, self.anchors, self.k_r)
            facts = {"method": "anncur", "k_i": len(self.anchors), "k_r": self.k_r}
        results = {q: ([docids[i] for i in rows], scores) for q, (rows, scores) in zip(qids, pools, strict=True)}
        meta = {q: {**facts, "ce_calls": int(n)} for q, n in zip(qids, calls, strict=True)}
        return Ranking.from_lists(results, queries, store, meta=meta).top_k(k)
