"""GenCRF: generative clustering and reformulation (Seo et al., 2024, arXiv 2409.10909).

1. **Generation**: three prompt types (contextual expansion, detail specific, aspect specific),
   ``n`` sampled reformulations each (temperature 0.8, top_p 0.95 as in the paper).
2. **Clustering by the LLM**: one greedy prompt groups the original and generated queries into
   1–3 clusters and writes one refined query per cluster as JSON. The reply is parsed strictly,
   then leniently (``"cluster2": "…`` fragments of broken or cut-off JSON); when neither finds a
   query, the generated queries are clustered by their embeddings instead (seeded k-means,
   k = 1–3 by silhouette, the member nearest each centroid stands for its cluster). Which path
   each query took is counted in ``stats`` and recorded per query.
3. **Weighted aggregation** of ``q_init`` (weight ``w0`` = 0.7) and the cluster queries:
   ``sim`` (SimDW: cosine to ``q_init``, kept when >= θ = 0.2), ``score`` (ScoreDW: an LLM
   score on 1–100, kept when >= θ = 60, divided by ``score_scale`` = 100 so it does not swamp
   ``w0``; ``score_scale=1`` is the paper's unnormalised form), ``fixed``
   (``(1 − w0)/|Q|`` each) and ``concat`` (``q_init [SEP] q_1 [SEP] …`` as one text).
   The weighted variants go to the retriever that follows: ``Dense`` searches
   ``normalise(Σ w·encode(text))`` (the paper's aggregated query vector), BM25 and others fuse
   the per-variant runs linearly with the weights. When no cluster query survives the
   threshold, the query is left as it was, so retrieval equals plain retrieval.
4. **QERM** (optional, :mod:`irkit.reformulate.qerm`): a reward model predicts from the
   reformulation set whether it will retrieve well; below its threshold the query is
   regenerated (new seeds) and re-clustered, at most ``max_rounds`` rounds in all; the last
   round's set is used.

Similarities, the clustering fallback and QERM's features use the rewriter's own bi-encoder
(``encoder``, default ``minilm``): the same model as the ``Dense`` retriever of a MiniLM index.
In front of another dense index, pass that index's model so the weights are computed in the
space the retriever searches.

Clustering and scoring are greedy (they judge, they should not vary); only the generation
samples. Each cluster query is scored by its own prompt: the paper scores all clusters in one
list, but asked for a list a 135M model copies the example numbers or the query indices.
Every reply is cached on disk (:mod:`irkit.reformulate.llm_cache`), so the six generations
of a query are shared by every weighting and by :class:`MultiQuery`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from irkit.data.types import Queries
from irkit.errors import IrkitError
from irkit.models.encoder import BiEncoder
from irkit.models.llm import CausalLM
from irkit.pipeline.stage import QueryRewriter, StageInput
from irkit.reformulate.llm_cache import CachedLLM, Request

#: the three generation prompts (our wording of the paper's three intents)
PROMPTS: dict[str, str] = {
    "contextual": (
        "You are an expert at expanding search queries with context. Understand the core intent of the query "
        "below and rewrite it as one refined, contextually expanded search query. Keep it short and clear.\n\n"
        "Query: {query}"
    ),
    "detail": (
        "You are an expert at detail-specific search. Understand the core intent of the query below and rewrite "
        "it as one refined search query that focuses on a particular detail or subtopic of it. Keep it short and "
        "clear.\n\nQuery: {query}"
    ),
    "aspect": (
        "You are an expert at aspect-specific search. Understand the core intent of the query below and rewrite "
        "it as one refined search query that focuses on one specific aspect or dimension of its topic. Keep it "
        "short and clear.\n\nQuery: {query}"
    ),
}
GENERATION_LEAD = "Refined query:"
CLUSTER_PROMPT = (
    "You are an expert at grouping and refining search queries. Below are an original query and rewritten "
    "versions of it. Group the rewritten queries into 1 to 3 clusters by meaning (choose the number yourself) "
    "and write one refined search query per cluster that combines the original query with the useful "
    "information of that cluster. Answer in JSON only, with 1 to 3 keys: "
    '{{"cluster1": "...", "cluster2": "...", "cluster3": "..."}}\n\n'
    "Original query: {query}\nRewritten queries:\n{generated}"
)
CLUSTER_LEAD = '{"cluster1": "'
SCORE_PROMPT = (
    "You are an expert at judging search queries. Rate the refined query below against the original query for "
    "relevance, specificity, clarity, comprehensiveness and usefulness for retrieval. Give a score from 1 (worst) "
    "to 100 (best); give a high score only when it is deserved. Answer with the number only.\n\n"
    "Original query: {query}\nRefined query: {cluster}"
)
SCORE_LEAD = "Score:"
SCORE_TOKENS = 4
WEIGHTINGS = ("sim", "score", "fixed", "concat")
DEFAULT_THETA = {"sim": 0.2, "score": 60.0}
#: ``Queries.fields`` key of the per-query record (clusters, weights, path, rounds, QERM logits)
FACTS = "gencrf"
#: a split of the generated queries must reach this silhouette to beat one cluster
MIN_SILHOUETTE = 0.1
#: generated queries whose cosines are all at least this are one cluster (silhouette is scale-free)
SAME_CLUSTER_COSINE = 0.9
_CLUSTER_VALUE = re.compile(r"cluster\s*_?\d+[\"']?\s*:\s*(?:\"([^\"\n]*)\"?|'([^'\n]*)'?)", re.IGNORECASE)
_LABEL = re.compile(r"^\s*(?:refined|rewritten|expanded)?\s*(?:search\s+)?query\s*:\s*", re.IGNORECASE)


def numbered(texts: Sequence[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(texts, start=1))


def clean(reply: str) -> str:
    """A generated query: its first paragraph, without a leading label or wrapping quotes."""
    text = reply.strip().split("\n\n")[0].strip()
    text = _LABEL.sub("", text).strip()
    return text.strip("\"'“”` ").strip()


def generate_reformulations(
    llm: CachedLLM,
    queries: Sequence[str],
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    round_: int = 0,
) -> list[list[str]]:
    """``len(PROMPTS) * n`` cleaned reformulations per query (prompt-major), sampled with distinct seeds.

    Sample ``j`` of round ``r`` uses seed ``seed + 1000 r + j``: the same request in any later
    run hits the cache.
    """
    requests = [
        Request(template.format(query=q), q, seed + 1000 * round_ + j, GENERATION_LEAD)
        for q in queries
        for template in PROMPTS.values()
        for j in range(n)
    ]
    replies = llm.generate(requests, max_new_tokens, temperature=temperature, top_p=top_p)
    per = len(PROMPTS) * n
    return [[clean(r) for r in replies[i * per : (i + 1) * per]] for i in range(len(queries))]


def parse_clusters(text: str) -> tuple[list[str], str]:
    """Refined queries from a clustering reply, and how they were found: ``json``, ``repaired`` or ``failed``.

    At most three, in order, without empty or repeated ones. Never raises.
    """
    found: list[str] = []
    path = "failed"
    start = text.find("{")
    end = text.find("}", start + 1)
    if start >= 0 and end > start:
        try:
            obj = json.loads(text[start : end + 1])
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            found = [v for v in obj.values() if isinstance(v, str)]
            path = "json"
    if not _keep(found):
        found = [a or b for a, b in _CLUSTER_VALUE.findall(text)]
        path = "repaired"
    queries = _keep(found)
    return (queries, path) if queries else ([], "failed")


def _keep(texts: Sequence[str]) -> list[str]:
    """Texts that hold a word (two letters or digits in a row), first occurrence only, at most three."""
    out: list[str] = []
    for t in texts:
        t = t.strip()
        if re.search(r"\w\w", t) and t.lower() not in {o.lower() for o in out}:
            out.append(t)
    return out[:3]


def parse_score(text: str) -> float | None:
    """The first number of a scoring reply, or ``None`` when there is none or it lies outside 1–100."""
    found = re.search(r"\d+(?:\.\d+)?", text)
    value = float(found.group()) if found else None
    return value if value is not None and 1 <= value <= 100 else None


def dynamic_weights(values: Sequence[float | None], theta: float, scale: float = 1.0) -> list[float | None]:
    """SimDW/ScoreDW: ``value / scale`` where ``value >= theta``, else ``None`` (the query is left out)."""
    return [v / scale if v is not None and v >= theta else None for v in values]


def fixed_weights(n: int, w0: float) -> list[float | None]:
    """The fixed-weights ablation: ``(1 − w0) / n`` for each of ``n`` cluster queries."""
    return [(1.0 - w0) / n] * n


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of the vector ``a`` with each row of ``b``."""
    na = np.linalg.norm(a) or 1.0
    nb = np.linalg.norm(b, axis=-1)
    return (b @ a) / (np.where(nb > 0, nb, 1.0) * na)


