"""The stage contract and its four roles.

A stage maps queries (with or without candidates) to queries or a ranking, and declares
which: ``consumes`` and ``produces`` are ``"queries"`` or ``"ranking"``. ``a >> b`` checks
that ``b`` accepts what ``a`` produces when the pipeline is built, before any model loads.

| role | maps | a method implements |
|---|---|---|
| :class:`Retriever` | Queries → Ranking | ``retrieve(queries, k)`` |
| :class:`Reranker` | Ranking → Ranking | ``score(query, docs)`` |
| :class:`QueryRewriter` | Queries → Queries | ``rewrite(query)`` |
| :class:`Filter` | Ranking → shorter Ranking | ``keep(query, docids, scores)`` |

Each role base owns the loop over queries, so a method writes only its core; the batch
hooks (``score_batch``, ``rewrite_batch``, ``keep_batch``) let a method batch across
queries when that pays. The operators ``>>``, ``%`` and ``|`` live in
:mod:`irkit.pipeline.operators`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError

if TYPE_CHECKING:
    from irkit.data.docstore import Doc
    from irkit.pipeline.operators import Then, TopK

StageInput = Queries | Ranking
Kind = Literal["queries", "ranking"]

#: ``Queries.fields`` key holding the text a rewriter started from (kept through chained rewriters)
ORIGINAL = "original"
#: ``Queries.fields`` key holding weighted query variants ``[(text, weight), ...]`` for a retriever to combine
VARIANTS = "variants"
#: ``Queries.fields`` key: ``"rrf"`` for a query whose variants are fused by reciprocal rank (default: linear)
FUSION = "fusion"
#: ``Ranking.columns`` keys where a reranker keeps the score and the rank (from 1) each document had before it
INPUT_SCORE = "input_score"
INPUT_RANK = "input_rank"


def as_input(x: object) -> StageInput:
    """Coerce what a user passes to a stage: a query string, ``{qid: text}``, a list of strings, Queries or Ranking."""
    if isinstance(x, Queries | Ranking):
        return x
    if isinstance(x, str):
        return Queries({"q0": x})
    if isinstance(x, Mapping):
        return Queries({str(k): v for k, v in x.items()})
    if isinstance(x, Sequence):
        return Queries({f"q{i}": t for i, t in enumerate(x)})
    raise IrkitError(f"a stage takes Queries, a Ranking, a query string or {{qid: text}}, not {type(x).__name__}")


def doc_text(doc: Doc | str) -> str:
    """A document as every text-reading stage sees it: ``Doc.contents`` (title and text), or the string given."""
    return doc if isinstance(doc, str) else doc.contents


def kind_of(x: StageInput) -> Kind:
    return "ranking" if isinstance(x, Ranking) else "queries"


class Stage:
    """Maps queries (with or without candidates) to queries or a Ranking. Pipelines are stages too.

    Subclasses declare ``consumes``/``produces`` (a role base does it for them), a registry
    ``name`` for the YAML form, and ``params()``: the keyword arguments that rebuild the stage.
    Stages pickle by rebuilding from ``params()`` (so Ray workers load their own models).
    """

    #: Registry name used by the YAML form; ``None`` for stages that have no YAML form.
    name: ClassVar[str | None] = None
    consumes: ClassVar[Kind] = "queries"
    produces: ClassVar[Kind] = "ranking"

    def transform(self, inp: StageInput) -> StageInput:
        raise NotImplementedError

    def transform_k(self, inp: StageInput, k: int) -> Ranking:
        """The best ``k`` per query; a retriever searches for exactly ``k`` instead of cutting a longer list."""
        out = self.transform(inp)
        if not isinstance(out, Ranking):
            raise IrkitError(f"'%' cuts rankings, but {self!r} produces queries")
        return out.top_k(k)

    def check_input(self, inp: StageInput) -> None:
        """Refuse an input of the wrong kind, saying what to put before this stage."""
        if self.consumes == kind_of(inp):
            return
        if self.consumes == "ranking":
            raise IrkitError(
                f"{self!r} works on candidate rankings but was given bare queries; put a retriever before it"
            )
        raise IrkitError(f"{self!r} takes queries but was given a ranking; it cannot follow a retriever or reranker")

    def __call__(self, inp: object) -> StageInput:
        x = as_input(inp)
        self.check_input(x)
        return self.transform(x)

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """Rank for one query string: ``[(docid, score), ...]``, best first."""
        docids, scores = self.transform_k(Queries({"q0": query}), k)["q0"]
        return list(zip(docids, scores.tolist(), strict=True))

    def params(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this stage (its YAML body)."""
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.params()))

    def __rshift__(self, other: Stage) -> Then:
        from irkit.pipeline.operators import Then

        return Then([self, other])

    def __mod__(self, k: int) -> TopK:
        from irkit.pipeline.operators import TopK

        return TopK(self, k)

    def __or__(self, other: Stage) -> Stage:
        from irkit.pipeline.operators import Fuse

        return Fuse([self, other])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def _rebuild(cls: type[Stage], params: dict[str, Any]) -> Stage:
    return cls(**params)


