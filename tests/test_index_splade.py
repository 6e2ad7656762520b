"""The SPLADE first stage on real SPLADE-tiny weights over a SciFact slice: Lucene impact scores are the dot
products of the quantised query and document vectors; CLI, Python and YAML give the same run; a build killed
with SIGKILL resumes and indexes the same postings; bad input is an IrkitError."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from crash import kill_when_written
from fetched import needs

import irkit
from irkit import index
from irkit.cli import main
from irkit.data.docstore import Doc
from irkit.data.io import read_run
from irkit.errors import IrkitError
from irkit.index.manifest import work_dir
from irkit.index.splade import SpladeIndex, build_splade_index
from irkit.models.splade import Splade
from irkit.pipeline import config
from irkit.retrieve.splade import SpladeRetriever

pytestmark = needs("splade-tiny")

MAX_LENGTH = 64  # a short token cap keeps encoding the slice to a few seconds on 2 cores
DOCS = 200


@pytest.fixture(scope="module")
def slice_dir(scifact_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 200 documents of the SciFact slice, with its queries and qrels."""
    out = tmp_path_factory.mktemp("splade-slice")
    lines = (scifact_slice / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:DOCS]
    (out / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    (out / "queries.jsonl").symlink_to(scifact_slice / "queries.jsonl")
    (out / "qrels").symlink_to(scifact_slice / "qrels")
    return out


@pytest.fixture(scope="module")
def built(slice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slice indexed through the command line."""
    out = tmp_path_factory.mktemp("splade-index") / "scifact-splade"
    argv = ["index", "build", "--type", "splade", "--corpus", str(slice_dir), "--out", str(out), "--quiet"]
    assert main([*argv, "--max-length", str(MAX_LENGTH), "--chunk-size", "64"]) == 0
    return out


@pytest.fixture(scope="module")
def splade() -> Splade:
    return Splade("splade-tiny", max_length=MAX_LENGTH)


def dot(q: dict[str, int], d: dict[str, int]) -> float:
    terms = sorted(set(q) & set(d))
    return float(np.dot(np.array([q[t] for t in terms], dtype=np.int64), np.array([d[t] for t in terms])))


def test_scores_are_dot_products_of_the_quantised_vectors(built: Path, splade: Splade, slice_dir: Path) -> None:
    ix = index.open(built)
    assert isinstance(ix, SpladeIndex) and len(ix) == DOCS and ix.model == "splade-tiny" and ix.scale == 100
    assert ix.manifest["build"]["max_length"] == MAX_LENGTH and ix.manifest["empty_documents"] == 0
    queries = irkit.load_dataset(slice_dir, "test").queries
    qids = list(queries)[:3]
    retriever = SpladeRetriever(built, depth=10)
    ranking = retriever(queries.subset(qids))
    qvecs = splade.terms([queries[q] for q in qids], scale=100)
    assert qvecs == retriever.query_vectors([queries[q] for q in qids])
    docs = ix.docstore.docids()
    others = [docs[i] for i in np.random.default_rng(0).choice(len(docs), 8, replace=False)]
    for q, qvec in zip(qids, qvecs, strict=True):
        found, scores = ranking[q]
        assert len(found) == 10 and np.all(np.diff(scores) <= 0)
        checked = found + [d for d in others if d not in found]
        dvecs = splade.terms([d.contents for d in ix.docstore.get_many(checked)], scale=100)
        expected = np.array([dot(qvec, v) for v in dvecs])
        assert scores.tolist() == expected[: len(found)].tolist()  # integers: exact in float32
        assert np.all(expected[len(found) :] <= scores[-1])  # no document outside the top 10 scores higher


def _same(a: irkit.Ranking, b: irkit.Ranking) -> None:
    assert list(a) == list(b)
    for q in a:
        assert a[q][0] == b[q][0] and np.allclose(a[q][1], b[q][1])


def test_cli_python_and_yaml_give_the_same_run(built: Path, slice_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "cli.trec"
    argv = ["search", "--index", str(built), "--dataset", str(slice_dir), "--out", str(run), "--depth", "20"]
    assert main(argv) == 0
    queries = irkit.load_dataset(slice_dir, "test").queries
    python = index.retriever(built, depth=20)(queries)
    _same(read_run(run), python)
    assert {line.split()[-1] for line in run.read_text().splitlines()} == {"splade"}

    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(json.dumps({"pipeline": [{"splade_index": {"index": str(built)}, "top_k": 20}]}))
    pipe = config.load_pipeline(yaml_file)
    assert config.to_dict(pipe) == config.to_dict(SpladeRetriever(built) % 20)
    out = tmp_path / "yaml.trec"
    assert main(["run", str(yaml_file), "--dataset", str(slice_dir), "--out", str(out), "--no-progress"]) == 0
    _same(read_run(out), python)
    # real weights on real data: judged queries find a relevant document in their top 20 of 200 (chance: 10 %)
    docids = set(SpladeIndex.load(built).docstore.docids())
    qrels = irkit.load_dataset(slice_dir, "test").qrels
    relevant = {q: {d for d, g in qrels[q].items() if g > 0 and d in docids} for q in python if q in qrels}
    hit = [bool(relevant[q] & set(python[q][0])) for q in relevant if relevant[q]]
    assert len(hit) >= 5 and np.mean(hit) >= 0.75


def test_documents_without_a_surviving_weight_are_counted_not_indexed(splade: Splade, tmp_path: Path) -> None:
    docs = [Doc("e1", "", "the"), Doc("e2", "", "of the"), Doc("v", "", "Vitamin D deficiency in elderly patients")]
    docs.append(Doc("z", "", "zzzz"))
    scale = 0.3  # only weights >= 1.67 survive
    empty = sum(1 for v in splade.terms([d.contents for d in docs], scale=scale) if not v)
    assert 0 < empty < len(docs)
    ix = build_splade_index(docs, tmp_path / "ix", scale=scale, max_length=MAX_LENGTH, show_progress=False)
    assert len(ix) == len(docs) == len(ix.docstore) and ix.manifest["empty_documents"] == empty
    assert SpladeRetriever(ix.path).search("vitamin d deficiency", 3)[0][0] == "v"


def test_bad_input_is_an_irkit_error_naming_file_and_line(slice_dir: Path, tmp_path: Path) -> None:
    lines = (slice_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:5]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines[:2]) + '{"_id": "x", "text": \n' + "".join(lines[2:]), encoding="utf-8")
    out = tmp_path / "ix"
    with pytest.raises(IrkitError) as e:
        build_splade_index(bad, out, max_length=MAX_LENGTH, show_progress=False)
    assert Path(e.value.path) == bad and e.value.line == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # no index, work or lock left
    for kwargs, message in (
        ({"scale": 0.0}, "scale must be a finite number > 0"),
        ({"scale": float("nan")}, "scale must be a finite number > 0"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
        ({"model": "no-such-splade"}, "unknown model 'no-such-splade'"),
    ):
        with pytest.raises(IrkitError, match=message):
            build_splade_index(slice_dir, out, show_progress=False, **kwargs)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    with pytest.raises(IrkitError, match="expected a splade index"):
        SpladeRetriever(_bm25(slice_dir, tmp_path))
    with pytest.raises(IrkitError, match="depth must be between"):
        SpladeRetriever(tmp_path, depth=0)


def _bm25(corpus: Path, tmp_path: Path) -> Path:
    irkit.build_bm25_index(corpus, tmp_path / "bm25", show_progress=False)
    return tmp_path / "bm25"


BUILD = (
    "import sys\n"
    "from irkit.index.splade import build_splade_index\n"
    "build_splade_index(sys.argv[1], sys.argv[2], max_length=int(sys.argv[3]), chunk_size=int(sys.argv[4]))\n"
)
KILL_DOCS, CHUNK = 40, 5


def postings(path: Path) -> dict[str, dict[str, int]]:
    """Every term's postings ``{docid: impact}`` in the Lucene index of a SPLADE index directory."""
    from irkit._java import autoclass

    reader = autoclass("io.anserini.index.IndexReaderUtils").getReader(str(SpladeIndex.load(path).lucene_dir))
    fields = reader.storedFields()
    docid = [fields.document(i).get("id") for i in range(reader.maxDoc())]
    freqs = autoclass("org.apache.lucene.index.PostingsEnum").FREQS
    end = autoclass("org.apache.lucene.search.DocIdSetIterator").NO_MORE_DOCS
    out: dict[str, dict[str, int]] = {}
    terms = autoclass("org.apache.lucene.index.MultiTerms").getTerms(reader, "contents").iterator()
    while (term := terms.next()) is not None:
        docs, row = terms.postings(None, freqs), {}
        while (doc := docs.nextDoc()) != end:
            row[docid[doc]] = docs.freq()
        out[term.utf8ToString()] = row
    reader.close()
    return out


def test_sigkilled_build_resumes_and_indexes_the_same_postings(slice_dir: Path, tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = (slice_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:KILL_DOCS]
    corpus.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "indexes" / "killed"
    shards_dir = work_dir(out) / "collection"

    # 1. kill the build hard once its second checkpoint shard exists
    cmd = [sys.executable, "-c", BUILD, str(corpus), str(out), str(MAX_LENGTH), str(CHUNK)]
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.DEVNULL)
    kill_when_written(proc, shards_dir / "vectors-000001.jsonl", 300)
    shards = sorted(shards_dir.glob("vectors-*.jsonl"))
    assert not out.exists(), "a killed build must not leave a loadable index"
    assert 2 <= len(shards) < KILL_DOCS // CHUNK, "kill the build part-way"
    # a damaged checkpoint (say, a disk error) is encoded again, not indexed
    shards[0].write_text('{"id": "not-a-doc", "vector": {}}\n', encoding="utf-8")

    # 2. rerun: it starts from the intact shards' documents, not from zero
    capsys.readouterr()
    build_splade_index(corpus, out, max_length=MAX_LENGTH, chunk_size=CHUNK)
    progress = capsys.readouterr().err
    first = re.search(rf"(\d+)/{KILL_DOCS}", progress)
    assert first is not None and int(first.group(1)) == (len(shards) - 1) * CHUNK, progress
    assert not work_dir(out).exists() and not (out.parent / f".{out.name}.partial").exists()

    # 3. an uninterrupted build indexes the same documents with the same impacts
    reference = tmp_path / "indexes" / "reference"
    ref = build_splade_index(corpus, reference, max_length=MAX_LENGTH, chunk_size=CHUNK, show_progress=False)
    resumed = SpladeIndex.load(out)
    assert resumed.docstore.docids() == ref.docstore.docids() and len(resumed) == KILL_DOCS
    assert resumed.manifest["files"]["docstore.sqlite"]["sha256"] == ref.manifest["files"]["docstore.sqlite"]["sha256"]
    got, expected = postings(out), postings(ref.path)
    assert len(expected) > 500 and got == expected
    assert sorted(p.name for p in out.parent.iterdir()) == ["killed", "reference"]
