"""The stage contract is open: a new index kind, rewriter and filter, each defined in this one file and
registered with one line, work from Python, YAML and the CLI; role mismatches fail when a pipeline is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import irkit
from irkit import index
from irkit.cli import main
from irkit.data.docstore import DocStore
from irkit.data.io import read_run
from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.index.manifest import DOCSTORE, build_docstore, building, docs_of, read_manifest, write_manifest
from irkit.pipeline import config
from irkit.pipeline.operators import Fuse, Interpolate, linear
from irkit.pipeline.stage import Filter, QueryRewriter, Reranker, Retriever

# --- a toy index kind: term overlap, one module's worth of code ------------------------------------------


class OverlapIndex:
    def __init__(self, path: Path) -> None:
        self.manifest = read_manifest(path, "overlap")
        self.docstore = DocStore(Path(path) / DOCSTORE)

    @classmethod
    def load(cls, path: str | Path) -> OverlapIndex:
        return cls(Path(path))


def build_overlap_index(
    corpus_or_docs: object, out_dir: str | Path, overwrite: bool = False, show_progress: bool = True, lower: bool = True
) -> OverlapIndex:
    with building(out_dir, overwrite) as tmp:
        build_docstore(tmp / DOCSTORE, docs_of(corpus_or_docs))
        write_manifest(tmp, {"type": "overlap", "doc_count": len(DocStore(tmp / DOCSTORE)), "lower": lower})
    return OverlapIndex.load(out_dir)


class Overlap(Retriever):
    """Scores a document by the number of distinct query words it contains (times ``boost``)."""

    name = "overlap"

    def __init__(self, index: str | Path, depth: int = 1000, boost: float = 1.0) -> None:
        self.index_path, self.depth, self.boost = str(index), depth, boost
        self.index = OverlapIndex.load(index)

    def params(self) -> dict[str, object]:
        return {"index": self.index_path, "depth": self.depth, "boost": self.boost}

    def retrieve(self, queries: Queries, k: int) -> Ranking:
        docs = list(self.index.docstore)
        scores = {}
        for q, text in queries.items():
            words = set(text.lower().split())
            scores[q] = {d.docid: self.boost * len(words & set(d.contents.lower().split())) for d in docs}
        return Ranking.from_scores(scores, queries, self.index.docstore).top_k(k)


class Expand(QueryRewriter):
    """Weighted variants: the query itself and the query with an extra word."""

    name = "expand"

    def __init__(self, word: str = "cells", weight: float = 0.5) -> None:
        self.word, self.weight = word, weight

    def params(self) -> dict[str, object]:
        return {"word": self.word, "weight": self.weight}

    def rewrite(self, query: str) -> list[tuple[str, float]]:
        return [(query, 1.0), (f"{query} {self.word}", self.weight)]


class MinScore(Filter):
    name = "min_score"

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    def params(self) -> dict[str, object]:
        return {"threshold": self.threshold}

    def keep(self, query: str, docids: list[str], scores: np.ndarray) -> np.ndarray:
        return scores >= self.threshold


class Length(Reranker):
    name = "length"

    def score(self, query: str, docs: list) -> np.ndarray:
        return np.array([len(irkit.pipeline.stage.doc_text(d)) for d in docs], dtype=np.float64)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one registry line per component (undone after the test)."""
    monkeypatch.setitem(index.KINDS, "overlap", index.IndexKind(OverlapIndex, build_overlap_index, Overlap))
    for name, cls in (("overlap", Overlap), ("expand", Expand), ("min_score", MinScore), ("length", Length)):
        monkeypatch.setitem(config.STAGES, name, cls)


@pytest.fixture
def built(registered: None, scifact_slice: Path, tmp_path: Path) -> Path:
    out = tmp_path / "overlap-index"
    assert main(["index", "build", "--type", "overlap", "--corpus", str(scifact_slice), "--out", str(out)]) == 0
    return out


def test_new_index_kind_from_cli_python_and_yaml(built: Path, scifact_slice: Path, tmp_path: Path, capsys) -> None:
    assert isinstance(index.open(built), OverlapIndex) and index.type_of(built) == "overlap"
    queries = irkit.load_dataset(scifact_slice, "test").queries
    # CLI search: the kind's own option (--boost) comes from its retriever's signature
    run = tmp_path / "o.trec"
    argv = ["search", "--index", str(built), "--dataset", str(scifact_slice), "--out", str(run), "--depth", "5"]
    assert main([*argv, "--boost", "2"]) == 0
    python = index.retriever(built, depth=5, boost=2.0)(queries)
    _same(read_run(run), python)
    # an option of another kind is refused by name
    assert main([*argv, "--search-params", "nprobe=4"]) == 2
    assert "--search-params do(es) not apply to overlap" in capsys.readouterr().err
    # YAML, including a rewriter before it and a filter after it, through `irkit run`
    spec = {
        "pipeline": [{"expand": {}}, {"overlap": {"index": str(built)}, "top_k": 20}, {"min_score": {"threshold": 0.9}}]
    }
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(json.dumps(spec))
    out = tmp_path / "p.trec"
    assert main(["run", str(yaml_file), "--dataset", str(scifact_slice), "--out", str(out), "--no-progress"]) == 0
    pipe = Expand() >> Overlap(built) % 20 >> MinScore(0.9)
    assert config.to_dict(pipe) == config.to_dict(config.load_pipeline(yaml_file))
    direct = pipe(queries)
    _same(read_run(out), direct.subset(q for q in direct if len(direct[q][0])))