class Retriever(Stage):
    """Queries → Ranking. Implement ``retrieve(queries, k)``: the top ``k`` documents of every query.

    ``depth`` is how many documents are retrieved when no ``%`` cut asks for another number.
    Queries that carry weighted variants (a rewriter's output, ``Queries.fields["variants"]``)
    are answered by ``retrieve_variants``: by default every variant is retrieved on its own and
    the lists are fused linearly with the variants' weights (min-max normalised, as ``Fuse``
    does); a retriever with a vector space may combine the query vectors instead.
    """

    consumes: ClassVar[Kind] = "queries"
    produces: ClassVar[Kind] = "ranking"
    depth: int = 1000

    def retrieve(self, queries: Queries, k: int) -> Ranking:
        raise NotImplementedError

    def transform(self, inp: StageInput) -> Ranking:
        return self.transform_k(inp, self.depth)

    def transform_k(self, inp: StageInput, k: int) -> Ranking:
        self.check_input(inp)
        assert isinstance(inp, Queries)
        variants = inp.fields.get(VARIANTS, {})
        multi = [q for q in inp if q in variants]
        if not multi:
            return self.retrieve(inp, k)
        plain = [q for q in inp if q not in variants]
        runs = [self.retrieve_variants(inp.subset(multi), k)]
        if plain:
            runs.append(self.retrieve(inp.subset(plain), k))
        results = {q: r.results[q] for r in runs for q in r}
        meta = {q: m for r in runs for q, m in r.meta.items()}
        docstore = next((r.docstore for r in runs if r.docstore is not None), None)
        return Ranking({q: results[q] for q in inp if q in results}, inp, docstore, meta=meta)

    def retrieve_variants(self, queries: Queries, k: int) -> Ranking:
        """Rank each query from its weighted variants: per-variant lists fused linearly with the weights.

        A query whose ``fields["fusion"]`` is ``"rrf"`` fuses its lists by reciprocal rank
        (``k = 60``) and ignores the weights.
        """
        from irkit.pipeline.operators import linear, rrf

        variants = queries.fields[VARIANTS]
        method = queries.fields.get(FUSION, {})
        keys = {q: [f"{q}\x1f{i}" for i in range(len(variants[q]))] for q in queries}
        run = self.retrieve(
            Queries({key: text for q in queries for key, (text, _) in zip(keys[q], variants[q], strict=True)}), k
        )
        fused: dict[str, dict[str, float]] = {}
        for q in queries:
            parts = [Ranking({q: run[key]}) for key in keys[q]]
            by_rank = method.get(q) == "rrf"
            fused[q] = (rrf(parts) if by_rank else linear(parts, [w for _, w in variants[q]])).get(q, {})
        return Ranking.from_scores(fused, queries, run.docstore).top_k(k)


class Reranker(Stage):
    """Ranking → Ranking. Implement ``score(query, docs) -> np.ndarray`` (one score per document).

    The base fetches each query's documents from the ranking's DocStore, re-sorts by the new
    scores (ties keep the input order) and keeps the input scores and ranks as the
    ``"input_score"`` and ``"input_rank"`` columns, so ``Interpolate`` can mix them without
    running the first stage again. A method that batches across queries overrides
    ``score_batch``; one that reports facts about each query (model calls, judgments) returns
    them from ``query_meta()``, which the base stores in ``Ranking.meta``.
    """

    consumes: ClassVar[Kind] = "ranking"
    produces: ClassVar[Kind] = "ranking"

    def score(self, query: str, docs: Sequence[Doc | str]) -> np.ndarray:
        raise NotImplementedError

    def score_batch(self, items: Sequence[tuple[str, Sequence[Doc | str]]]) -> list[np.ndarray]:
        return [np.asarray(self.score(q, docs), dtype=np.float64) for q, docs in items]

    def rank(
        self, query: str, docs: Sequence[Doc | str], top_k: int | None = None, return_documents: bool = False
    ) -> list[dict[str, Any]]:
        """``[{"corpus_id": i, "score": s}, ...]`` for ``docs``, best first (sentence-transformers' form)."""
        scores = np.asarray(self.score(query, docs), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else len(docs)]
        hits: list[dict[str, Any]] = []
        for i in order:
            hit: dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                hit["text"] = doc_text(docs[i])
            hits.append(hit)
        return hits

    def query_meta(self) -> dict[str, Any]:
        """Facts about the query ``score`` ranked last (e.g. LLM calls spent); JSON-serialisable."""
        return {}

    def transform(self, inp: StageInput) -> Ranking:
        self.check_input(inp)
        assert isinstance(inp, Ranking)
        run = inp
        queries, store = _texts_of(run, self)
        results: dict[str, tuple[list[str], np.ndarray]] = {}
        meta: dict[str, dict[str, Any]] = {}
        items = [(q, queries[q], d) for q, (d, _) in run.items()]
        batched = type(self).score_batch is not Reranker.score_batch
        groups = [items] if batched else [[it] for it in items]
        for group in groups:
            try:
                scores = self.score_batch([(text, store.get_many(d)) for _, text, d in group])
            except IrkitError as e:
                if batched:
                    raise
                raise IrkitError(f"query {group[0][0]!r}: {e}") from None
            for (q, _, docids), s in zip(group, scores, strict=True):
                if len(s) != len(docids):
                    raise IrkitError(f"{self!r} returned {len(s)} scores for {len(docids)} documents of query {q!r}")
                results[q] = (docids, np.asarray(s, dtype=np.float64))
            facts = {} if batched else self.query_meta()
            if facts:
                meta[group[0][0]] = {**run.meta.get(group[0][0], {}), **facts}
        columns = {
            INPUT_SCORE: {q: s for q, (_, s) in run.items()},
            INPUT_RANK: {q: np.arange(1, len(d) + 1) for q, (d, _) in run.items()},
        }
        meta = {**run.meta, **meta}
        return Ranking.from_lists(results, run.queries, run.docstore, columns, meta)


