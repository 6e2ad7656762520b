"""Data model and I/O: Queries, Ranking, Qrels, DocStore; BEIR, TREC and ir_datasets."""

from irkit.data.datasets import Dataset, load_dataset
from irkit.data.docstore import Doc, DocStore
from irkit.data.io import read_corpus, read_qrels, read_queries, read_run, write_qrels, write_run
from irkit.data.types import Qrels, Queries, Ranking

__all__ = [
    "Dataset",
    "Doc",
    "DocStore",
    "Qrels",
    "Queries",
    "Ranking",
    "load_dataset",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_run",
    "write_qrels",
    "write_run",
]
