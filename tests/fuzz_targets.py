"""Fuzz targets: every reader and the YAML pipeline loader, fed generated input through a real file.

A target either accepts its input or raises ``IrkitError``; anything else is a bug. What a reader
accepts must also survive irkit's own writers: ids go through ``write_run`` / ``write_qrels`` and
are read back unchanged. ``tests/test_fuzz.py`` runs each target on a bounded number of examples;
``eval/fuzz.py --seconds N`` runs them for longer and reports the counts.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from irkit.data.docstore import Doc
from irkit.data.io import read_corpus, read_qrels, read_queries, read_run, write_qrels, write_run
from irkit.data.types import Qrels, Ranking
from irkit.errors import IrkitError
from irkit.index.bm25 import build_bm25_index
from irkit.pipeline.config import load_pipeline

# characters that break line- and column-based formats, plus lone surrogates (hypothesis omits them by default)
TRICKY = ["\t", " ", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\ufeff", "\x00", "\ud800", "#"]
text = st.text(st.characters(exclude_categories=()) | st.sampled_from(TRICKY), max_size=12)
number = st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
scalar = st.none() | st.booleans() | number | text
json_value = st.recursive(
    scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3), max_leaves=6
)
token = (
    text | number.map(str) | st.sampled_from(["Q0", "0", "1", "-1", "query-id", "nan", "inf", "1e400", "0x10", "1_0"])
)


@st.composite
def lines_file(draw: st.DrawFn, line: st.SearchStrategy[str]) -> bytes:
    """A file of generated lines: maybe a BOM, CRLF or blank lines, invalid UTF-8, gzip."""
    lines = draw(st.lists(line | st.sampled_from(["", " ", "\x00"]), max_size=6))
    body = draw(st.sampled_from(["\n", "\r\n"])).join(lines)
    data = body.encode("utf-8", errors="surrogatepass")  # a lone surrogate becomes invalid UTF-8
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    if draw(st.integers(0, 9)) == 0:
        data = draw(st.binary(max_size=40)) + data
    if draw(st.integers(0, 5)) == 0:
        data = gzip.compress(data)[: draw(st.integers(0, 200))] if draw(st.booleans()) else gzip.compress(data)
    return data


def json_line(keys: list[str]) -> st.SearchStrategy[str]:
    obj = st.dictionaries(st.sampled_from([*keys, "x"]) | text, json_value, max_size=4)
    return st.tuples(obj, st.booleans()).map(lambda o: json.dumps(o[0], ensure_ascii=o[1])) | text


def columns(n: int) -> st.SearchStrategy[str]:
    return st.tuples(st.lists(token, min_size=n - 1, max_size=n + 1), st.sampled_from([" ", "\t", "  "])).map(
        lambda t: t[1].join(t[0])
    )


# a TREC run line with the right shape, so that accepted runs (and their round trip) are common
run_line = st.builds(
    lambda q, d, r, score, t, sep: sep.join([q, "Q0", d, r, score, t]),
    token,
    token,
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr) | token,
    token,
    st.sampled_from([" ", "\t"]),
)


@contextlib.contextmanager
def _written_and_read_back() -> Iterator[None]:
    """Writing what a reader accepted, and reading it back, must not fail: an IrkitError here is a bug."""
    try:
        yield
    except IrkitError as e:
        raise AssertionError(f"irkit accepted input it cannot write and read back: {e}") from e


def _round_trip_ids(qids: list[str], docids: list[str], tmp: Path) -> None:
    """Ids a reader accepted, written as a run and a qrels file by irkit, read back unchanged."""
    with _written_and_read_back():
        run = Ranking({q: (list(docids), np.arange(len(docids), 0, -1, dtype=np.float64)) for q in qids})
        write_run(run, tmp / "out.trec")
        qrels = Qrels({q: dict.fromkeys(docids, 1) for q in qids})
        write_qrels(qrels, tmp / "out.qrels")
        if qids and docids:
            again = read_run(tmp / "out.trec")
            assert {q: d for q, (d, _) in again.items()} == {q: list(docids) for q in qids}
            assert read_qrels(tmp / "out.qrels").judgments == qrels.judgments


def corpus(path: Path, tmp: Path) -> None:
    docs = list(read_corpus(path))
    assert all(isinstance(x, str) for d in docs for x in d) and all((d.title + d.text).strip() for d in docs)
    _round_trip_ids(["q1"], [d.docid for d in docs], tmp)


def queries(path: Path, tmp: Path) -> None:
    _round_trip_ids(list(read_queries(path)), ["d1"], tmp)


def qrels(path: Path, tmp: Path) -> None:
    judged = read_qrels(path)
    with _written_and_read_back():
        write_qrels(judged, tmp / "out.qrels")
        if len(judged):
            assert read_qrels(tmp / "out.qrels").judgments == judged.judgments


def run(path: Path, tmp: Path) -> None:
    ranking = read_run(path)
    with _written_and_read_back():
        write_run(ranking, tmp / "out.trec")
        again = read_run(tmp / "out.trec")
    for q, (docids, scores) in ranking.items():
        assert list(again[q][0]) == list(docids)
        assert np.allclose(again[q][1], scores, rtol=1e-9, atol=1e-6)


INDEX = "INDEX"  # stands for a real BM25 index, so that valid pipelines occur and are built


def _step(children: st.SearchStrategy[dict] | None = None) -> st.SearchStrategy[dict]:
    top_k = st.fixed_dictionaries({}, optional={"top_k": number | text})
    if children is None:  # a stage: known names, a real or made-up index, numeric parameters
        params = st.fixed_dictionaries(
            {"index": st.just(INDEX) | text},
            optional={"depth": number, "k1": number, "b": number, "threads": number, "x": json_value},
        )
        return st.builds(lambda n, p, t: {n: p, **t}, st.sampled_from(["bm25", "dense", "colbert"]), params, top_k)
    fuse = st.fixed_dictionaries(
        {"fuse": st.sampled_from(["rrf", "linear", "max"]), "of": st.lists(children, max_size=3)},
        optional={"k": number, "weights": st.lists(number, max_size=3), "top_k": number},
    )
    return st.builds(lambda s, t: {"pipeline": s, **t}, st.lists(children, max_size=3), top_k) | fuse


@st.composite
def pipeline_text(draw: st.DrawFn) -> str:
    """Pipeline-shaped YAML (stages that load no model), or any YAML value; then maybe mangled with YAML syntax."""
    import yaml

    steps = st.recursive(_step(), _step, max_leaves=4)
    doc: Any = draw(st.fixed_dictionaries({"pipeline": st.lists(steps, max_size=3)}) | json_value)
    out = yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), default_flow_style=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3)) if draw(st.booleans()) else 0):
        at = draw(st.integers(0, len(out)))
        junk = draw(
            st.sampled_from(["&a ", "*a", "!!int ", "!!python/name:os.system ", "[", "{", ": ", "- ", "\t", "%"])
        )
        out = out[:at] + junk + out[at:]
    return out


def yaml_pipeline(path: Path, tmp: Path) -> None:
    index = tmp / "bm25-index"
    if not index.exists():
        build_bm25_index(
            [Doc("d1", "", "insulin and glucose"), Doc("d2", "", "blood pressure")], index, show_progress=False
        )
    path.write_bytes(path.read_bytes().replace(INDEX.encode(), str(index).encode()))
    load_pipeline(path)


#: name -> (strategy for a file's bytes, the file's name, target reading that file)
TARGETS: dict[str, tuple[st.SearchStrategy[bytes], str, Callable[[Path, Path], None]]] = {
    "corpus": (lines_file(json_line(["_id", "id", "docid", "title", "text", "contents"])), "corpus.jsonl", corpus),
    "queries": (lines_file(json_line(["_id", "id", "text", "query"])), "queries.jsonl", queries),
    "topics": (
        lines_file(st.tuples(token, st.sampled_from(["\t", " "]), text).map("".join) | columns(2)),
        "topics.tsv",
        queries,
    ),
    "qrels": (lines_file(columns(3) | columns(4)), "qrels.txt", qrels),
    "run": (lines_file(columns(6) | run_line), "run.trec", run),
    "yaml": (
        pipeline_text().map(lambda s: s.encode("utf-8", errors="surrogatepass")) | st.binary(max_size=200),
        "pipeline.yaml",
        yaml_pipeline,
    ),
}


def check(name: str, data: bytes, tmp: Path, counts: Counter[str]) -> None:
    """Run one target on ``data`` written to its file: accepted or IrkitError (counted); anything else propagates."""
    _, filename, target = TARGETS[name]
    path = tmp / filename
    path.write_bytes(data)
    try:
        target(path, tmp)
    except IrkitError:
        counts["irkit_error"] += 1
    else:
        counts["accepted"] += 1
