"""Cosine Adapter filter: monotone maps, unchanged order, frozen encoder, a common threshold, artifacts, refusals.

Mechanics run on real components: FAISS indexes of a real SciFact slice encoded by a tiny random
BERT, the real trainer, the real pipeline/YAML/runner/evaluation code. Quality on real weights
is measured by ``eval/cosine_adapter.py``, not here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ce_models import save_random_bert
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from irkit.cli import main
from irkit.data.datasets import Dataset, load_dataset
from irkit.data.docstore import DocStore
from irkit.data.types import Qrels, Ranking
from irkit.errors import IrkitError
from irkit.evaluation import (
    choose_threshold,
    evaluate,
    pooled_pairs,
    pr_auc,
    pr_curve,
    precision_at_recall,
    set_measures,
)
from irkit.filter.cosine_adapter import (
    FAMILIES,
    TERMS,
    CosineFilter,
    FitConfig,
    Pairs,
    fit,
    map_logits,
    n_params,
    train,
    training_set,
)
from irkit.index.bm25 import build_bm25_index
from irkit.index.dense import build_dense_index
from irkit.pipeline.config import load_pipeline, to_yaml
from irkit.pipeline.runner import Runner
from irkit.rerank.cross_encoder import CrossEncoder
from irkit.retrieve.bm25 import BM25
from irkit.retrieve.dense import Dense

QUICK = FitConfig(hidden=8, epochs=3, batch_size=8, patience=3)

# --- the mapping --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    family=st.sampled_from(FAMILIES),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.1, 30.0),
    mu=st.floats(0.05, 0.95),
    sd=st.floats(0.01, 2.0),
    prior=st.floats(-8.0, 2.0),
    u=arrays(np.float64, 40, elements=st.floats(0.0, 1.0)),
)
def test_mapping_is_monotone_for_every_query(
    family: str, seed: int, scale: float, mu: float, sd: float, prior: float, u: np.ndarray
) -> None:
    """Random network outputs for 6 queries: each query's logits never decrease with the raw score."""
    raw = torch.from_numpy(np.random.default_rng(seed).normal(0.0, scale, size=(6, n_params(family))))
    uu = torch.from_numpy(np.sort(u)).expand(6, -1)
    z = map_logits(family, raw, uu, [(mu, sd)] * TERMS[family], prior).numpy()
    assert np.isfinite(z).all()
    # non-decreasing up to rounding, which scales with the summands, not with z: equal scores have come out
    # 1.5 and 10 ulp of z apart (torch's vectorised/threaded kernels split a row; z 0.52 from terms of size ~8)
    rounding = 64 * np.finfo(np.float64).eps * (1.0 + np.abs(raw.numpy()).sum(axis=1, keepdims=True))
    assert (np.diff(z, axis=1) >= -rounding).all()
    # distinct raw scores give distinct logits wherever float64 can tell them apart: with p = 5 the power
    # family sends u < 0.05 to u^5 < 3e-7, and a gap there vanishes against an offset of order 10
    su = np.sort(u)
    strictly = (np.diff(su) > 1e-3) & (su[:-1] >= 0.05)
    assert (np.diff(z, axis=1)[:, strictly] > 0).all()


# --- set-based evaluation -------------------------------------------------------------------------------------


def test_pr_curve_auc_and_thresholds_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.5, 0.3, 0.1])
    labels = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    precision, recall, thresholds = pr_curve(scores, labels)
    assert thresholds.tolist() == [0.9, 0.8, 0.5, 0.3, 0.1]  # the tie at 0.8 is one cut
    assert precision.tolist() == pytest.approx([1, 2 / 3, 2 / 4, 3 / 5, 3 / 6])
    assert recall.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert pr_auc(scores, labels) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5)
    assert precision_at_recall(scores, labels, 0.95) == pytest.approx(0.6)
    assert choose_threshold(scores, labels, "recall", 0.6) == 0.8
    assert choose_threshold(scores, labels, "recall", 1.0) == 0.3
    assert choose_threshold(scores, labels, "precision", 0.6) == 0.3
    assert choose_threshold(scores, labels, "f1") == 0.3  # F1 0.75 beats 2/3 at 0.8
    with pytest.raises(IrkitError, match=r"no threshold reaches precision 0\.99"):
        choose_threshold(np.array([0.5, 0.4]), np.array([0, 1], dtype=bool), "precision", 0.99)
    with pytest.raises(IrkitError, match="no relevant pair"):
        pr_curve(scores, np.zeros(6, dtype=bool))


