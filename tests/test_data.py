"""Data model and readers on real SciFact and DL19 files."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from irkit.data import DocStore, Qrels, Queries, Ranking, load_dataset, read_corpus, read_qrels, read_queries
from irkit.data.io import read_run, write_qrels, write_run
from irkit.errors import IrkitError
from irkit.paths import eval_data_root


def test_beir_dir_loads_judged_queries(scifact_dir):
    ds = load_dataset(scifact_dir, "test")
    assert len(ds.queries) == 300
    assert set(ds.queries) == set(ds.qrels)
    assert sum(len(v) for _, v in ds.qrels.items()) == 339
    first = next(ds.docs())
    assert first.docid == "4983" and first.title and first.text


def test_irkit_data_env_names_dataset(scifact_dir, monkeypatch):
    monkeypatch.setenv("IRKIT_DATA", str(scifact_dir.parent.parent))
    assert len(load_dataset("beir/scifact", "train").queries) == 809


def test_eval_data_root_is_irkit_data_else_beside_the_checkout(monkeypatch, tmp_path):
    """Eval scripts, examples and tests resolve their data in this one place."""
    monkeypatch.setenv("IRKIT_DATA", str(tmp_path))
    assert eval_data_root() == tmp_path
    monkeypatch.delenv("IRKIT_DATA")
    assert (eval_data_root() / "beir" / "scifact" / "corpus.jsonl").is_file()  # ../shared/data, as the task lays out


def test_ir_datasets_offline_matches_beir_dir(scifact_dir, tmp_path):
    home = tmp_path / "irds"
    (home / "beir" / "scifact").mkdir(parents=True)
    (home / "beir" / "scifact" / "source.zip").symlink_to(scifact_dir.parent / "scifact.zip")
    code = (
        "from irkit.data import load_dataset; d = load_dataset('beir/scifact', 'test');"
        "print(len(d.queries), sum(len(v) for _, v in d.qrels.items()), sum(1 for _ in d.docs()))"
    )
    env = {"IR_DATASETS_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["300", "339", "5183"]


def test_unknown_dataset_is_irkit_error():
    with pytest.raises(IrkitError, match="unknown dataset"):
        load_dataset("no/such/collection", "test")


def test_trec_dl_dir_loads_topics_qrels_passages_and_run(dl19_dir, monkeypatch):
    monkeypatch.setenv("IRKIT_DATA", str(dl19_dir.parent))
    ds = load_dataset("trec-dl-2019")
    assert ds.name == "trec-dl-2019/test"
    assert len(ds.queries) == 43 and set(ds.queries) == set(ds.qrels)
    assert sum(len(v) for _, v in ds.qrels.items()) == 9260
    assert ds.corpus_path == dl19_dir / "passages.jsonl" and ds.run_path == dl19_dir / "bm25-top100.run"
    assert sum(1 for _ in ds.docs()) == 4297
    assert load_dataset(dl19_dir, None).qrels is None
    assert load_dataset("beir/scifact").run_path is None


def test_trec_dl_dir_errors_name_the_directory(dl19_dir, tmp_path):
    with pytest.raises(IrkitError, match="split 'test'"):
        load_dataset(dl19_dir, "train")
    for f in ("topics.tsv", "qrels.txt", "passages.jsonl", "bm25-top100.run"):
        (tmp_path / f).symlink_to(dl19_dir / f)
    (tmp_path / "other.run").symlink_to(dl19_dir / "bm25-top100.run")
    with pytest.raises(IrkitError, match=r"pytest.*: more than one first-stage run: bm25-top100.run, other.run"):
        load_dataset(tmp_path)
    (tmp_path / "other.run").unlink()
    (tmp_path / "passages.jsonl").unlink()
    with pytest.raises(IrkitError, match=r"without passages\.jsonl"):
        load_dataset(tmp_path)


def test_dataset_docstore_is_built_once_and_rebuilt_when_the_corpus_changes(dl19_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IRKIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "dl"
    data.mkdir()
    for f in ("topics.tsv", "qrels.txt", "bm25-top100.run"):
        (data / f).symlink_to(dl19_dir / f)
    lines = (dl19_dir / "passages.jsonl").read_text(encoding="utf-8").splitlines()
    (data / "passages.jsonl").write_text("\n".join(lines[:50]) + "\n", encoding="utf-8")
    store = load_dataset(data).docstore()
    assert store.path.parent == tmp_path / "cache" / "docstores" and len(store) == 50
    mtime = store.path.stat().st_mtime_ns
    again = load_dataset(data).docstore()
    assert again.path == store.path and again.path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert [p.name for p in store.path.parent.iterdir()] == [store.path.name]  # no temporary left behind
    (data / "passages.jsonl").write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    fresh = load_dataset(data).docstore()
    assert fresh.path != store.path and len(fresh) == 60
    assert fresh.get_many(["5611210"])[0].text.startswith("5. Cancel. A flea")


def test_docstore_random_access_and_pickle(scifact_slice, tmp_path):
    docs = list(read_corpus(scifact_slice / "corpus.jsonl"))
    store = DocStore.build(tmp_path / "docs.sqlite", docs)
    assert len(store) == 300
    assert store.docids() == [d.docid for d in docs]
    assert store.get(docs[17].docid) == docs[17]
    picks = [docs[5].docid, docs[250].docid, docs[5].docid]
    assert [d.docid for d in store.get_many(picks)] == picks
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get(docs[42].docid).text == docs[42].text
    with pytest.raises(IrkitError, match="'nope' is not in the docstore"):
        store.get_many([docs[0].docid, "nope"])
    assert not list(tmp_path.glob("*.tmp*"))


def test_docstore_duplicate_leaves_nothing(tmp_path, scifact_slice):
    docs = list(read_corpus(scifact_slice / "corpus.jsonl"))[:3]
    with pytest.raises(IrkitError, match="duplicate docid"):
        DocStore.build(tmp_path / "d.sqlite", [*docs, docs[0]])
    assert list(tmp_path.iterdir()) == []


def test_trec_run_round_trip(dl19_dir, tmp_path):
    topics = read_queries(dl19_dir / "topics.tsv")
    run = read_run(dl19_dir / "bm25-top100.run", topics)
    assert len(run) == 43 and all(len(d) == 100 for _, (d, _) in run.items())
    write_run(run, tmp_path / "copy.trec")
    again = read_run(tmp_path / "copy.trec")
    for q in run:
        assert list(again[q][0]) == list(run[q][0])
        np.testing.assert_allclose(again[q][1], run[q][1], atol=1e-6)


def test_qrels_round_trip(dl19_dir, tmp_path):
    qrels = read_qrels(dl19_dir / "qrels.txt")
    assert sum(len(v) for _, v in qrels.items()) == 9260
    write_qrels(qrels, tmp_path / "q.txt")
    assert read_qrels(tmp_path / "q.txt").judgments == qrels.judgments


def test_pandas_round_trip(dl19_dir):
    topics = read_queries(dl19_dir / "topics.tsv")
    run = read_run(dl19_dir / "bm25-top100.run", topics).top_k(5)
    df = run.to_dataframe()
    assert list(df.columns) == ["qid", "query", "docno", "score", "rank"]
    back = Ranking.from_dataframe(df)
    assert back.to_dict() == run.to_dict()
    assert back.queries.texts == {q: topics[q] for q in run}
    qrels = read_qrels(dl19_dir / "qrels.txt")
    assert Qrels.from_dataframe(qrels.to_dataframe()).judgments == qrels.judgments
    q = Queries({"a": "x", "b": "y"}, {"original": {"a": "X"}})
    assert Queries.from_dataframe(q.to_dataframe()).texts == q.texts


def test_ranking_sorts_and_cuts():
    r = Ranking.from_scores({"q": {"a": 0.1, "b": 0.9, "c": 0.5}})
    assert r["q"][0] == ["b", "c", "a"]
    assert r.top_k(2)["q"][0] == ["b", "c"]
    with pytest.raises(IrkitError, match="cutoff"):
        r.top_k(0)
