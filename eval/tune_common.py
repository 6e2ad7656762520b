"""Shared data plumbing for the eval/tune_*.py experiments on SciFact (BM25 runs, texts, dev slice).

The dev slice is carved from SciFact *train* (``irkit.tune.split_dev``); the test split is only
used for the final numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from irkit.data.io import read_corpus, read_qrels, read_queries, read_run, write_run
from irkit.data.types import Qrels, Queries, Ranking
from irkit.tune.trainer import split_dev

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("IRKIT_DATA", ROOT.parent / "shared" / "data"))
SCIFACT = DATA / "beir" / "scifact"
INDEX = ROOT / "indexes" / "scifact-bm25"
RUNS = ROOT / "runs" / "tune"


@dataclass
class SciFact:
    queries: Queries  # all queries
    doc_text: dict[str, str]
    train_qrels: Qrels  # train split minus the dev slice
    dev_qrels: Qrels  # dev slice carved from train
    test_qrels: Qrels
    bm25: Ranking  # BM25 top-100 for every train and test query


def bm25_run(queries: Queries, k: int = 100) -> Ranking:
    """BM25 (Anserini defaults) top-``k`` for ``queries``; cached under runs/tune/ and the index under indexes/."""
    path = RUNS / f"scifact-bm25-top{k}.trec"
    if path.is_file():
        return read_run(path, queries)
    from irkit.index.bm25 import build_bm25_index
    from irkit.retrieve.bm25 import BM25

    if not INDEX.exists():
        build_bm25_index(SCIFACT, INDEX)
    run = BM25(INDEX, depth=k).transform(queries)
    write_run(run, path, tag="bm25")
    return run


def load_scifact(dev_fraction: float = 0.1, seed: int = 13) -> SciFact:
    queries = read_queries(SCIFACT / "queries.jsonl")
    train = read_qrels(SCIFACT / "qrels" / "train.tsv", queries)
    test = read_qrels(SCIFACT / "qrels" / "test.tsv", queries)
    train_q, dev_q = split_dev(list(train), dev_fraction, seed)
    doc_text = {d.docid: d.contents for d in read_corpus(SCIFACT / "corpus.jsonl")}
    judged = queries.subset(q for q in queries if q in train or q in test)
    return SciFact(queries, doc_text, train.subset(train_q), train.subset(dev_q), test, bm25_run(judged))
