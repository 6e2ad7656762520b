"""Evaluation on ir-measures metric strings, and paired significance tests between runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from irkit.data.types import Qrels, Ranking
from irkit.errors import IrkitError, IrkitWarning


@dataclass
class EvalResult:
    """Per-query values and their means, keyed by the measure strings the caller gave."""

    per_query: dict[str, dict[str, float]]
    aggregate: dict[str, float]

    def __getitem__(self, measure: str) -> float:
        return self.aggregate[measure]

    def table(self) -> str:
        width = max(len(m) for m in self.aggregate)
        return "\n".join(f"{m:<{width}}  {v:.4f}" for m, v in self.aggregate.items())


def _parse(measures: Sequence[str]) -> dict[str, object]:
    import ir_measures

    parsed = {}
    for m in measures:
        try:
            parsed[m] = ir_measures.parse_measure(m)
        except (ValueError, NameError, SyntaxError) as e:
            raise IrkitError(f"unknown measure {m!r} ({e})") from None
    return parsed


def evaluate(run: Ranking, qrels: Qrels, measures: Sequence[str] = ("nDCG@10",)) -> EvalResult:
    """Score ``run`` against ``qrels``; queries judged but absent from the run score 0.

    Counting absent queries as 0 keeps a run that fails on hard queries from
    looking better than one that answers them (trec_eval's ``-c`` behaviour).
    """
    import ir_measures

    if not isinstance(run, Ranking):
        raise IrkitError(f"evaluate takes a Ranking, got {type(run).__name__}")
    parsed = _parse(measures)
    by_obj = {v: k for k, v in parsed.items()}
    judged = [q for q in qrels if any(g > 0 for g in qrels[q].values())]
    if not judged:
        _warn("the qrels judge no document relevant (empty, or all grades <= 0): every score is 0")
    elif not any(q in run for q in judged):
        _warn(f"none of the run's {len(run)} queries is among the {len(judged)} judged ones: every score is 0")
    elif not any(d in qrels[q] for q in judged if q in run for d in run[q][0]):
        _warn("the run retrieves no judged document for any judged query (qrels of another collection?)")
    per_query: dict[str, dict[str, float]] = {m: dict.fromkeys(judged, 0.0) for m in measures}
    run_dict = {q: docs for q, docs in run.to_dict().items() if q in qrels}
    for metric in ir_measures.iter_calc(list(parsed.values()), qrels.judgments, run_dict):
        col = per_query[by_obj[metric.measure]]
        if metric.query_id in col:
            col[metric.query_id] = float(metric.value)
    aggregate = {m: float(np.mean(list(v.values()))) if v else 0.0 for m, v in per_query.items()}
    return EvalResult(per_query, aggregate)


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, IrkitWarning, stacklevel=3)


@dataclass
class Comparison:
    """One system against the baseline on one measure."""

    name: str
    mean: float
    baseline_mean: float
    p_value: float
    p_holm: float


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjustment (controls family-wise error)."""
    n = len(p_values)
    order = np.argsort(p_values)
    adjusted = np.empty(n)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (n - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def compare(baseline: Ranking, runs: Mapping[str, Ranking], qrels: Qrels, measure: str = "nDCG@10") -> list[Comparison]:
    """Paired two-sided t-tests of each run against ``baseline``, Holm-corrected across runs."""
    from scipy import stats

    base = evaluate(baseline, qrels, [measure]).per_query[measure]
    qids = sorted(base)
    rows = []
    for name, run in runs.items():
        other = evaluate(run, qrels, [measure]).per_query[measure]
        a = np.array([base[q] for q in qids])
        b = np.array([other[q] for q in qids])
        p = 1.0 if np.allclose(a, b) else float(stats.ttest_rel(b, a).pvalue)
        rows.append((name, float(b.mean()), float(a.mean()), p))
    adjusted = holm([r[3] for r in rows])
    return [Comparison(n, m, bm, p, ph) for (n, m, bm, p), ph in zip(rows, adjusted, strict=True)]
