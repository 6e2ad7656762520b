"""Readers and writers in the ecosystem's formats: BEIR, TREC run/qrels, topics TSV."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Container, Iterator
from pathlib import Path

import numpy as np

from irkit.data.docstore import Doc
from irkit.data.types import Qrels, Queries, Ranking
from irkit.errors import IrkitError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Numbered, decoded, non-blank lines; bad UTF-8 names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise IrkitError("file not found", path=path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise IrkitError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=path, line=n) from None
            if line.strip():
                yield n, line.rstrip("\r\n")


def _json_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise IrkitError(f"malformed JSON ({e.msg})", path=path, line=n) from None
        if not isinstance(obj, dict):
            raise IrkitError("expected a JSON object", path=path, line=n)
        yield n, obj


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON file that must hold one object (manifests, configs); errors start with ``what``."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IrkitError(f"{what}: malformed JSON ({e})", path=path) from None
    if not isinstance(obj, dict):
        raise IrkitError(f"{what}: expected a JSON object", path=path)
    return obj


def _id_field(obj: dict, path: str | Path, n: int) -> str:
    for key in ("_id", "id", "docid"):
        if key in obj:
            value = obj[key]
            if not isinstance(value, str | int) or str(value).strip() == "":
                raise IrkitError(f"empty or invalid {key!r}", path=path, line=n)
            return str(value)
    raise IrkitError("missing '_id'", path=path, line=n)


def read_corpus(path: str | Path) -> Iterator[Doc]:
    """Documents of a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``), validated line by line."""
    seen: set[str] = set()
    for n, obj in _json_lines(path):
        docid = _id_field(obj, path, n)
        if docid in seen:
            raise IrkitError(f"duplicate _id {docid!r}", path=path, line=n)
        seen.add(docid)
        title = obj.get("title") or ""
        text = obj.get("text", obj.get("contents")) or ""
        if not isinstance(title, str) or not isinstance(text, str):
            raise IrkitError(f"document {docid!r}: title and text must be strings", path=path, line=n)
        if not text.strip() and not title.strip():
            raise IrkitError(f"document {docid!r} has empty text", path=path, line=n)
        yield Doc(docid, title, text)


def read_queries(path: str | Path) -> Queries:
    """Queries from BEIR ``queries.jsonl`` or a ``qid<TAB>query`` topics file (by extension)."""
    path = Path(path)
    if path.suffix in (".tsv", ".txt", ".topics"):
        return read_topics_tsv(path)
    texts: dict[str, str] = {}
    for n, obj in _json_lines(path):
        qid = _id_field(obj, path, n)
        text = obj.get("text", obj.get("query"))
        if not isinstance(text, str) or not text.strip():
            raise IrkitError(f"query {qid!r} has empty text", path=path, line=n)
        if qid in texts:
            raise IrkitError(f"duplicate query id {qid!r}", path=path, line=n)
        texts[qid] = text
    return Queries(texts)


def read_topics_tsv(path: str | Path) -> Queries:
    texts: dict[str, str] = {}
    for n, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip():
            raise IrkitError(f"expected 'qid<TAB>query', got {len(parts)} column(s)", path=path, line=n)
        if parts[0] in texts:
            raise IrkitError(f"duplicate query id {parts[0]!r}", path=path, line=n)
        texts[parts[0]] = parts[1]
    return Queries(texts)


def read_qrels(path: str | Path, queries: Queries | None = None) -> Qrels:
    """Qrels from a BEIR TSV (with ``query-id`` header) or a TREC qrels file.

    With ``queries``, a judgment for a query that is not among them is an error.
    """
    judgments: dict[str, dict[str, int]] = {}
    for n, line in _lines(path):
        parts = line.split()
        if n == 1 and parts and parts[0] == "query-id":
            continue
        if len(parts) == 3:
            qid, docid, grade = parts
        elif len(parts) == 4:
            qid, _, docid, grade = parts
        else:
            raise IrkitError(f"expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}", path=path, line=n)
        try:
            g = int(grade)
        except ValueError:
            raise IrkitError(f"relevance grade {grade!r} is not an integer", path=path, line=n) from None
        if queries is not None and qid not in queries:
            raise IrkitError(f"qrels name query {qid!r}, which is not among the queries", path=path, line=n)
        judgments.setdefault(qid, {})[docid] = g
    return Qrels(judgments)


def write_qrels(qrels: Qrels, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                f.write(f"{qid} 0 {docid} {grade}\n")


def read_run(path: str | Path, queries: Queries | None = None, docids: Container[str] | None = None) -> Ranking:
    """A TREC run (``qid Q0 docid rank score tag``), validated line by line.

    With ``queries``, a qid without a topic is an error; with ``docids`` (e.g. a DocStore),
    so is a docid outside it; a docid listed twice for one query always is.
    """
    cols: dict[str, tuple[list[str], list[float]]] = {}
    seen: set[tuple[str, str]] = set()
    known: set[str] = set()
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise IrkitError(f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}", path=path, line=n)
        qid, _, docid, _, score, _ = parts
        try:
            s = float(score)
        except ValueError:
            raise IrkitError(f"score {score!r} is not a number", path=path, line=n) from None
        if not np.isfinite(s):
            raise IrkitError(f"score {score!r} is not finite", path=path, line=n)
        if queries is not None and qid not in queries:
            raise IrkitError(f"run names query {qid!r}, which has no topic", path=path, line=n)
        if (qid, docid) in seen:
            raise IrkitError(f"docid {docid!r} is listed twice for query {qid!r}", path=path, line=n)
        seen.add((qid, docid))
        if docids is not None and docid not in known:
            if docid not in docids:
                raise IrkitError(f"docid {docid!r} is not in {docids!r}", path=path, line=n)
            known.add(docid)
        docs, scores = cols.setdefault(qid, ([], []))
        docs.append(docid)
        scores.append(s)
    if not cols:
        raise IrkitError("run is empty", path=path)
    return Ranking.from_lists(cols, queries)


def write_run(run: Ranking, path: str | Path, tag: str = "irkit") -> None:
    """Write a TREC run atomically: the file is complete or absent."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for qid, (docids, scores) in run.items():
            for rank, (d, s) in enumerate(zip(docids, scores, strict=True), start=1):
                f.write(f"{qid} Q0 {d} {rank} {s:.6f} {tag}\n")
