"""RunFile: candidates read from a TREC run file, as a first stage (e.g. the BM25 top 100 a collection ships)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.docstore import DocStore
from irkit.data.io import read_run
from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.pipeline.stage import Retriever


class RunFile(Retriever):
    """``RunFile("bm25-top100.run", corpus="passages.jsonl") % 10 >> ICR()``: rerank a stored run.

    ``corpus`` (a corpus ``.jsonl``, built once into a cached DocStore, or a ``.sqlite`` store)
    gives the texts that rerankers read. A query the run does not list gets an empty list.
    """

    name = "run_file"

    def __init__(self, path: str | Path, corpus: str | Path | None = None, depth: int = 1000) -> None:
        if depth < 1:
            raise IrkitError(f"run_file needs depth >= 1, got {depth}")
        self.path, self.corpus, self.depth = str(path), (str(corpus) if corpus is not None else None), int(depth)
        self.docstore = DocStore.for_corpus(corpus) if corpus is not None else None
        self.run = read_run(path, docids=self.docstore)

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"path": self.path, "depth": self.depth}
        return p if self.corpus is None else {**p, "corpus": self.corpus}

    def retrieve(self, queries: Queries, k: int) -> Ranking:
        results = {q: self.run.results.get(q, ([], np.zeros(0))) for q in queries}
        return Ranking(results, queries, self.docstore).top_k(k)
