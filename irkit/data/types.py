"""Typed, columnar containers that flow between stages: Queries, Ranking, Qrels."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from irkit.errors import IrkitError

if TYPE_CHECKING:
    import pandas as pd

    from irkit.data.docstore import DocStore

#: a ranked list's docids: a list of str, or a 1-D object array of str (a dense search hands out
#: rows of one array rather than build millions of Python lists); index, slice, iterate, ``len``
DocIds = list[str] | np.ndarray


@dataclass
class Queries:
    """Ordered ``qid -> text``, plus optional per-query fields (e.g. ``original``)."""

    texts: dict[str, str]
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for qid, text in self.texts.items():
            if not isinstance(text, str):
                raise IrkitError(f"query {qid!r}: text must be a string, got {type(text).__name__}")

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Queries:
        return cls({str(q): t for q, t in pairs})

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __contains__(self, qid: object) -> bool:
        return qid in self.texts

    def __getitem__(self, qid: str) -> str:
        try:
            return self.texts[qid]
        except KeyError:
            raise IrkitError(f"unknown query id {qid!r}") from None

    def items(self) -> Iterable[tuple[str, str]]:
        return self.texts.items()

    def subset(self, qids: Iterable[str]) -> Queries:
        """The queries named by ``qids``, in that order, with their fields."""
        qids = list(qids)
        return Queries(
            {q: self[q] for q in qids},
            {name: {q: col[q] for q in qids if q in col} for name, col in self.fields.items()},
        )

    def to_dataframe(self) -> pd.DataFrame:
        import pandas as pd

        df = pd.DataFrame({"qid": list(self.texts), "query": list(self.texts.values())})
        for name, col in self.fields.items():
            df[name] = [col.get(q) for q in self.texts]
        return df

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame) -> Queries:
        extra = [c for c in df.columns if c not in ("qid", "query")]
        qids = [str(q) for q in df["qid"]]
        return cls(
            dict(zip(qids, df["query"].astype(str), strict=True)),
            {c: dict(zip(qids, df[c], strict=True)) for c in extra},
        )


@dataclass
class Ranking:
    """A run: for each qid an ordered list of ``(docid, score)``, best first.

    ``results`` maps a qid to ``(docids, scores)``: ``DocIds`` and a float array.

    Carries the queries it answers and, optionally, the ``DocStore`` its docids
    live in, so a downstream reranker can fetch texts without extra wiring.
    ``columns`` holds extra per-document values aligned with each list (a reranker
    keeps the score it was given as ``"input_score"``, so it can be interpolated with
    its first stage without retrieving twice); ``meta`` holds per-query facts a stage
    reports (e.g. model calls spent on the query).
    """

    results: dict[str, tuple[DocIds, np.ndarray]]
    queries: Queries | None = None
    docstore: DocStore | None = None
    columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for qid, (docids, scores) in self.results.items():
            if len(docids) != len(scores):
                raise IrkitError(f"query {qid!r}: {len(docids)} docids but {len(scores)} scores")
        for name, col in self.columns.items():
            for qid, values in col.items():
                if qid not in self.results or len(values) != len(self.results[qid][0]):
                    raise IrkitError(f"column {name!r} of query {qid!r} does not match its ranked list")

    @classmethod
    def from_scores(
        cls,
        scores: Mapping[str, Mapping[str, float]],
        queries: Queries | None = None,
        docstore: DocStore | None = None,
    ) -> Ranking:
        """Build from ``qid -> docid -> score``; sorts each list by descending score."""
        results = {}
        for qid, d in scores.items():
            docids = list(d)
            vals = np.fromiter((d[x] for x in docids), dtype=np.float64, count=len(docids))
            results[str(qid)] = (docids, vals)
        return cls.from_lists(results, queries, docstore)

    @classmethod
    def from_lists(
        cls,
        results: Mapping[str, tuple[list[str], Iterable[float]]],
        queries: Queries | None = None,
        docstore: DocStore | None = None,
        columns: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        meta: dict[str, dict[str, Any]] | None = None,
    ) -> Ranking:
        """Build from ``qid -> (docids, scores)`` (and aligned ``columns``); sorts each list by descending score."""
        out: dict[str, tuple[DocIds, np.ndarray]] = {}
        cols: dict[str, dict[str, np.ndarray]] = {name: {} for name in columns or {}}
        for q, (d, s) in results.items():
            docids, scores = list(d), np.asarray(list(s), dtype=np.float64)
            order = np.argsort(-scores, kind="stable")  # ties keep their input order
            out[str(q)] = ([docids[i] for i in order], scores[order])
            for name, col in (columns or {}).items():
                if q in col:
                    cols[name][str(q)] = np.asarray(col[q])[order]
        return cls(out, queries, docstore, cols, dict(meta or {}))

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __contains__(self, qid: object) -> bool:
        return qid in self.results

    def __getitem__(self, qid: str) -> tuple[DocIds, np.ndarray]:
        try:
            return self.results[qid]
        except KeyError:
            raise IrkitError(f"query {qid!r} is not in this ranking") from None

    def items(self) -> Iterable[tuple[str, tuple[DocIds, np.ndarray]]]:
        return self.results.items()

    def column(self, name: str, qid: str) -> np.ndarray:
        """The extra column ``name`` of query ``qid``, aligned with its ranked list."""
        try:
            return self.columns[name][qid]
        except KeyError:
            raise IrkitError(f"the ranking has no column {name!r} for query {qid!r}") from None

    def cut(self, keep: Mapping[str, np.ndarray | slice]) -> Ranking:
        """Keep, per query, the positions ``keep[qid]`` selects (a slice or an index/bool array); columns follow."""
        results: dict[str, tuple[DocIds, np.ndarray]] = {}
        for q, (d, s) in self.results.items():
            sel = keep.get(q, slice(None))
            idx = np.arange(len(d))[sel]
            results[q] = (d[idx] if isinstance(d, np.ndarray) else [d[i] for i in idx], s[idx])
        columns = {
            name: {q: v[np.arange(len(v))[keep.get(q, slice(None))]] for q, v in col.items()}
            for name, col in self.columns.items()
        }
        return Ranking(results, self.queries, self.docstore, columns, self.meta)

    def top_k(self, k: int) -> Ranking:
        """Keep the best ``k`` documents of each query."""
        if k < 1:
            raise IrkitError(f"top-k cutoff must be >= 1, got {k}")
        return self.cut(dict.fromkeys(self.results, slice(0, k)))

    def replace(self, results: dict[str, tuple[DocIds, np.ndarray]]) -> Ranking:
        """A ranking with new results that keeps this one's queries and docstore (and no columns)."""
        return Ranking(results, self.queries, self.docstore)

    def subset(self, qids: Iterable[str]) -> Ranking:
        qids = [q for q in qids if q in self.results]
        queries = self.queries.subset([q for q in qids if q in self.queries]) if self.queries else None
        columns = {name: {q: col[q] for q in qids if q in col} for name, col in self.columns.items()}
        meta = {q: self.meta[q] for q in qids if q in self.meta}
        return Ranking({q: self.results[q] for q in qids}, queries, self.docstore, columns, meta)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``qid -> docid -> score`` (the form ir-measures and pytrec_eval take)."""
        return {q: dict(zip(d, s.tolist(), strict=True)) for q, (d, s) in self.results.items()}

    def to_dataframe(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            (q, d, float(s), r)
            for q, (docids, scores) in self.results.items()
            for r, (d, s) in enumerate(zip(docids, scores, strict=True), start=1)
        ]
        df = pd.DataFrame(rows, columns=["qid", "docno", "score", "rank"])
        if self.queries is not None:
            df.insert(1, "query", [self.queries.texts.get(q, "") for q in df["qid"]])
        for name, col in self.columns.items():
            parts = [col.get(q, np.full(len(d), np.nan)) for q, (d, _) in self.results.items()]
            df[name] = np.concatenate(parts) if parts else []
        return df

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, docstore: DocStore | None = None) -> Ranking:
        """From a frame with ``qid, docno, score`` columns (PyTerrier's names); other numeric columns are kept."""
        missing = {"qid", "docno", "score"} - set(df.columns)
        if missing:
            raise IrkitError(f"dataframe lacks columns {sorted(missing)}")
        extra = [c for c in df.columns if c not in ("qid", "query", "docno", "score", "rank")]
        results: dict[str, tuple[DocIds, np.ndarray]] = {}
        columns: dict[str, dict[str, np.ndarray]] = {c: {} for c in extra}
        for qid, group in df.groupby("qid", sort=False):
            results[str(qid)] = ([str(d) for d in group["docno"]], group["score"].to_numpy(np.float64))
            for c in extra:
                columns[c][str(qid)] = group[c].to_numpy()
        queries = None
        if "query" in df.columns:
            first = df.drop_duplicates("qid")
            queries = Queries(dict(zip(first["qid"].astype(str), first["query"].astype(str), strict=True)))
        return cls.from_lists(results, queries, docstore, columns)


@dataclass
class Qrels:
    """Relevance judgments: ``qid -> docid -> grade``."""

    judgments: dict[str, dict[str, int]]

    def __len__(self) -> int:
        return len(self.judgments)

    def __iter__(self) -> Iterator[str]:
        return iter(self.judgments)

    def __contains__(self, qid: object) -> bool:
        return qid in self.judgments

    def __getitem__(self, qid: str) -> dict[str, int]:
        return self.judgments[qid]

    def items(self) -> Iterable[tuple[str, dict[str, int]]]:
        return self.judgments.items()

    def subset(self, qids: Iterable[str]) -> Qrels:
        return Qrels({q: self.judgments[q] for q in qids if q in self.judgments})

    def to_dataframe(self) -> pd.DataFrame:
        import pandas as pd

        rows = [(q, d, g) for q, docs in self.judgments.items() for d, g in docs.items()]
        return pd.DataFrame(rows, columns=["qid", "docno", "label"])

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame) -> Qrels:
        judgments: dict[str, dict[str, int]] = {}
        for q, d, g in zip(df["qid"], df["docno"], df["label"], strict=True):
            judgments.setdefault(str(q), {})[str(d)] = int(g)
        return cls(judgments)
