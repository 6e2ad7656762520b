"""Readers and writers in the ecosystem's formats: BEIR, TREC run/qrels, topics TSV.

One policy for every reader: UTF-8 text, a leading byte-order mark is dropped, a gzip'd
file (``corpus.jsonl.gz``) is read as its contents, and ids are non-empty strings without
whitespace (a JSON id may also be an integer). The writers refuse what the readers would
refuse, so everything irkit writes it can read back.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import json
import os
import re
import zlib
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
    if path.is_dir():
        raise IrkitError("output is a directory; give a file path", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _raw_lines(path: Path) -> Iterator[bytes]:
    """The byte lines of ``path``, decompressed when it is gzip'd (by its magic bytes, not its name)."""
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            f.seek(0)
            yield from f
            return
        f.seek(0)
        n = 1  # the line being read when the stream breaks
        try:
            with gzip.open(f) as gz:
                for raw in gz:
                    yield raw
                    n += 1
        except (OSError, EOFError, zlib.error) as e:
            raise IrkitError(f"corrupt gzip file ({e})", path=path, line=n) from None


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Numbered, decoded, non-blank lines; bad UTF-8 names the file and line; a leading BOM is dropped."""
    path = Path(path)
    if not path.is_file():
        raise IrkitError("file not found", path=path)
    for n, raw in enumerate(_raw_lines(path), start=1):
        if n == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise IrkitError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=path, line=n) from None
        if line.strip():
            yield n, line.rstrip("\r\n")


# a JSON escape of a UTF-16 surrogate: a lone one decodes to a string that cannot be written as UTF-8
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _json_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            reason = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise IrkitError(f"malformed JSON ({reason})", path=path, line=n) from None
        if not isinstance(obj, dict):
            raise IrkitError("expected a JSON object", path=path, line=n)
        if _SURROGATE_ESCAPE.search(line):
            try:
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise IrkitError(
                    "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)", path=path, line=n
                ) from None
        yield n, obj


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON file that must hold one object (manifests, configs); errors start with ``what``."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IrkitError(f"{what}: malformed JSON ({e})", path=path) from None
    if not isinstance(obj, dict):
        raise IrkitError(f"{what}: expected a JSON object", path=path)
    return obj


BOM = "\ufeff"


def valid_id(value: str) -> bool:
    """Whether ``value`` can be a qid or docid: non-empty, no whitespace (TREC files split on it), no
    U+FEFF (at the start of a file it would be read as a byte-order mark)."""
    return value.split() == [value] and BOM not in value


def _id_field(obj: dict, path: str | Path, n: int) -> str:
    for key in ("_id", "id", "docid"):
        if key in obj:
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise IrkitError(f"{key!r} must be a string or an integer, got {value!r}", path=path, line=n)
            if not valid_id(str(value)):
                raise IrkitError(f"{key!r} {value!r} is empty or holds whitespace or U+FEFF", path=path, line=n)
            return str(value)
    raise IrkitError("missing '_id'", path=path, line=n)


def _text_field(obj: dict, keys: tuple[str, ...], path: str | Path, n: int) -> str:
    """The first of ``keys`` present (absent or null is ""); anything but a string is an error."""
    for key in keys:
        if obj.get(key) is not None:
            if not isinstance(obj[key], str):
                raise IrkitError(f"{key!r} must be a string, got {obj[key]!r}", path=path, line=n)
            return obj[key]
    return ""


def read_corpus(path: str | Path) -> Iterator[Doc]:
    """Documents of a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``), validated line by line."""
    seen: set[str] = set()
    for n, obj in _json_lines(path):
        docid = _id_field(obj, path, n)
        if docid in seen:
            raise IrkitError(f"duplicate _id {docid!r}", path=path, line=n)
        seen.add(docid)
        title = _text_field(obj, ("title",), path, n)
        text = _text_field(obj, ("text", "contents"), path, n)
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
        text = _text_field(obj, ("text", "query"), path, n)
        if not text.strip():
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
        if not valid_id(parts[0]):
            raise IrkitError(f"query id {parts[0]!r} is empty or holds whitespace or U+FEFF", path=path, line=n)
        if parts[0] in texts:
            raise IrkitError(f"duplicate query id {parts[0]!r}", path=path, line=n)
        texts[parts[0]] = parts[1]
    return Queries(texts)


# pytrec_eval stores grades as C integers, and its nDCG walks every level up to the largest grade
# (a grade of 2**31 - 1 took 27 s to evaluate one query); real qrels grade 0-4
GRADE_LIMIT = 10**6


def read_qrels(path: str | Path, queries: Queries | None = None) -> Qrels:
    """Qrels from a BEIR TSV (with ``query-id`` header) or a TREC qrels file.

    With ``queries``, a judgment for a query that is not among them is an error.
    """
    judgments: dict[str, dict[str, int]] = {}
    for n, line in _lines(path):
        _no_bom(line, path, n)
        parts = line.split()
        if n == 1 and parts[:2] == ["query-id", "corpus-id"]:  # the BEIR header (a TREC line has 4 columns)
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
        if not -GRADE_LIMIT < g < GRADE_LIMIT:
            raise IrkitError(f"relevance grade {g} is outside ±{GRADE_LIMIT - 1}", path=path, line=n)
        if queries is not None and qid not in queries:
            raise IrkitError(f"qrels name query {qid!r}, which is not among the queries", path=path, line=n)
        judgments.setdefault(qid, {})[docid] = g
    return Qrels(judgments)


def write_qrels(qrels: Qrels, path: str | Path) -> None:
    """Write TREC qrels atomically; ids and grades ``read_qrels`` would refuse are refused here."""
    for qid, docs in qrels.items():
        _check_written_id("query id", qid, path)
        for docid, grade in docs.items():
            _check_written_id("docid", docid, path)
            is_int = isinstance(grade, int | np.integer) and not isinstance(grade, bool)
            if not is_int or not -GRADE_LIMIT < grade < GRADE_LIMIT:
                raise IrkitError(f"query {qid!r}, docid {docid!r}: grade {grade!r} is not a qrels grade", path=path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                f.write(f"{qid} 0 {docid} {int(grade)}\n")


def read_run(path: str | Path, queries: Queries | None = None, docids: Container[str] | None = None) -> Ranking:
    """A TREC run (``qid Q0 docid rank score tag``), validated line by line.

    With ``queries``, a qid without a topic is an error; with ``docids`` (e.g. a DocStore),
    so is a docid outside it; a docid listed twice for one query always is.
    """
    cols: dict[str, tuple[list[str], list[float]]] = {}
    seen: set[tuple[str, str]] = set()
    known: set[str] = set()
    for n, line in _lines(path):
        _no_bom(line, path, n)
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
    """Write a TREC run atomically: the file is complete or absent.

    Ids and scores ``read_run`` would refuse (empty ids, whitespace, NaN or infinite scores)
    are refused before anything is written, naming the query and document.
    """
    if not isinstance(tag, str) or not valid_id(tag):
        raise IrkitError(f"run tag {tag!r} is empty or holds whitespace or U+FEFF", path=path)
    for qid, (docids, scores) in run.items():
        _check_written_id("query id", qid, path)
        for d in docids:
            _check_written_id("docid", d, path)
        bad = np.flatnonzero(~np.isfinite(np.asarray(scores, dtype=np.float64)))
        if len(bad):
            i = int(bad[0])
            raise IrkitError(f"query {qid!r}, docid {docids[i]!r}: score {scores[i]} is not finite", path=path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for qid, (docids, scores) in run.items():
            for rank, (d, s) in enumerate(zip(docids, scores, strict=True), start=1):
                f.write(f"{qid} Q0 {d} {rank} {s:.6f} {tag}\n")


def _no_bom(line: str, path: str | Path, n: int) -> None:
    """Refuse U+FEFF in a line of ids and numbers: it would become part of an id."""
    if BOM in line:
        raise IrkitError("U+FEFF (a byte-order mark) inside the line", path=path, line=n)


def _check_written_id(what: str, value: object, path: str | Path) -> None:
    if not isinstance(value, str) or not valid_id(value):
        raise IrkitError(f"{what} {value!r} is empty or not a string, or holds whitespace or U+FEFF", path=path)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IrkitError(f"{what} {value!r} holds a lone surrogate; it cannot be written", path=path) from None