def test_set_measures_count_empty_lists_as_zero() -> None:
    qrels = Qrels({"q1": {"a": 1, "b": 0, "c": 2}, "q2": {"x": 1}, "q3": {"y": 1}})
    run = Ranking.from_lists({"q1": (["a", "b"], [2.0, 1.0]), "q2": ([], [])})  # q3 absent, q2 empty
    res = set_measures(run, qrels)
    assert res.kept == {"q1": 2, "q2": 0, "q3": 0} and res.zero == 2
    assert res.precision == pytest.approx(0.5 / 3) and res.recall == pytest.approx(0.5 / 3)
    assert res.kept_mean == pytest.approx(2 / 3)
    assert set_measures(run, qrels, rel=2).recall == 0.0  # c (grade 2) was not kept
    scores, labels = pooled_pairs(run, qrels)
    assert scores.tolist() == [2.0, 1.0] and labels.tolist() == [True, False]


# --- a common threshold where one raw threshold fails --------------------------------------------------------------


def _offset_queries(n: int, w: np.ndarray, rng: np.random.Generator) -> Pairs:
    """Queries whose relevant scores sit 0.1 above a query-specific offset the embedding determines."""
    emb = rng.normal(size=(n, len(w))).astype(np.float32)
    offset = 0.25 * np.tanh(emb @ w)
    u, y = [], []
    for o in offset:
        s = np.r_[o + 0.1 + 0.02 * rng.normal(size=2), o + 0.02 * rng.normal(size=18)]
        order = np.argsort(-s)
        u.append((s[order] + 1) / 2)
        y.append(np.r_[np.ones(2), np.zeros(18)][order])
    return Pairs.build(emb, u, y)


def test_adapter_recovers_one_threshold_where_raw_scores_have_none() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=8)
    tr, dev, test = (_offset_queries(n, w, rng) for n in (200, 50, 100))
    raw_dev, raw_test = dev.pooled(dev.u), test.pooled(test.u)
    raw_tau = choose_threshold(*raw_dev, "recall", 0.95)
    kept = raw_test[0] >= raw_tau
    raw_precision = raw_test[1][kept].mean()
    fitted = fit("linear", tr, dev, FitConfig(epochs=40, seed=1))
    prob_dev = dev.pooled(np.stack(fitted.probabilities(dev.inputs, list(dev.u))))
    prob_test = test.pooled(np.stack(fitted.probabilities(test.inputs, list(test.u))))
    tau = choose_threshold(*prob_dev, "recall", 0.95)
    keep = prob_test[0] >= tau
    precision, recall = prob_test[1][keep].mean(), prob_test[1][keep].sum() / prob_test[1].sum()
    assert raw_precision < 0.4 and precision_at_recall(*raw_test) < 0.4  # no raw threshold separates them
    assert recall >= 0.9 and precision >= 0.85  # one threshold on the mapped scores does
    assert pr_auc(*prob_test) > 0.95 > pr_auc(*raw_test) + 0.4
    losses = [r["train_loss"] for r in fitted.history]
    assert losses[-1] < losses[0]


# --- the stage on real indexes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with the MiniLM tokenizer: a real, fast query/document encoder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from irkit.models.registry import resolve

    out = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def data(scifact_slice: Path) -> Dataset:
    return load_dataset(scifact_slice, "test")


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory, scifact_slice: Path, encoder_dir: Path) -> dict[str, Path]:
    """Dense indexes of the slice's first 200 docs (A) and of its last 100 (B), and a BM25 index of A."""
    from irkit.data.io import read_corpus

    root = tmp_path_factory.mktemp("filter-indexes")
    docs = list(read_corpus(scifact_slice / "corpus.jsonl"))
    build_dense_index(docs[:200], root / "a", model=str(encoder_dir), max_length=64, show_progress=False)
    build_dense_index(docs[200:], root / "b", model=str(encoder_dir), max_length=64, show_progress=False)
    build_bm25_index(docs[:200], root / "a-bm25", show_progress=False)
    return {"a": root / "a", "b": root / "b", "a-bm25": root / "a-bm25"}


