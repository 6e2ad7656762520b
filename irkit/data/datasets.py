"""Test collections by name: BEIR or TREC DL directories on disk, or ``ir_datasets`` ids.

Two on-disk layouts are recognised. BEIR: ``corpus.jsonl``, ``queries.jsonl`` and
``qrels/<split>.tsv``. TREC DL (a passage reranking set): ``topics.tsv`` (``qid<TAB>query``),
``qrels.txt`` (TREC qrels), ``passages.jsonl`` (the candidate passages, BEIR corpus format)
and optionally one ``*.run`` file, the first-stage run the candidates come from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from irkit.data.docstore import Doc, DocStore
from irkit.data.io import read_corpus, read_qrels, read_queries
from irkit.data.types import Qrels, Queries
from irkit.errors import IrkitError
from irkit.paths import cache_dir, data_root


@dataclass
class Dataset:
    """Queries and qrels of one split, a way to stream the corpus, and the bundled first-stage run if any."""

    name: str
    queries: Queries
    qrels: Qrels | None
    _docs: Callable[[], Iterator[Doc]]
    corpus_path: Path | None = None
    #: a TREC run shipped with the collection (TREC DL's BM25 top 100); None for BEIR and ir_datasets
    run_path: Path | None = None

    def docs(self) -> Iterator[Doc]:
        return self._docs()

    def docstore(self) -> DocStore:
        """The corpus as a SQLite DocStore, built once into the irkit cache and reused.

        A corpus file goes through ``DocStore.for_corpus`` (keyed by path, size and mtime, so an
        edited corpus gets a fresh store); an ``ir_datasets`` corpus is keyed by its name.
        """
        if self.corpus_path is not None:
            return DocStore.for_corpus(self.corpus_path)
        path = cache_dir("docstores") / f"ir_datasets-{hashlib.sha256(self.name.encode()).hexdigest()[:20]}.sqlite"
        if path.is_file():
            return DocStore(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return DocStore.build(path, self.docs())


def _find(name: str | Path, marker: str) -> Path | None:
    """The directory for ``name`` holding ``marker``: ``name`` itself, or ``$IRKIT_DATA/name``."""
    p = Path(name)
    if (p / marker).is_file():
        return p
    root = data_root()
    if root is not None and (root / name / marker).is_file():
        return root / name
    return None


def beir_dir(name: str | Path) -> Path | None:
    """The BEIR directory for ``name``: a path, or ``$IRKIT_DATA/name``."""
    return _find(name, "corpus.jsonl")


def trec_dl_dir(name: str | Path) -> Path | None:
    """The TREC DL directory for ``name`` (it holds ``topics.tsv``): a path, or ``$IRKIT_DATA/name``."""
    return _find(name, "topics.tsv")


def load_dataset(name: str | Path, split: str | None = "test") -> Dataset:
    """Load a collection: a BEIR or TREC DL directory (or one under ``$IRKIT_DATA``), else an ``ir_datasets`` id.

    For a BEIR directory, only the queries judged in ``qrels/{split}.tsv`` are kept
    (the BEIR convention); ``split=None`` keeps all queries and no qrels. A TREC DL
    directory has one judged set, ``split="test"``; ``split=None`` again drops the qrels.
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
    d = trec_dl_dir(name)
    if d is not None:
        return _load_trec_dl(d, str(name), split)
    return _load_ir_datasets(str(name) if split is None else f"{name}/{split}")


def _load_trec_dl(d: Path, name: str, split: str | None) -> Dataset:
    if split not in (None, "test"):
        raise IrkitError(f"a TREC DL directory has one judged set, split 'test' (or None), not {split!r}", path=d)
    corpus = d / "passages.jsonl"
    if not corpus.is_file():
        raise IrkitError("TREC DL directory without passages.jsonl", path=d)
    runs = sorted(d.glob("*.run"))
    if len(runs) > 1:
        raise IrkitError(f"more than one first-stage run: {', '.join(r.name for r in runs)}", path=d)
    queries = read_queries(d / "topics.tsv")
    qrels = None
    if split is not None:
        qrels = read_qrels(d / "qrels.txt", queries)
        queries = queries.subset(q for q in queries if q in qrels)
    return Dataset(
        f"{name}/{split}" if split else name,
        queries,
        qrels,
        lambda: read_corpus(corpus),
        corpus,
        runs[0] if runs else None,
    )


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
