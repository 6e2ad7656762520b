"""GenCRF and the query-expansion baselines: weights, thresholds, clustering paths, QERM rounds, the reply
cache, and that each rewriter works in front of real BM25 and dense indexes built from a SciFact slice.

LLM mechanics use a tiny random Llama (real transformers code, the real SmolLM2 tokenizer); the encoder is
the bundled all-MiniLM-L6-v2; indexes, SQLite and Pyserini are real.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from llm_models import smollm2_tokenizer, tiny_llm

from irkit.data.datasets import load_dataset
from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.index.bm25 import build_bm25_index
from irkit.index.dense import build_dense_index
from irkit.models.encoder import BiEncoder
from irkit.pipeline import config
from irkit.pipeline.operators import rrf
from irkit.reformulate.gencrf import (
    CLUSTER_LEAD,
    CLUSTER_PROMPT,
    SCORE_LEAD,
    SCORE_PROMPT,
    SCORE_TOKENS,
    GenCRF,
    cosine,
    embedding_clusters,
    generate_reformulations,
    numbered,
    parse_clusters,
    parse_score,
)
from irkit.reformulate.hyde import HyDE
from irkit.reformulate.llm_cache import CachedLLM, Request
from irkit.reformulate.multi_query import MultiQuery
from irkit.reformulate.qerm import QERM, auc
from irkit.reformulate.query2doc import Query2Doc
from irkit.retrieve.bm25 import BM25
from irkit.retrieve.dense import Dense

torch = pytest.importorskip("torch")

QUERIES = {
    "a": "0-dimensional biomaterials lack inductive properties.",
    "b": "ALDH1 expression is associated with poor prognosis in breast cancer.",
    "c": "Aspirin inhibits the production of PGE2.",
}
SMALL = {"max_new_tokens": 6, "cluster_tokens": 8}


@pytest.fixture(scope="module")
def llm():
    return tiny_llm(smollm2_tokenizer())


@pytest.fixture(scope="module")
def encoder() -> BiEncoder:
    return BiEncoder("minilm", max_length=64)


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "replies.sqlite")


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory, scifact_slice: Path) -> dict[str, Path]:
    from irkit.data.io import read_corpus

    root = tmp_path_factory.mktemp("gencrf-indexes")
    docs = list(itertools.islice(read_corpus(scifact_slice / "corpus.jsonl"), 120))
    build_bm25_index(docs, root / "bm25", show_progress=False)
    build_dense_index(docs, root / "dense", max_length=128, show_progress=False)
    return {"bm25": root / "bm25", "dense": root / "dense"}


def _stage(llm, encoder, cache: str, **kw) -> GenCRF:
    return GenCRF(llm, encoder=encoder, cache=cache, **(SMALL | kw))


def _prefill(stage: GenCRF | CachedLLM, request: Request, reply: str, max_new_tokens: int) -> None:
    """Store a reply in the cache as if the LLM had written it (greedy settings)."""
    cached = stage.llm if isinstance(stage, GenCRF) else stage
    settings = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": max_new_tokens}
    row = dict.fromkeys(["model", "query", "prompt", "lead", "settings"], "") | {"seed": 0, "tokens": 0}
    row |= {"key": cached.key(request, settings), "reply": reply, "seconds": 0.0, "created": 0.0}
    cached.cache.put_many([row])


def _same(a: Ranking, b: Ranking) -> None:
    assert list(a) == list(b)
    for q in a:
        assert list(a[q][0]) == list(b[q][0])
        np.testing.assert_array_equal(a[q][1], b[q][1])


# --- weights -------------------------------------------------------------------------------------------


def test_simdw_weights_are_cosines_above_theta_and_w0_is_kept(llm, encoder: BiEncoder, cache: str) -> None:
    q = QUERIES["c"]
    clusters = ["Does aspirin reduce prostaglandin E2 production?", "Stock market prices in 1990"]
    stage = _stage(llm, encoder, cache, weighting="sim", theta=0.3)
    vectors = stage._encode([q], [clusters])
    weights, sims = stage.weights([q], [clusters], vectors)
    expected = cosine(encoder.encode([q])[0], encoder.encode(clusters))
    np.testing.assert_allclose(sims[0], expected, atol=1e-6)
    assert expected[0] >= 0.3 > expected[1]  # the unrelated query falls below θ
    assert weights[0] == [pytest.approx(expected[0]), None]
    assert stage.combine(q, clusters, weights[0]) == [(q, 0.7), (clusters[0], pytest.approx(expected[0]))]


def test_scoredw_normalises_llm_scores_and_drops_those_below_theta(llm, encoder: BiEncoder, cache: str) -> None:
    q, clusters = QUERIES["b"], ["ALDH1 and breast cancer survival", "ALDH1 enzyme", "cancer"]
    for scale, expected in ((100.0, [0.85, None, 0.6]), (1.0, [85.0, None, 60.0])):
        stage = _stage(llm, encoder, cache, weighting="score", score_scale=scale)
        for c, reply in zip(clusters, [" 85 points", " 59", " 60."], strict=True):
            request = Request(SCORE_PROMPT.format(query=q, cluster=c), q, 0, SCORE_LEAD)
            _prefill(stage, request, reply, SCORE_TOKENS)
        weights, scores = stage.weights([q], [clusters], stage._encode([q], [clusters]))
        assert scores == [[85.0, 59.0, 60.0]] and weights == [expected]
        assert stage.llm.stats["llm_calls"] == 0 and stage.stats["score_missing"] == 0
        assert stage.combine(q, clusters, weights[0])[0] == (q, 0.7)
    assert [parse_score(t) for t in (" 90", "n/a", " 250", " 9.5", "0")] == [90.0, None, None, 9.5, None]


def test_fixed_and_concat_ablations(llm, encoder: BiEncoder, cache: str) -> None:
    q, clusters = QUERIES["a"], ["x one", "y two"]
    fixed = _stage(llm, encoder, cache, weighting="fixed")
    w, _ = fixed.weights([q], [clusters], fixed._encode([q], [clusters]))
    assert w == [[pytest.approx(0.15), pytest.approx(0.15)]]
    concat = _stage(llm, encoder, cache, weighting="concat")
    assert concat.combine(q, clusters, [1.0, 1.0]) == f"{q} [SEP] x one [SEP] y two"


# --- only q_init: plain retrieval -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_with_only_q_init_the_result_is_plain_retrieval(kind, indexes, llm, encoder, cache, scifact_slice) -> None:
    retriever = BM25(indexes[kind]) if kind == "bm25" else Dense(indexes[kind])
    queries = load_dataset(scifact_slice, "test").queries
    queries = queries.subset(list(queries)[:4])
    stage = _stage(llm, encoder, cache, weighting="sim", theta=1.01)  # no cosine reaches 1.01
    rewritten = stage(queries)
    assert "variants" not in rewritten.fields and rewritten.texts == queries.texts
    assert all(f["clusters"] for f in rewritten.fields["gencrf"].values())  # there were cluster queries
    _same((stage >> retriever % 20)(queries), (retriever % 20)(queries))


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_weighted_variants_drive_the_retriever(kind, indexes, llm, encoder, cache, scifact_slice) -> None:
    retriever = BM25(indexes[kind]) if kind == "bm25" else Dense(indexes[kind])
    queries = load_dataset(scifact_slice, "test").queries
    queries = queries.subset(list(queries)[:4])
    stage = _stage(llm, encoder, cache, weighting="fixed")
    rewritten = stage(queries)
    variants = rewritten.fields["variants"]
    assert set(variants) == set(queries) and all(v[0] == (queries[q], 0.7) for q, v in variants.items())
    run = (stage >> retriever % 20)(queries)
    assert run.queries.fields["original"] == queries.texts
    if kind == "dense":  # the weighted vector sum, searched once
        q = next(iter(queries))
        texts, w = zip(*variants[q], strict=True)
        vec = np.asarray(w, dtype=np.float32) @ retriever.encoder.encode(list(texts))
        expected = retriever.search_vectors(Queries({q: queries[q]}), (vec / np.linalg.norm(vec))[None], 20)
        assert list(run[q][0]) == list(expected[q][0])


# --- clustering --------------------------------------------------------------------------------------------


def test_malformed_cluster_json_never_raises() -> None:
    cases = {
        '{"cluster1": "aspirin and PGE2", "cluster2": "COX inhibition"}': (
            ["aspirin and PGE2", "COX inhibition"],
            "json",
        ),
        '{"cluster1": "aspirin", "cluster2": "COX inhib': (["aspirin", "COX inhib"], "repaired"),
        "{'cluster1': 'single quotes', 'cluster2': 'still fine'}": (["single quotes", "still fine"], "repaired"),
        '{"cluster1": "a", "cluster2": 3, "cluster3": null}': ([], "failed"),
        '{"c1": ["list"], "cluster1": "ok query", "cluster1 ": "OK QUERY"}': (["ok query"], "json"),
        "": ([], "failed"),
        "}{ ]] \x00 {{{": ([], "failed"),
        '{"cluster1": "one", "cluster2": "two", "cluster3": "three", "cluster4": "four"}': (
            ["one", "two", "three"],
            "json",
        ),
    }
    for text, expected in cases.items():
        assert parse_clusters(text) == expected, text


def test_bad_llm_clusterings_fall_back_to_embeddings_inside_the_stage(llm, encoder, cache) -> None:
    queries = list(QUERIES.values())
    stage = _stage(llm, encoder, cache, weighting="sim")
    generated = generate_reformulations(stage.llm, queries, 2, 0.8, 0.95, 6, 0)
    bad = ["", "}}}}", '"cluster1": ""']
    for q, gen, reply in zip(queries, generated, bad, strict=True):
        prompt = CLUSTER_PROMPT.format(query=q, generated=numbered([g for g in gen if g]))
        _prefill(stage, Request(prompt, q, 0, CLUSTER_LEAD), reply, SMALL["cluster_tokens"])
    out = stage(QUERIES)  # never raises
    facts = out.fields["gencrf"]
    assert stage.stats["cluster_fallback"] == 3 and {f["path"] for f in facts.values()} == {"fallback"}
    for q, gen in zip(QUERIES, generated, strict=True):
        assert 1 <= len(facts[q]["clusters"]) <= 3 and set(facts[q]["clusters"]) <= set(gen)


def test_embedding_fallback_is_deterministic_under_a_seed(encoder: BiEncoder) -> None:
    texts = [
        "aspirin inhibits prostaglandin synthesis",
        "aspirin blocks PGE2 production via COX",
        "COX-1 acetylation by aspirin",
        "stock markets fell in 1990",
        "equity prices and recessions",
        "the 1990 market crash",
    ]
    vectors = encoder.encode(texts)
    runs = [embedding_clusters(texts, vectors, seed=7) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0]) == 2 and {runs[0][0] in texts[:3], runs[0][1] in texts[:3]} == {True, False}
    same = ["aspirin inhibits PGE2", "Aspirin inhibits PGE2.", "aspirin inhibits PGE2!", "aspirin inhibits pge2"]
    assert len(embedding_clusters(same, encoder.encode(same), seed=7)) == 1  # near-duplicates stay one cluster
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(6, 384)).astype(np.float32)
    assert embedding_clusters(texts, noise, seed=3) == embedding_clusters(texts, noise, seed=3)


# --- QERM --------------------------------------------------------------------------------------------------


def _qerm(tmp_path: Path, threshold: float, dim: int = 384) -> str:
    d = 2 * dim + 5
    model = QERM(np.zeros(d), 0.0, np.zeros(d), np.ones(d), threshold, "minilm")
    return str(model.save(tmp_path / f"qerm{threshold}"))


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_qerm_loop_stops_within_max_rounds(tmp_path: Path, llm, encoder, cache, rounds: int) -> None:
    always = _stage(llm, encoder, cache, qerm=_qerm(tmp_path, threshold=1.0), max_rounds=rounds)
    out = always(QUERIES)
    facts = out.fields["gencrf"]
    assert all(f["rounds"] == rounds and len(f["logits"]) == rounds for f in facts.values())
    assert always.stats["regenerated"] == len(QUERIES) * (rounds - 1)
    generation_calls = 6 * len(QUERIES) * rounds
    assert always.llm.stats["llm_calls"] == generation_calls + len(QUERIES) * rounds  # + one clustering per round
    never = _stage(llm, encoder, cache, qerm=_qerm(tmp_path, threshold=-1.0), max_rounds=rounds)
    assert all(f["rounds"] == 1 for f in never(QUERIES).fields["gencrf"].values())


def test_qerm_trains_saves_and_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 20))
    y = (x[:, 0] + 0.3 * rng.normal(size=100) > 0).astype(int)
    model = QERM.fit(x, y, "minilm", tau=0.5)
    assert model.info["cv_auc"] > 0.8 and model.info["tau"] == 0.5
    logits = model.logits(x)
    assert auc(logits, y) > 0.9 and model.threshold == pytest.approx(logits.mean())
    back = QERM.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(back.logits(x), logits)
    with pytest.raises(Exception, match="both labels"):
        QERM.fit(x, np.ones(100), "minilm")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "qerm.json").write_text(json.dumps({"weights": [1.0]}))
    with pytest.raises(Exception, match="not a QERM model"):
        QERM.load(tmp_path / "bad")


# --- the reply cache ---------------------------------------------------------------------------------------


def test_cache_hits_skip_the_llm(llm, encoder, cache: str) -> None:
    first = _stage(llm, encoder, cache, weighting="sim")
    before = llm.forward_passes
    out1 = first(QUERIES)
    assert first.llm.stats["llm_calls"] == 7 * len(QUERIES) and first.llm.stats["hits"] == 0
    assert llm.forward_passes > before
    passes = llm.forward_passes
    # a fresh stage over the same cache: named model, never loaded, zero calls, 100 % hits
    second = GenCRF("tiny-llama", encoder=encoder, cache=cache, weighting="sim", **SMALL)
    out2 = second(QUERIES)
    assert second.llm.stats["llm_calls"] == 0 and second.llm.stats["hits"] == second.llm.stats["lookups"] == 21
    assert second.llm._llm is None and llm.forward_passes == passes
    assert out1.texts == out2.texts and out1.fields == out2.fields
    rows = second.llm.cache.rows("tiny-llama")
    assert len(rows) == 21 and all(r["tokens"] >= 1 and r["seconds"] > 0 for r in rows)
    # another sampling setting is another key: the generations miss
    third = _stage(llm, encoder, cache, weighting="sim", temperature=0.5)
    third(QUERIES)
    assert third.llm.stats["llm_calls"] >= 6 * len(QUERIES)


def test_sampling_depends_on_prompt_and_seed_not_on_the_batch(llm) -> None:
    prompts = ["Rewrite: aspirin", "Rewrite: cancer", "Rewrite: aspirin"]
    alone = [
        llm.generate([p], 6, temperature=0.8, top_p=0.95, seeds=[s])[0] for p, s in zip(prompts, [1, 2, 3], strict=True)
    ]
    batched = llm.generate(prompts, 6, temperature=0.8, top_p=0.95, seeds=[1, 2, 3], batch_size=3)
    assert batched == alone
    again = llm.generate(prompts, 6, temperature=0.8, top_p=0.95, seeds=[1, 2, 1], batch_size=3)
    assert again[0] == again[2] and len(llm.reply_tokens) == 3


# --- baselines ---------------------------------------------------------------------------------------------


def test_query2doc_and_hyde_share_one_passage(llm, cache: str) -> None:
    q2d = Query2Doc(llm, repeats=3, max_new_tokens=6, cache=cache)
    out = q2d(QUERIES)
    hyde = HyDE(llm, max_new_tokens=6, cache=cache)
    hyde_out = hyde(QUERIES)
    assert hyde.llm.stats["llm_calls"] == 0 and hyde.llm.stats["hits"] == len(QUERIES)
    for q, text in QUERIES.items():
        passage = hyde_out[q]
        assert passage and passage != text
        assert out[q] == " ".join([text] * 3 + [passage])
    several = HyDE(llm, n=2, include_query=True, max_new_tokens=6, cache=cache)(QUERIES)
    assert all(
        len(v) == 3 and v[-1] == (QUERIES[q], pytest.approx(1 / 3)) for q, v in several.fields["variants"].items()
    )


def test_multi_query_fuses_per_variant_runs_by_rrf(indexes, llm, cache: str) -> None:
    bm25 = BM25(indexes["bm25"])
    mq = MultiQuery(llm, max_new_tokens=6, cache=cache)
    rewritten = mq(QUERIES)
    assert rewritten.fields["fusion"] == dict.fromkeys(QUERIES, "rrf")
    run = (bm25 % 50)(rewritten)
    for q in QUERIES:
        texts = [t for t, _ in rewritten.fields["variants"][q]]
        assert texts[0] == QUERIES[q] and len(texts) >= 2
        parts = [(bm25 % 50)(Queries({q: t})) for t in texts]
        expected = Ranking.from_scores(rrf(parts), Queries({q: QUERIES[q]})).top_k(50)
        assert list(run[q][0]) == list(expected[q][0])
    assert mq.llm.stats["llm_calls"] == 6 * len(QUERIES)
    gencrf = GenCRF(llm, cache=cache, max_new_tokens=6)  # MultiQuery asked GenCRF's generation requests
    generate_reformulations(gencrf.llm, list(QUERIES.values()), 2, 0.8, 0.95, 6, 0)
    assert gencrf.llm.stats["hits"] == gencrf.llm.stats["lookups"] == 6 * len(QUERIES)


def test_rm3_changes_bm25_results(indexes, scifact_slice: Path) -> None:
    queries = load_dataset(scifact_slice, "test").queries
    plain, rm3 = BM25(indexes["bm25"]) % 20, BM25(indexes["bm25"], rm3=True) % 20
    a, b = plain(queries), rm3(queries)
    changed = [q for q in queries if a[q][0] != b[q][0]]
    assert len(changed) >= len(queries) // 2
    assert config.to_dict(rm3)["pipeline"][0]["bm25"]["rm3"] is True
    with pytest.raises(IrkitError, match="BM25 fb_docs must be >= 1"):
        BM25(indexes["bm25"], rm3=True, fb_docs=0)


def test_rewriters_in_yaml_pipelines(indexes, tmp_path: Path) -> None:
    spec = {
        "pipeline": [
            {"gencrf": {"weighting": "score", "cache": str(tmp_path / "c.sqlite"), "max_new_tokens": 8}},
            {"dense": {"index": str(indexes["dense"])}, "top_k": 100},
        ]
    }
    pipe = config.load_pipeline(spec)
    assert config.to_dict(config.load_pipeline(config.to_dict(pipe))) == config.to_dict(pipe)
    assert pipe.stages[0].params()["theta"] == 60.0 and pipe.stages[0].llm._llm is None  # loads on first miss
    for name in ("query2doc", "hyde", "multi_query"):
        stage = config.load_pipeline({"pipeline": [{name: {"cache": str(tmp_path / "c.sqlite")}}]})
        assert config.to_dict(stage)["pipeline"][0][name]["cache"] == str(tmp_path / "c.sqlite")
    with pytest.raises(Exception, match="unknown GenCRF weighting"):
        config.load_pipeline({"pipeline": [{"gencrf": {"weighting": "mean"}}]})
