"""BM25 retrieval over a Lucene index with Pyserini's ``LuceneSearcher`` (batch search, threads)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.index.bm25 import BM25Index
from irkit.pipeline.stage import Retriever

if TYPE_CHECKING:
    from irkit.retrieve.splade import SpladeRetriever


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
        for param, value, ok, need in (
            ("k1", k1, math.isfinite(k1) and k1 >= 0, "finite and >= 0"),
            ("b", b, math.isfinite(b) and 0 <= b <= 1, "between 0 and 1"),
            ("depth", depth, 1 <= depth < 2**31, "between 1 and 2**31 - 1"),
            ("threads", threads, threads >= 1, ">= 1"),
            ("fb_terms", fb_terms, fb_terms >= 1, ">= 1"),
            ("fb_docs", fb_docs, fb_docs >= 1, ">= 1"),
            ("original_query_weight", original_query_weight, 0 <= original_query_weight <= 1, "between 0 and 1"),
        ):
            if not ok:
                raise IrkitError(f"BM25 {param} must be {need}, got {value!r}")
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
        """Top ``k`` documents per query, searched in bounded batches on ``threads`` threads."""
        return Ranking(dict(search_in_batches(self, queries, k)), queries, self.index.docstore)


HITS_PER_BATCH = 100_000  # Lucene hits held at once (each carries its stored document): bounds memory


def search_in_batches(
    retriever: BM25 | SpladeRetriever, queries: Queries, k: int
) -> Iterator[tuple[str, tuple[list[str], np.ndarray]]]:
    """``(qid, (docids, scores))`` for each query in order, searched ``HITS_PER_BATCH // k`` queries at a time.

    ``retriever.searcher()`` is a Lucene searcher with pyserini's ``batch_search``. Each query is
    searched on its own, so the results equal one big batch; peak memory depends on ``k`` and
    the batch, not on the number of queries.
    """
    qids = list(queries)
    step = max(retriever.threads, HITS_PER_BATCH // k)
    for start in range(0, len(qids), step):
        batch = qids[start : start + step]
        hits = retriever.searcher().batch_search([queries[q] for q in batch], batch, k=k, threads=retriever.threads)
        for q in batch:
            found = hits.pop(q, [])
            yield q, ([h.docid for h in found], np.array([h.score for h in found], dtype=np.float64))