class QueryRewriter(Stage):
    """Queries → Queries. Implement ``rewrite(query)``: a new text, or weighted variants ``[(text, w), ...]``.

    The text a query started from is kept in ``Queries.fields["original"]``. Variants go to
    ``Queries.fields["variants"]`` (the query text stays the original) for the retriever that
    follows to combine (fused linearly with the weights, or by reciprocal rank where the
    rewriter sets ``fields["fusion"]`` to ``"rrf"``); ``rewrite_batch`` lets a method batch
    across queries (e.g. one LLM generation batch).
    """

    consumes: ClassVar[Kind] = "queries"
    produces: ClassVar[Kind] = "queries"

    def rewrite(self, query: str) -> str | list[tuple[str, float]]:
        raise NotImplementedError

    def rewrite_batch(self, queries: Sequence[str]) -> list[str | list[tuple[str, float]]]:
        return [self.rewrite(q) for q in queries]

    def transform(self, inp: StageInput) -> Queries:
        self.check_input(inp)
        assert isinstance(inp, Queries)
        qids = list(inp)
        rewritten = self.rewrite_batch([inp[q] for q in qids])
        fields = {name: dict(col) for name, col in inp.fields.items()}
        original = fields.setdefault(ORIGINAL, {})
        variants = fields.pop(VARIANTS, {})
        texts: dict[str, str] = {}
        for q, new in zip(qids, rewritten, strict=True):
            original.setdefault(q, inp[q])
            if isinstance(new, str):
                texts[q] = new
                variants.pop(q, None)
            else:
                if not new:
                    raise IrkitError(f"{self!r} gave no query variant for query {q!r}")
                texts[q] = inp[q]
                variants[q] = [(str(t), float(w)) for t, w in new]
        if variants:
            fields[VARIANTS] = variants
        return Queries(texts, fields)


class Filter(Stage):
    """Ranking → shorter Ranking. Implement ``keep(query, docids, scores)``: a boolean mask.

    ``keep`` may also return ``(mask, new_scores)`` to replace the scores (e.g. calibrated
    probabilities; a monotone map, so the order is unchanged). A list may shrink to nothing:
    an empty list flows through the rest of a pipeline and into evaluation.
    """

    consumes: ClassVar[Kind] = "ranking"
    produces: ClassVar[Kind] = "ranking"

    def keep(self, query: str, docids: list[str], scores: np.ndarray) -> Any:
        raise NotImplementedError

    def keep_batch(self, items: Sequence[tuple[str, list[str], np.ndarray]]) -> list[Any]:
        return [self.keep(q, d, s) for q, d, s in items]

    def transform(self, inp: StageInput) -> Ranking:
        self.check_input(inp)
        assert isinstance(inp, Ranking)
        queries = _queries_of(inp, self)
        qids = list(inp)
        decisions = self.keep_batch([(queries[q], *inp[q]) for q in qids])
        keep: dict[str, np.ndarray] = {}
        rescored: dict[str, np.ndarray] = {}
        for q, decision in zip(qids, decisions, strict=True):
            mask, scores = decision if isinstance(decision, tuple) else (decision, None)
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (len(inp[q][0]),):
                raise IrkitError(f"{self!r} returned a mask of shape {mask.shape} for {len(inp[q][0])} documents")
            keep[q] = np.flatnonzero(mask)
            if scores is not None:
                rescored[q] = np.asarray(scores, dtype=np.float64)
        out = inp.cut(keep)
        if rescored:
            for q, s in rescored.items():
                out.results[q] = (out.results[q][0], s[keep[q]])
        return out


def _queries_of(run: Ranking, stage: Stage) -> Queries:
    if run.queries is None:
        raise IrkitError(f"{stage!r} needs query texts, but the ranking it was given carries none")
    return run.queries


def _texts_of(run: Ranking, stage: Stage) -> tuple[Queries, Any]:
    """The query texts and the DocStore a text-reading stage needs."""
    queries = _queries_of(run, stage)
    if run.docstore is None:
        raise IrkitError(
            f"{stage!r} needs document texts, but the ranking carries no docstore "
            "(retrieve from an irkit index, or attach one: ranking.docstore = DocStore(path))"
        )
    return queries, run.docstore
