"""The operators that compose stages, and the fusion math they use.

| operator | class | meaning |
|---|---|---|
| ``a >> b`` | :class:`Then` | run ``b`` on ``a``'s output; neighbours are checked when built |
| ``a % k`` | :class:`TopK` | keep the best ``k`` per query (a retriever searches for exactly ``k``) |
| ``a \\| b`` | :class:`Fuse` | run both on the same input and fuse (RRF, or min-max linear with weights) |

:class:`Interpolate` mixes a reranker's scores with the scores it was given (the
``"input_score"`` column), so a reranker is fused with its first stage without retrieving twice.

Python precedence: ``%`` binds tighter than ``>>``, and ``>>`` tighter than ``|``: write
``(a | b) >> c`` with parentheses when fusing before reranking. The YAML form is a list
of steps and has no precedence to get wrong.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.pipeline.stage import INPUT_SCORE, Kind, Stage, StageInput

METHODS = ("rrf", "linear")


def rrf(runs: Sequence[Ranking], k: float = 60) -> dict[str, dict[str, float]]:
    """``sum_r 1 / (k + rank_r(d))`` over the runs that retrieved ``d`` (rank from 1)."""
    fused: dict[str, dict[str, float]] = {}
    for run in runs:
        for qid, (docids, _) in run.items():
            acc = fused.setdefault(qid, {})
            for rank, d in enumerate(docids, start=1):
                acc[d] = acc.get(d, 0.0) + 1.0 / (k + rank)
    return fused


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] per query; a constant list maps to all ones."""
    if len(scores) == 0:
        return scores
    lo, hi = float(scores.min()), float(scores.max())
    return np.ones_like(scores) if hi == lo else (scores - lo) / (hi - lo)


def linear(runs: Sequence[Ranking], weights: Sequence[float]) -> dict[str, dict[str, float]]:
    """``sum_r w_r * minmax_r(d)``; a document a run did not retrieve gets 0 from it."""
    fused: dict[str, dict[str, float]] = {}
    for run, w in zip(runs, weights, strict=True):
        for qid, (docids, scores) in run.items():
            acc = fused.setdefault(qid, {})
            for d, s in zip(docids, minmax(scores), strict=True):
                acc[d] = acc.get(d, 0.0) + w * float(s)
    return fused


def fuse_rankings(
    runs: Sequence[Ranking],
    method: str = "rrf",
    k: float = 60,
    weights: Sequence[float] | None = None,
    queries: Queries | None = None,
) -> Ranking:
    """One ranking from several: RRF, or min-max linear with ``weights`` (default equal).

    What ``a | b`` computes after running its stages, and what ``irkit fuse`` applies to run files.
    ``queries`` (default: the first run's) are the queries the fused ranking answers.
    """
    weights = check_fusion(method, k, weights, len(runs))
    fused = rrf(runs, k) if method == "rrf" else linear(runs, weights or [1.0 / len(runs)] * len(runs))
    queries = queries if queries is not None else next((r.queries for r in runs if r.queries is not None), None)
    docstore = next((r.docstore for r in runs if r.docstore is not None), None)
    return Ranking.from_scores(fused, queries, docstore)


def check_fusion(
    method: str, k: float, weights: Sequence[float] | None, n: int, what: str = "runs"
) -> list[float] | None:
    """Refuse a fusion of ``n`` rankings that cannot be computed; the weights as floats."""
    if method not in METHODS:
        raise IrkitError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")
    if n < 2:
        raise IrkitError(f"fusion needs at least two {what}, got {n}")
    if _finite("fusion k", k) < 0:
        raise IrkitError(f"fusion k must be >= 0, got {k!r}")
    if weights is None:
        return None
    if len(weights) != n:
        raise IrkitError(f"fusion got {len(weights)} weights for {n} {what}")
    return [_finite("fusion weight", w) for w in weights]


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IrkitError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class Then(Stage):
    """Run stages in sequence, each on the previous one's output."""

    def __init__(self, stages: list[Stage]) -> None:
        flat: list[Stage] = []
        for s in stages:
            if not isinstance(s, Stage):
                raise IrkitError(f"'>>' joins stages, got {type(s).__name__}")
            flat.extend(s.stages if isinstance(s, Then) else [s])
        for a, b in itertools.pairwise(flat):
            check_neighbours(a, a.produces, b, b.consumes)
        self.stages = flat
        self.consumes: Kind = flat[0].consumes
        self.produces: Kind = flat[-1].produces

    def transform(self, inp: StageInput) -> StageInput:
        out: StageInput = inp
        for s in self.stages:
            s.check_input(out)
            out = s.transform(out)
        return out

    def transform_k(self, inp: StageInput, k: int) -> Ranking:
        out: StageInput = inp
        for s in self.stages[:-1]:
            s.check_input(out)
            out = s.transform(out)
        self.stages[-1].check_input(out)
        return self.stages[-1].transform_k(out, k)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Then, (self.stages,))

    def __repr__(self) -> str:
        return " >> ".join(repr(s) for s in self.stages)