def embedding_clusters(texts: Sequence[str], vectors: np.ndarray, seed: int, max_k: int = 3) -> list[str]:
    """One representative text per cluster of ``vectors`` (seeded k-means, k = 1..max_k by silhouette)."""
    if len(texts) == 0:
        return []
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    best, best_labels = MIN_SILHOUETTE, np.zeros(len(texts), dtype=int)
    ks = range(2, min(max_k, len(texts) - 1) + 1) if (x @ x.T).min() < SAME_CLUSTER_COSINE else range(0)
    for k in ks:
        labels = _kmeans(x, k, np.random.default_rng(seed))
        s = _silhouette(x, labels)
        if s > best:
            best, best_labels = s, labels
    reps = []
    for c in sorted(set(best_labels.tolist()), key=lambda c: (-int((best_labels == c).sum()), c)):
        members = np.flatnonzero(best_labels == c)
        centre = x[members].mean(0)
        reps.append(texts[members[int(np.argmax(x[members] @ centre))]])
    return reps


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50) -> np.ndarray:
    """Lloyd's k-means on unit vectors (cosine) from a k-means++ start drawn from ``rng``."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min([1.0 - x @ c for c in centres], axis=0).clip(min=0)
        p = d / d.sum() if d.sum() > 0 else np.full(len(x), 1.0 / len(x))
        centres.append(x[rng.choice(len(x), p=p)])
    c = np.array(centres)
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iters):
        new = np.argmax(x @ c.T, axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        c = np.array([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
    return labels


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with cosine distance (a point alone in its cluster scores 0)."""
    if len(set(labels.tolist())) < 2:
        return -1.0
    d = 1.0 - x @ x.T
    scores = []
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() == 1:
            scores.append(0.0)
            continue
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == c].mean() for c in set(labels.tolist()) if c != labels[i])
        scores.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return float(np.mean(scores))


