"""BM25 retrieval over a Lucene index with Pyserini's ``LuceneSearcher`` (batch search, threads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.index.bm25 import BM25Index
from irkit.pipeline.stage import Retriever


class BM25(Retriever):
    """First-stage BM25 retriever: ``BM25(index="indexes/scifact-bm25") % 100``.

    ``k1`` and ``b`` default to Anserini's (0.9, 0.4), the BEIR baseline settings; ``depth`` is
    how many documents are retrieved when no ``%`` cut asks for another number. The ranking
    carries the queries and the index's DocStore for downstream rerankers.

    ``rm3=True`` turns on Pyserini's own RM3 pseudo-relevance feedback (Anserini's
    implementation, defaults 10 feedback terms from 10 documents, original query weight 0.5):
    ``BM25(index, rm3=True)``. It needs an index that stores document vectors, as irkit's do.
    """

    name = "bm25"

    def __init__(
        self,
        index: str | Path,
        k1: float = 0.9,
        b: float = 0.4,
        depth: int = 1000,
        threads: int = 2,
        rm3: bool = False,
        fb_terms: int = 10,
        fb_docs: int = 10,
        original_query_weight: float = 0.5,
    ) -> None:
        if depth < 1 or threads < 1:
            raise IrkitError(f"BM25 needs depth >= 1 and threads >= 1, got depth={depth}, threads={threads}")
        if fb_terms < 1 or fb_docs < 1 or not 0 <= original_query_weight <= 1:
            raise IrkitError(
                "RM3 needs fb_terms >= 1, fb_docs >= 1 and 0 <= original_query_weight <= 1, got "
                f"{fb_terms}, {fb_docs}, {original_query_weight}"
            )
        self.index_path = str(index)
        self.k1, self.b, self.depth, self.threads = float(k1), float(b), int(depth), int(threads)
        self.rm3, self.fb_terms, self.fb_docs = bool(rm3), int(fb_terms), int(fb_docs)
        self.original_query_weight = float(original_query_weight)
        self.index = BM25Index.load(index)
        self._searcher: Any = None

    def params(self) -> dict[str, Any]:
        p = {"index": self.index_path, "k1": self.k1, "b": self.b, "depth": self.depth, "threads": self.threads}
        if self.rm3:
            p |= {"rm3": True, "fb_terms": self.fb_terms, "fb_docs": self.fb_docs}
            p["original_query_weight"] = self.original_query_weight
        return p

    def searcher(self) -> Any:
        """The Pyserini ``LuceneSearcher`` (starts the JVM on first use)."""
        if self._searcher is None:
            from irkit._java import ensure_jvm

            ensure_jvm()
            from pyserini.search.lucene import LuceneSearcher

            self._searcher = LuceneSearcher(str(self.index.lucene_dir))
            self._searcher.set_bm25(self.k1, self.b)
            if self.rm3:
                self._searcher.set_rm3(self.fb_terms, self.fb_docs, self.original_query_weight)
        return self._searcher

    def retrieve(self, queries: Queries, k: int) -> Ranking:
        """Top ``k`` documents per query, searched in one batch on ``threads`` threads."""
        qids = list(queries)
        hits = self.searcher().batch_search([queries[q] for q in qids], qids, k=k, threads=self.threads) if qids else {}
        results = {}
        for q in qids:
            found = hits.get(q, [])
            results[q] = ([h.docid for h in found], np.array([h.score for h in found], dtype=np.float64))
        return Ranking(results, queries, self.index.docstore)