def check_neighbours(a: object, produces: Kind, b: object, consumes: Kind) -> None:
    """Refuse ``a >> b`` when ``b`` cannot take what ``a`` produces, naming both and the fix."""
    if produces == consumes:
        return
    if consumes == "ranking":
        hint = "it needs candidates: put a retriever between them"
    else:
        hint = "move it before the retriever (a query rewriter) or to the start of the pipeline"
    raise IrkitError(f"{b} cannot follow {a}: {a} produces {produces}, but {b} takes {consumes}; {hint}")


class TopK(Stage):
    """Keep the best ``k`` of each query; retrievers are asked for exactly ``k``."""

    def __init__(self, stage: Stage, k: int) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < 2**31:
            raise IrkitError(f"'%' takes a positive integer cutoff below 2**31, got {k!r}")
        if stage.produces != "ranking":
            raise IrkitError(f"'%' cuts rankings, but {stage!r} produces {stage.produces}")
        self.stage, self.k = stage, k
        self.consumes: Kind = stage.consumes
        self.produces: Kind = "ranking"

    def transform(self, inp: StageInput) -> Ranking:
        return self.stage.transform_k(inp, self.k)

    def transform_k(self, inp: StageInput, k: int) -> Ranking:
        return self.stage.transform_k(inp, min(k, self.k))

    def __reduce__(self) -> tuple[Any, ...]:
        return (TopK, (self.stage, self.k))

    def __repr__(self) -> str:
        return f"({self.stage!r} % {self.k})"


class Fuse(Stage):
    """Run several stages on the same input and fuse their rankings (``a | b``)."""

    name = "fuse"

    def __init__(
        self, stages: list[Stage], method: str = "rrf", k: float = 60, weights: list[float] | None = None
    ) -> None:
        for s in stages:
            if not isinstance(s, Stage):
                raise IrkitError(f"'|' fuses stages, got {type(s).__name__}")
        weights = check_fusion(method, k, weights, len(stages), "stages")
        for s in stages:
            if s.produces != "ranking":
                raise IrkitError(f"'|' fuses rankings, but {s!r} produces {s.produces}")
            if s.consumes != stages[0].consumes:
                raise IrkitError(f"'|' runs its stages on one input, but {stages[0]!r} and {s!r} take different ones")
        self.stages, self.method, self.k, self.weights = stages, method, k, weights
        self.consumes: Kind = stages[0].consumes
        self.produces: Kind = "ranking"

    def __or__(self, other: Stage) -> Stage:
        if self.method == "rrf" and self.weights is None:
            return Fuse([*self.stages, other], self.method, self.k)
        return Fuse([self, other])

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"method": self.method}
        if self.method == "rrf":
            p["k"] = self.k
        if self.weights is not None:
            p["weights"] = self.weights
        return p

    def __reduce__(self) -> tuple[Any, ...]:
        return (Fuse, (self.stages, self.method, self.k, self.weights))

    def transform(self, inp: StageInput) -> Ranking:
        runs = [s.transform(inp) for s in self.stages]
        queries = inp if isinstance(inp, Queries) else inp.queries
        return fuse_rankings(runs, self.method, self.k, self.weights, queries)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return "(" + " | ".join(repr(s) for s in self.stages) + ")"


class Interpolate(Stage):
    """``weight * minmax(score) + (1 - weight) * minmax(input_score)``: a reranker mixed with its first stage.

    Follows a reranker, which keeps the scores it was given in the ``"input_score"`` column;
    the documents are those the reranker saw, so nothing is retrieved twice.
    """

    name = "interpolate"
    consumes: Kind = "ranking"
    produces: Kind = "ranking"

    def __init__(self, weight: float = 0.5, column: str = INPUT_SCORE) -> None:
        if not 0.0 <= _finite("interpolate weight", weight) <= 1.0:
            raise IrkitError(f"interpolate weight must be in [0, 1], got {weight!r}")
        self.weight, self.column = float(weight), column

    def params(self) -> dict[str, Any]:
        return {"weight": self.weight} if self.column == INPUT_SCORE else {"weight": self.weight, "column": self.column}

    def transform(self, inp: StageInput) -> Ranking:
        self.check_input(inp)
        assert isinstance(inp, Ranking)
        results = {}
        for q, (docids, scores) in inp.items():
            before = inp.column(self.column, q) if len(docids) else np.zeros(0)
            results[q] = (docids, self.weight * minmax(scores) + (1.0 - self.weight) * minmax(before))
        return Ranking.from_lists(results, inp.queries, inp.docstore, inp.columns, inp.meta)