class GenCRF(QueryRewriter):
    """GenCRF query reformulation before any retriever: ``GenCRF() >> Dense(index) % 100 >> CrossEncoder()``.

    ``weighting`` is ``sim`` | ``score`` | ``fixed`` | ``concat``; ``theta`` defaults to 0.2 (sim)
    or 60 (score). ``qerm`` is the directory of a trained :class:`irkit.reformulate.qerm.QERM`.
    ``stats`` counts clustering paths (``cluster_json``, ``cluster_repaired``,
    ``cluster_fallback``, ``cluster_empty``), scores the LLM did not give (``score_missing``),
    rounds and regenerations; ``llm.stats`` counts cache lookups, hits and LLM calls. Each
    query's clusters, weights, path and rounds are in ``Queries.fields["gencrf"]``.
    """

    name: ClassVar[str | None] = "gencrf"

    def __init__(
        self,
        llm: str | CausalLM = "smollm2",
        weighting: str = "sim",
        qerm: str | None = None,
        encoder: str | BiEncoder = "minilm",
        w0: float = 0.7,
        theta: float | None = None,
        score_scale: float = 100.0,
        n: int = 2,
        temperature: float = 0.8,
        top_p: float = 0.95,
        max_new_tokens: int = 32,
        cluster_tokens: int = 96,
        max_rounds: int = 2,
        seed: int = 0,
        batch_size: int = 16,
        cache: str | None = None,
        separator: str = " [SEP] ",
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise IrkitError(f"unknown GenCRF weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if n < 1 or max_rounds < 1 or max_new_tokens < 1 or cluster_tokens < 1 or score_scale <= 0:
            raise IrkitError(
                "GenCRF needs n, max_rounds, max_new_tokens and cluster_tokens >= 1 and score_scale > 0, got "
                f"{n}, {max_rounds}, {max_new_tokens}, {cluster_tokens}, {score_scale}"
            )
        self.weighting, self.qerm_path, self.w0 = weighting, qerm, float(w0)
        self.theta = float(theta) if theta is not None else DEFAULT_THETA.get(weighting)
        self.score_scale, self.n, self.temperature, self.top_p = float(score_scale), int(n), temperature, top_p
        self.max_new_tokens, self.cluster_tokens, self.max_rounds = int(max_new_tokens), int(cluster_tokens), max_rounds
        self.seed, self.batch_size, self.cache_path, self.separator = int(seed), int(batch_size), cache, separator
        self._llm_arg, self._encoder_arg = llm, encoder
        self.llm = CachedLLM(llm, cache, batch_size)
        self._encoder: BiEncoder | None = encoder if isinstance(encoder, BiEncoder) else None
        self.qerm = None
        if qerm is not None:
            from irkit.reformulate.qerm import QERM

            self.qerm = QERM.load(qerm)
            expected = encoder if isinstance(encoder, str) else encoder.name
            if self.qerm.encoder != expected:
                raise IrkitError(
                    f"QERM was trained on {self.qerm.encoder!r} features, GenCRF encodes with {expected!r}"
                )
        self.stats: Counter[str] = Counter()
        self._facts: list[dict[str, Any]] = []

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {
            "llm": self._llm_arg if isinstance(self._llm_arg, str) else self._llm_arg.name,
            "weighting": self.weighting,
            "encoder": self._encoder_arg if isinstance(self._encoder_arg, str) else self._encoder_arg.name,
            "w0": self.w0,
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "cluster_tokens": self.cluster_tokens,
            "max_rounds": self.max_rounds,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }
        if self.theta is not None:
            p["theta"] = self.theta
        if self.weighting == "score":
            p["score_scale"] = self.score_scale
        if self.weighting == "concat":
            p["separator"] = self.separator
        for key, value in (("qerm", self.qerm_path), ("cache", self.cache_path)):
            if value is not None:
                p[key] = value
        return p

    @property
    def encoder(self) -> BiEncoder:
        if self._encoder is None:
            self._encoder = BiEncoder(str(self._encoder_arg), max_length=256)
        return self._encoder

    def transform(self, inp: StageInput) -> Queries:
        out = super().transform(inp)
        facts = dict(out.fields.get(FACTS, {}))
        facts.update(zip(list(out), self._facts, strict=True))
        out.fields[FACTS] = facts
        return out

    def rewrite_batch(self, queries: Sequence[str]) -> list[str | list[tuple[str, float]]]:
        queries = list(queries)
        facts: list[dict[str, Any]] = [{"rounds": 0, "logits": []} for _ in queries]
        active = list(range(len(queries)))
        for rnd in range(self.max_rounds if self.qerm is not None else 1):
            sub = [queries[i] for i in active]
            generated = generate_reformulations(
                self.llm, sub, self.n, self.temperature, self.top_p, self.max_new_tokens, self.seed, rnd
            )
            clusters, paths = self.cluster(sub, generated, rnd)
            vectors = self._encode(sub, clusters)
            weights, scores = self.weights(sub, clusters, vectors)
            self.stats["rounds"] += len(sub)
            for i, gen, c, p, w, s, v in zip(active, generated, clusters, paths, weights, scores, vectors, strict=True):
                facts[i].update(rounds=rnd + 1, generated=gen, clusters=c, path=p, weights=w, scores=s, vectors=v)
            if self.qerm is None:
                break
            logits = self.qerm.logits(np.stack([self.qerm.features(*facts[i]["vectors"]) for i in active]))
            for i, lg in zip(active, logits, strict=True):
                facts[i]["logits"].append(float(lg))
            if rnd + 1 == self.max_rounds:
                break
            active = [i for i, lg in zip(active, logits, strict=True) if lg < self.qerm.threshold]
            self.stats["regenerated"] += len(active)
            if not active:
                break
        out = []
        for q, f in zip(queries, facts, strict=True):
            del f["vectors"]
            out.append(self.combine(q, f["clusters"], f["weights"]))
        self._facts = facts
        return out

    def cluster(
        self, queries: Sequence[str], generated: Sequence[Sequence[str]], rnd: int = 0
    ) -> tuple[list[list[str]], list[str]]:
        """Cluster queries per query: the LLM's JSON, else the embedding fallback; and the path each took."""
        requests = [
            Request(CLUSTER_PROMPT.format(query=q, generated=numbered([g for g in gen if g])), q, 0, CLUSTER_LEAD)
            for q, gen in zip(queries, generated, strict=True)
        ]
        replies = self.llm.generate(requests, self.cluster_tokens)
        clusters, paths = [], []
        for gen, reply in zip(generated, replies, strict=True):
            found, path = parse_clusters(CLUSTER_LEAD + reply)
            if not found:
                texts = list(dict.fromkeys(g for g in gen if g))
                path = "fallback" if texts else "empty"
                if texts:
                    found = embedding_clusters(texts, self.encoder.encode(texts), self.seed + 1000 * rnd)
            self.stats[f"cluster_{path}"] += 1
            clusters.append(found)
            paths.append(path)
        return clusters, paths

    def _encode(self, queries: Sequence[str], clusters: Sequence[Sequence[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(q_init vector, cluster vectors)`` per query, in one encoder batch."""
        texts = [t for q, c in zip(queries, clusters, strict=True) for t in (q, *c)]
        encoded = self.encoder.encode(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        out, row = [], 0
        for c in clusters:
            out.append((encoded[row], encoded[row + 1 : row + 1 + len(c)]))
            row += 1 + len(c)
        return out

    def weights(
        self,
        queries: Sequence[str],
        clusters: Sequence[Sequence[str]],
        vectors: Sequence[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[list[list[float | None]], list[list[float | None]]]:
        """The weight of each cluster query (``None``: left out) and, for ScoreDW, the LLM's raw scores."""
        if self.weighting == "score":
            scores = self.score(queries, clusters)
            return [dynamic_weights(s, self.theta, self.score_scale) for s in scores], scores  # type: ignore[arg-type]
        if self.weighting == "sim":
            sims = [cosine(init, vecs).tolist() if len(vecs) else [] for init, vecs in vectors]
            return [dynamic_weights(s, self.theta) for s in sims], sims  # type: ignore[arg-type]
        if self.weighting == "fixed":
            return [fixed_weights(len(c), self.w0) for c in clusters], [[] for _ in clusters]
        return [[1.0] * len(c) for c in clusters], [[] for _ in clusters]

    def score(self, queries: Sequence[str], clusters: Sequence[Sequence[str]]) -> list[list[float | None]]:
        """The LLM's 1–100 score of each cluster query, one greedy prompt each (``None``: no usable number)."""
        requests = [
            Request(SCORE_PROMPT.format(query=q, cluster=c), q, 0, SCORE_LEAD)
            for q, cs in zip(queries, clusters, strict=True)
            for c in cs
        ]
        replies = iter(self.llm.generate(requests, SCORE_TOKENS))
        out = [[parse_score(next(replies)) for _ in cs] for cs in clusters]
        self.stats["score_missing"] += sum(x is None for s in out for x in s)
        return out

    def combine(
        self, query: str, clusters: Sequence[str], weights: Sequence[float | None]
    ) -> str | list[tuple[str, float]]:
        """One text (``concat``) or ``[(q_init, w0), (q_i, w_i), ...]``; the query itself if no cluster is kept."""
        if self.weighting == "concat":
            return self.separator.join([query, *clusters])
        kept = [(c, float(w)) for c, w in zip(clusters, weights, strict=True) if w is not None]
        return [(query, self.w0), *kept] if kept else query
