"""SpladeRetriever: learned-sparse first stage over a SPLADE impact index (:mod:`irkit.index.splade`).

Queries are encoded by the model the index was built with, quantised at the index's scale,
and searched with Anserini's ``SimpleImpactSearcher`` (the searcher behind pyserini's
``LuceneImpactSearcher``): a document's score is the dot product of the quantised query and
document vectors. Every query term is kept (pyserini's wrapper drops terms whose idf is not
above ``min_idf``, which would change that dot product).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.index.splade import SpladeIndex
from irkit.pipeline.stage import Retriever
from irkit.retrieve.bm25 import search_in_batches


class SpladeRetriever(Retriever):
    """``SpladeRetriever("indexes/scifact-splade") % 1000``; YAML ``{splade_index: {index: ...}}``.

    ``depth`` is how many documents are retrieved when no ``%`` cut asks for another number;
    ``threads`` search queries in parallel in Lucene; ``batch_size`` queries are encoded at once.
    """

    name = "splade_index"

    def __init__(self, index: str | Path, depth: int = 1000, threads: int = 2, batch_size: int = 32) -> None:
        for param, value, ok, need in (
            ("depth", depth, 1 <= depth < 2**31, "between 1 and 2**31 - 1"),
            ("threads", threads, threads >= 1, ">= 1"),
            ("batch_size", batch_size, batch_size >= 1, ">= 1"),
        ):
            if not ok:
                raise IrkitError(f"splade_index {param} must be {need}, got {value!r}")
        self.index_path, self.depth, self.threads, self.batch_size = str(index), int(depth), int(threads), batch_size
        self.index = SpladeIndex.load(index)
        self.encoder = self.index.encoder()
        self._searcher: ImpactSearcher | None = None

    def params(self) -> dict[str, Any]:
        return {"index": self.index_path, "depth": self.depth, "threads": self.threads, "batch_size": self.batch_size}

    def query_vectors(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """The quantised SPLADE vectors ``{term: impact}`` the searcher receives for query texts."""
        return self.encoder.terms(texts, scale=self.index.scale, batch_size=self.batch_size)

    def searcher(self) -> ImpactSearcher:
        """The impact searcher over the index (starts the JVM on first use)."""
        if self._searcher is None:
            self._searcher = ImpactSearcher(self.index.lucene_dir, self.query_vectors)
        return self._searcher

    def retrieve(self, queries: Queries, k: int) -> Ranking:
        """Top ``k`` documents per query by quantised SPLADE dot product, in bounded batches."""
        return Ranking(dict(search_in_batches(self, queries, k)), queries, self.index.docstore)


class ImpactSearcher:
    """Anserini's ``SimpleImpactSearcher`` with pyserini's ``batch_search(texts, qids, k, threads)``:
    texts are turned into ``{term: integer weight}`` maps by ``encode`` first."""

    def __init__(self, lucene_dir: Path, encode: Callable[[Sequence[str]], list[dict[str, int]]]) -> None:
        from irkit._java import autoclass

        self.java = autoclass("io.anserini.search.SimpleImpactSearcher")(str(lucene_dir))
        self.encode = encode

    def batch_search(self, texts: Sequence[str], qids: Sequence[str], k: int, threads: int) -> dict[str, list[Any]]:
        """``qid -> hits`` (each with ``.docid`` and ``.score``), best first."""
        from irkit._java import autoclass

        hash_map, array_list, integer = (
            autoclass(c) for c in ("java.util.HashMap", "java.util.ArrayList", "java.lang.Integer")
        )
        jqueries, jqids = array_list(), array_list()
        for vector, qid in zip(self.encode(texts), qids, strict=True):
            query = hash_map()
            for term, weight in vector.items():
                query.put(term, integer(weight))
            jqueries.add(query)
            jqids.add(qid)
        results = self.java.batch_search(jqueries, jqids, int(k), int(threads))
        return {e.getKey(): list(e.getValue()) for e in results.entrySet().toArray()}
