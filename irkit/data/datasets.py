"""Test collections by name: BEIR directories on disk, or ``ir_datasets`` ids."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from irkit.data.docstore import Doc
from irkit.data.io import read_corpus, read_qrels, read_queries
from irkit.data.types import Qrels, Queries
from irkit.errors import IrkitError
from irkit.paths import data_root


@dataclass
class Dataset:
    """Queries and qrels of one split, plus a way to stream the corpus."""

    name: str
    queries: Queries
    qrels: Qrels | None
    _docs: Callable[[], Iterator[Doc]]
    corpus_path: Path | None = None

    def docs(self) -> Iterator[Doc]:
        return self._docs()


def beir_dir(name: str | Path) -> Path | None:
    """The BEIR directory for ``name``: a path, or ``$IRKIT_DATA/name``."""
    p = Path(name)
    if (p / "corpus.jsonl").is_file():
        return p
    root = data_root()
    if root is not None and (root / name / "corpus.jsonl").is_file():
        return root / name
    return None


def load_dataset(name: str | Path, split: str | None = "test") -> Dataset:
    """Load a collection: a BEIR directory (or one under ``$IRKIT_DATA``), else an ``ir_datasets`` id.

    For a BEIR directory, only the queries judged in ``qrels/{split}.tsv`` are kept
    (the BEIR convention); ``split=None`` keeps all queries and no qrels.
    """
    d = beir_dir(name)
    if d is not None:
        queries = read_queries(d / "queries.jsonl")
        qrels = None
        if split is not None:
            qrels = read_qrels(d / "qrels" / f"{split}.tsv", queries)
            queries = queries.subset(q for q in queries if q in qrels)
        corpus = d / "corpus.jsonl"
        return Dataset(f"{name}/{split}" if split else str(name), queries, qrels, lambda: read_corpus(corpus), corpus)
    return _load_ir_datasets(str(name) if split is None else f"{name}/{split}")


def _load_ir_datasets(dsid: str) -> Dataset:
    import ir_datasets

    try:
        ds = ir_datasets.load(dsid)
    except KeyError:
        raise IrkitError(
            f"unknown dataset {dsid!r}: not a BEIR directory, not under $IRKIT_DATA, not an ir_datasets id"
        ) from None
    try:
        queries = Queries({q.query_id: q.text for q in ds.queries_iter()}) if ds.has_queries() else Queries({})
        qrels = None
        if ds.has_qrels():
            judgments: dict[str, dict[str, int]] = {}
            for r in ds.qrels_iter():
                judgments.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)
            qrels = Qrels(judgments)
    except Exception as e:  # ir_datasets raises plain errors when offline and the archive is absent
        raise IrkitError(
            f"ir_datasets could not load {dsid!r} ({type(e).__name__}: {e}). Offline, place the source "
            "archive under $IR_DATASETS_HOME as ir_datasets documents"
        ) from None

    def docs() -> Iterator[Doc]:
        for d in ds.docs_iter():
            yield Doc(d.doc_id, getattr(d, "title", "") or "", d.text)

    return Dataset(dsid, queries, qrels, docs)