def _same(a: Ranking, b: Ranking) -> None:
    """The same ranked lists, with scores equal to the 6 decimals a run file keeps."""
    assert list(a) == list(b)
    for q in a:
        assert list(a[q][0]) == list(b[q][0]) and np.allclose(a[q][1], b[q][1], atol=1e-6)


def test_rewriter_variants_are_fused_by_the_retriever(built: Path) -> None:
    retriever = Overlap(built, depth=50)
    queries = Queries({"1": "stem cells in bone marrow", "2": "vitamin d deficiency"})
    rewritten = Expand()(queries)
    assert rewritten.texts == queries.texts and rewritten.fields["original"] == queries.texts
    assert rewritten.fields["variants"]["1"] == [
        ("stem cells in bone marrow", 1.0),
        ("stem cells in bone marrow cells", 0.5),
    ]
    out = retriever.transform_k(rewritten, 50)
    for q in queries:
        parts = [Ranking({q: retriever(Queries({q: t}))[q]}) for t, _ in rewritten.fields["variants"][q]]
        expected = Ranking.from_scores(linear(parts, [1.0, 0.5])).top_k(50)
        assert list(out[q][0]) == list(expected[q][0]) and np.allclose(out[q][1], expected[q][1])
    # one variant of weight 1 is exactly plain retrieval
    single = Queries(queries.texts, {"variants": {q: [(t, 1.0)] for q, t in queries.items()}})
    plain = retriever(queries)
    for q in queries:
        assert list(retriever(single)[q][0]) == list(plain[q][0])


def test_filter_may_empty_a_list_and_evaluation_still_works(built: Path, scifact_slice: Path) -> None:
    ds = irkit.load_dataset(scifact_slice, "test")
    run = (Overlap(built) % 10 >> MinScore(1e9))(ds.queries)
    assert len(run) == len(ds.queries) and all(len(d) == 0 for d, _ in run.results.values())
    assert Length()(run).results.keys() == run.results.keys()  # an empty list flows through a reranker
    assert irkit.evaluate(run, ds.qrels, ["nDCG@10"])["nDCG@10"] == 0.0


def test_interpolate_equals_linear_fusion_without_retrieving_twice(built: Path, scifact_slice: Path) -> None:
    queries = irkit.load_dataset(scifact_slice, "test").queries
    first = Overlap(built) % 20
    once = (first >> Length() >> Interpolate(0.3))(queries)
    twice = Fuse([first, first >> Length()], method="linear", weights=[0.7, 0.3])(queries)
    for q in queries:
        assert dict(zip(*once[q], strict=True)) == pytest.approx(dict(zip(*twice[q], strict=True)))


@pytest.mark.parametrize(
    ("pipe", "message"),
    [
        (lambda r: Length() >> r, "Length() produces ranking, but Overlap"),  # retriever after a ranking
        (lambda r: Expand() >> Length(), "it needs candidates: put a retriever between them"),  # reranker on queries
        (lambda r: r >> Expand(), "move it before the retriever"),  # rewriter after a ranking
        (lambda r: Expand() >> MinScore(), "MinScore(threshold=0.0) cannot follow Expand"),  # filter on queries
        (lambda r: Expand() % 3, "'%' cuts rankings"),
        (lambda r: Fuse([r, Length()]), "take different ones"),
        (lambda r: Fuse([r, Expand()]), "fuses rankings"),
    ],
)
def test_role_mismatch_in_python_names_both_stages(built: Path, pipe, message: str) -> None:
    with pytest.raises(IrkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipe(Overlap(built))


@pytest.mark.parametrize(
    ("steps", "where", "message"),
    [
        ([{"length": {}}, {"overlap": {"index": "/not/built"}}], "pipeline[1]", "overlap cannot follow length"),
        ([{"expand": {}}, {"length": {}}], "pipeline[1]", "length cannot follow expand"),
        ([{"overlap": {"index": "/not/built"}}, {"expand": {}}], "pipeline[1]", "expand cannot follow overlap"),
        ([{"min_score": {}}], None, None),
        ([{"expand": {}, "top_k": 3}], "pipeline[0].top_k", "top_k cuts rankings"),
        ([{"fuse": "rrf", "of": [{"overlap": {"index": "/x"}}, {"length": {}}]}], "pipeline[0].of[1]", "does not fit"),
    ],
)
def test_role_mismatch_in_yaml_fails_before_anything_is_built(registered: None, steps, where, message) -> None:
    if where is None:  # a pipeline may start with a ranking consumer: `irkit rerank --stage FILE.yaml`
        assert config.load_pipeline({"pipeline": steps}).consumes == "ranking"
        return
    with pytest.raises(IrkitError) as e:  # the index does not exist: the role error comes first
        config.load_pipeline({"pipeline": steps})
    assert str(e.value).startswith(f"{where}: ") and message in str(e.value)
