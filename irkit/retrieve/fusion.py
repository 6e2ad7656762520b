"""Rank fusion: reciprocal rank fusion (RRF) and min-max normalised linear fusion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from irkit.data.types import Ranking
from irkit.errors import IrkitError
from irkit.pipeline.stage import Stage, StageInput

METHODS = ("rrf", "linear")


def rrf(runs: Sequence[Ranking], k: int = 60) -> dict[str, dict[str, float]]:
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


class Fuse(Stage):
    """Run several stages on the same input and fuse their rankings (``a | b``)."""

    name = "fuse"

    def __init__(self, stages: list[Stage], method: str = "rrf", k: int = 60, weights: list[float] | None = None):
        if method not in METHODS:
            raise IrkitError(f"unknown fusion method {method!r}; choose one of {METHODS}")
        for s in stages:
            if not isinstance(s, Stage):
                raise IrkitError(f"'|' fuses stages, got {type(s).__name__}")
        if len(stages) < 2:
            raise IrkitError(f"fusion needs at least two stages, got {len(stages)}")
        if weights is not None and len(weights) != len(stages):
            raise IrkitError(f"fusion got {len(weights)} weights for {len(stages)} stages")
        self.stages, self.method, self.k = stages, method, k
        self.weights = weights

    def __or__(self, other: Stage) -> Stage:
        if self.method == "rrf" and self.weights is None:
            return Fuse([*self.stages, other], self.method, self.k)
        return Fuse([self, other])

    def params(self) -> dict[str, object]:
        p: dict[str, object] = {"method": self.method}
        if self.method == "rrf":
            p["k"] = self.k
        if self.weights is not None:
            p["weights"] = self.weights
        return p

    def transform(self, inp: StageInput) -> Ranking:
        runs = [s.transform(inp) for s in self.stages]
        if self.method == "rrf":
            fused = rrf(runs, self.k)
        else:
            fused = linear(runs, self.weights or [1.0 / len(runs)] * len(runs))
        queries = inp if not isinstance(inp, Ranking) else inp.queries
        docstore = next((r.docstore for r in runs if r.docstore is not None), None)
        return Ranking.from_scores(fused, queries, docstore)

    def __repr__(self) -> str:
        return "(" + " | ".join(repr(s) for s in self.stages) + ")"
