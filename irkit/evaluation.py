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

    def per_query(run: Ranking) -> dict[str, float]:
        return evaluate(run, qrels, [measure]).per_query[measure]

    return compare_per_query(per_query(baseline), {name: per_query(run) for name, run in runs.items()})


def compare_per_query(base: Mapping[str, float], others: Mapping[str, Mapping[str, float]]) -> list[Comparison]:
    """:func:`compare` over per-query values already computed (qid -> value; every system has the baseline's qids)."""
    from scipy import stats

    qids = sorted(base)
    a = np.array([base[q] for q in qids])
    rows = []
    for name, other in others.items():
        b = np.array([other[q] for q in qids])
        p = 1.0 if np.allclose(a, b) else float(stats.ttest_rel(b, a).pvalue)
        rows.append((name, float(b.mean()), float(a.mean()), p))
    adjusted = holm([r[3] for r in rows])
    return [Comparison(n, m, bm, p, ph) for (n, m, bm, p), ph in zip(rows, adjusted, strict=True)]


# --- set-based evaluation of filtered rankings (retained sets, pooled pairs) -----------------------------------


@dataclass
class SetResult:
    """Precision, recall and F1 of the retained sets (ir-measures ``SetP``/``SetR``/``SetF``, query means) and sizes.

    ``kept`` is the number of results each judged query kept (0 for a query that kept none),
    ``zero`` how many judged queries were left with no result.
    """

    precision: float
    recall: float
    f1: float
    kept: dict[str, int]

    @property
    def kept_mean(self) -> float:
        return float(np.mean(list(self.kept.values()))) if self.kept else 0.0

    @property
    def zero(self) -> int:
        return sum(1 for n in self.kept.values() if n == 0)

    def kept_quantiles(self, qs: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)) -> dict[float, float]:
        """The distribution of results kept per query."""
        sizes = np.array(list(self.kept.values()), dtype=np.float64)
        return {q: float(np.quantile(sizes, q)) if len(sizes) else 0.0 for q in qs}


def set_measures(run: Ranking, qrels: Qrels, rel: int = 1) -> SetResult:
    """Set precision, recall and F1 of each judged query's retained list (relevant: grade >= ``rel``).

    A query with an empty list (or absent from the run) scores 0 on all three, as trec_eval's
    ``-c`` does for missing queries: a filter that drops everything is not rewarded.
    """
    names = [f"SetP(rel={rel})", f"SetR(rel={rel})", f"SetF(rel={rel})"]
    result = evaluate(run, qrels, names)
    kept = {q: len(run.results[q][0]) if q in run else 0 for q in result.per_query[names[0]]}
    return SetResult(result[names[0]], result[names[1]], result[names[2]], kept)


def pooled_pairs(run: Ranking, qrels: Qrels, rel: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)`` of every (query, retrieved document) pair of the judged queries; label 1 if grade >= rel."""
    scores, labels = [], []
    for q, (docids, s) in run.items():
        if q not in qrels:
            continue
        judged = qrels.judgments[q]
        scores.append(np.asarray(s, dtype=np.float64))
        labels.append(np.array([judged.get(d, 0) >= rel for d in docids], dtype=bool))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate(scores), np.concatenate(labels)


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` of keeping ``score >= t`` for every distinct score ``t``, highest first.

    Recall is relative to the positives among the pairs given (the pool a filter can keep from).
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise IrkitError(f"scores and labels must be 1-d arrays of one length, got {scores.shape} and {labels.shape}")
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise IrkitError("no relevant pair among the pairs: precision and recall are undefined")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # end of each group of tied scores
    tp = np.cumsum(y)[last]
    kept = last + 1
    return tp / kept, tp / n_pos, s[last]


def pr_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision–recall curve as average precision: ``sum_k (R_k - R_{k-1}) P_k``."""
    precision, recall, _ = pr_curve(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_recall(scores: np.ndarray, labels: np.ndarray, target: float = 0.95) -> float:
    """The best precision of any threshold that keeps at least ``target`` of the positives (P@R95 by default)."""
    precision, recall, _ = pr_curve(scores, labels)
    return float(precision[recall >= target - 1e-12].max())


THRESHOLD_RULES = ("recall", "precision", "f1")


def choose_threshold(scores: np.ndarray, labels: np.ndarray, rule: str = "recall", target: float = 0.95) -> float:
    """One global threshold ``t`` (keep ``score >= t``) chosen on labelled pairs.

    ``recall``: the largest ``t`` whose recall is >= ``target``; ``precision``: the smallest ``t``
    (most recall) whose precision is >= ``target``; ``f1``: the ``t`` of maximal F1.
    """
    if rule not in THRESHOLD_RULES:
        raise IrkitError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")
    if rule != "f1" and not 0 < target <= 1:
        raise IrkitError(f"the {rule} target must be in (0, 1], got {target}")
    precision, recall, thresholds = pr_curve(scores, labels)
    if rule == "recall":
        return float(thresholds[np.argmax(recall >= target - 1e-12)])
    if rule == "precision":
        ok = np.flatnonzero(precision >= target - 1e-12)
        if not len(ok):
            raise IrkitError(f"no threshold reaches precision {target} (best {precision.max():.3f})")
        return float(thresholds[ok[-1]])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[np.argmax(f1)])