@pytest.fixture(scope="module")
def saved(indexes: dict[str, Path], data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A linear adapter trained behind dense index A on the slice's judged queries, saved."""
    run = Dense(indexes["a"], depth=200)(data.queries)
    flt = train(training_set(run, data.qrels, dev_fraction=0.3), "linear", config=QUICK, show_progress=False)
    return flt.save(tmp_path_factory.mktemp("filters") / "a-linear")


def test_filter_keeps_a_prefix_in_order_and_maps_monotonically(
    saved: Path, indexes: dict[str, Path], data: Dataset
) -> None:
    dense = Dense(indexes["a"], depth=50)
    raw = dense(data.queries)
    flt = CosineFilter.load(saved)
    calibrated = flt.calibrate(raw)
    kept = (dense % 50 >> flt)(data.queries)
    assert list(kept) == list(raw)
    for q, (docids, scores) in raw.items():
        probs = calibrated[q][1]
        assert list(calibrated[q][0]) == list(docids) and ((probs > 0) & (probs < 1)).all()
        distinct = np.diff(scores) < 0
        assert (np.diff(probs)[distinct] < 0).all() and (np.diff(probs)[~distinct] == 0).all()
        k = int((probs >= flt.tau).sum())
        assert list(kept[q][0]) == list(docids[:k])  # monotone map + one threshold keeps a prefix, in order
        assert np.array_equal(kept[q][1], probs[:k])
    assert sum(len(kept[q][0]) for q in kept) < sum(len(raw[q][0]) for q in raw)


def test_training_moves_only_the_adapter(indexes: dict[str, Path], data: Dataset, tmp_path: Path) -> None:
    run = Dense(indexes["a"], depth=200)(data.queries)
    log = tmp_path / "loss.jsonl"
    pairs = training_set(run, data.qrels, dev_fraction=0.3)
    flt = train(pairs, "power", config=QUICK, log_path=log, show_progress=False)
    fresh = Dense(indexes["a"]).encoder.model.state_dict()
    for name, p in flt.encoder.model.named_parameters():
        assert p.grad is None, name
        assert torch.equal(p.detach(), fresh[name]), name
    torch.manual_seed(QUICK.seed)
    from irkit.filter.cosine_adapter import _net

    init = _net(flt.fitted.net[0].in_features, "power", QUICK.hidden).state_dict()
    assert all(not torch.equal(v, init[k]) for k, v in flt.fitted.net.state_dict().items())
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert {"train_loss", "dev_loss", "dev_pr_auc"} <= set(records[0])
    again = train(training_set(run, data.qrels, dev_fraction=0.3), "power", config=QUICK, show_progress=False)
    for k, v in again.fitted.net.state_dict().items():  # seeded: the same weights
        assert torch.equal(v, flt.fitted.net.state_dict()[k])


def test_auto_family_records_every_family_on_dev(indexes: dict[str, Path], data: Dataset) -> None:
    run = Dense(indexes["a"], depth=200)(data.queries)
    # the paper's input (the query embedding alone); the other tests train the default, query+list
    flt = train(training_set(run, data.qrels, features="query"), "auto", config=QUICK, show_progress=False)
    dev = flt.config["dev"]
    assert set(dev) == set(FAMILIES)
    assert flt.family == max(dev, key=lambda f: dev[f]["pr_auc"])
    assert flt.config["inputs"] == {"features": "query", "depth": 200}
    assert flt.fitted.net[0].in_features == flt.config["encoder"]["dim"]  # no list statistics
    assert flt.config["training"]["depth"] == 200 and flt.config["retriever"]["type"] == "dense"


def test_save_load_identical(saved: Path, indexes: dict[str, Path], data: Dataset, tmp_path: Path) -> None:
    run = Dense(indexes["a"], depth=30)(data.queries)
    first = CosineFilter.load(saved)
    again = first.save(tmp_path / "copy")
    second = CosineFilter.load(again)
    assert second.config == first.config
    a, b = first.calibrate(run), second.calibrate(run)
    assert all(np.array_equal(a[q][1], b[q][1]) for q in run)
    assert sorted(p.name for p in again.iterdir()) == ["cosine_adapter.safetensors", "cosine_filter.json"]
    assert CosineFilter.load(again, tau=0.25).tau == 0.25 and first.tau == first.config["tau"]


def test_bad_artifacts_are_refused(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(IrkitError, match="not a cosine filter directory") as err:
        CosineFilter.load(tmp_path)
    assert err.value.path == str(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(saved, bad)
    cfg = json.loads((bad / "cosine_filter.json").read_text())
    (bad / "cosine_filter.json").write_text(json.dumps({**cfg, "family": "cubic"}))
    with pytest.raises(IrkitError, match="unknown mapping family 'cubic'"):
        CosineFilter.load(bad)
    (bad / "cosine_filter.json").write_text(json.dumps({**cfg, "fit": {**cfg["fit"], "hidden": 9}}))
    with pytest.raises(IrkitError, match="weights do not match the config"):
        CosineFilter.load(bad)
    with pytest.raises(IrkitError, match=r"tau is a probability in \[0, 1\]"):
        CosineFilter.load(saved, tau=1.5)


def test_refused_behind_another_retriever(saved: Path, indexes: dict[str, Path], data: Dataset, tmp_path: Path) -> None:
    flt = CosineFilter.load(saved)
    other_corpus = Dense(indexes["b"], depth=20)(data.queries)
    with pytest.raises(IrkitError, match="trained behind the retriever of index") as err:
        flt(other_corpus)
    assert "corpus_sha256" in str(err.value) or "doc_count" in str(err.value)
    assert err.value.path == str(saved)
    assert len(CosineFilter.load(saved, match="model")(other_corpus)) == len(data.queries)  # same model: allowed
    bm25 = BM25(indexes["a-bm25"], depth=20)(data.queries)
    for match in ("index", "model"):
        with pytest.raises(IrkitError, match=r"type='dense'.*type='bm25'"):
            CosineFilter.load(saved, match=match)(bm25)
    reranked = (Dense(indexes["a"], depth=10) >> CrossEncoder(str(save_random_bert(tmp_path / "ce"))))(data.queries)
    with pytest.raises(IrkitError, match="rescored by a reranker"):
        flt(reranked)
    with pytest.raises(IrkitError, match="carries no docstore"):
        flt(Ranking(dict(other_corpus.results), data.queries))
    store = DocStore.build(tmp_path / "docstore.sqlite", data.docs())  # a docstore outside any index
    with pytest.raises(IrkitError, match="not inside an irkit index"):
        flt(Ranking(dict(other_corpus.results), data.queries, store))


def test_empty_lists_flow_through_a_pipeline_and_evaluation(
    saved: Path, indexes: dict[str, Path], data: Dataset, tmp_path: Path
) -> None:
    dense = Dense(indexes["a"], depth=20)
    top = CosineFilter.load(saved).calibrate(dense(data.queries))
    best = sorted(float(s[0]) for _, s in top.results.values())
    tau = best[len(best) // 2]  # about half of the queries keep nothing
    ce = CrossEncoder(str(save_random_bert(tmp_path / "ce")))
    pipe = dense % 20 >> CosineFilter.load(saved, tau=tau) >> ce
    out = Runner(pipe, checkpoint=tmp_path / "ckpt", progress=False).run(data.queries)
    empty = [q for q in out if not out[q][0]]
    assert 0 < len(empty) < len(out) and list(out) == list(data.queries)
    res = evaluate(out, data.qrels, ["nDCG@10"])
    judged_empty = [q for q in empty if q in res.per_query["nDCG@10"]]
    assert judged_empty and all(res.per_query["nDCG@10"][q] == 0.0 for q in judged_empty)
    assert set_measures(out, data.qrels).zero >= len(judged_empty)
    nothing = (dense % 20 >> CosineFilter.load(saved, tau=1.0) >> ce)(data.queries)
    assert all(not d for d, _ in nothing.results.values())
    assert evaluate(nothing, data.qrels)["nDCG@10"] == 0.0


def test_yaml_round_trip(saved: Path, indexes: dict[str, Path], data: Dataset, tmp_path: Path) -> None:
    pipe = Dense(indexes["a"], depth=40) % 40 >> CosineFilter.load(saved, tau=0.2)
    text = to_yaml(pipe, tmp_path / "p.yaml")
    assert f"cosine_filter: {{path: {saved}, tau: 0.2}}" in text
    again = load_pipeline(tmp_path / "p.yaml")
    a, b = pipe(data.queries), again(data.queries)
    assert all(list(a[q][0]) == list(b[q][0]) and np.array_equal(a[q][1], b[q][1]) for q in a)
    with pytest.raises(IrkitError, match=r"pipeline\[1\]\.cosine_filter\.tau: expected"):
        load_pipeline({"pipeline": [{"dense": {"index": "x"}}, {"cosine_filter": {"path": "x", "tau": "x"}}]})
    with pytest.raises(IrkitError, match="dense cannot follow cosine_filter"):
        load_pipeline("pipeline:\n  - cosine_filter: {path: x}\n  - dense: {index: x}\n")
    with pytest.raises(IrkitError, match="save"):
        to_yaml(train(training_set(Dense(indexes["a"], depth=200)(data.queries), data.qrels), "linear", config=QUICK))


def test_cli_trains_an_artifact(indexes: dict[str, Path], scifact_slice: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "flt"
    argv = ["tune", "filter", "--retriever", str(indexes["a"]), "--dataset", str(scifact_slice), "--split", "test"]
    argv += ["--out", str(out), "--depth", "50", "--family", "sqrt", "--epochs", "2", "--hidden", "8"]
    assert main(argv) == 0
    assert "family sqrt" in capsys.readouterr().err
    flt = CosineFilter.load(out)
    assert flt.family == "sqrt" and flt.config["training"]["depth"] == 50
    assert flt.config["training"]["split"] == "test"
    assert len((tmp_path / "flt.loss.jsonl").read_text().splitlines()) == 2
    bad = ["tune", "filter", "--retriever", str(indexes["a"]), "--dataset", str(scifact_slice), "--split", "test"]
    assert main([*bad, "--out", str(tmp_path / "x"), "--depth", "0"]) == 2
    assert "--depth must be >= 1" in capsys.readouterr().err and not (tmp_path / "x").exists()
