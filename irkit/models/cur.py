"""CUR approximation of a cross-encoder's score matrix: ANNCUR and its adaptive multi-round variant.

The index holds ``R`` (k_q × N): exact cross-encoder scores of k_q anchor queries against
all N items. A new query is scored exactly against a few items ``S`` only; its scores for
every item are then approximated as ``s_S @ pinv(R[:, S]) @ R`` (a CUR decomposition whose
columns are the query's own scores). ANNCUR (Yadav et al., EMNLP 2022) fixes ``S`` to k_i
items sampled once, so ``E = pinv(R[:, S]) @ R`` is precomputed and search is one product
``s_S @ E``; the adaptive variant (Yadav et al., Findings of EMNLP 2023) grows ``S`` per
query over several rounds with the items the current approximation ranks highest.

Every function here takes a *scorer*: called with one array of item rows per query, it
returns their exact scores. The retriever's scorer runs the cross-encoder; the evaluation's
scorer reads a cached exact score matrix, so both run this code unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from irkit.errors import IrkitError

#: Singular values below ``RCOND`` × the largest are treated as zero in every pseudo-inverse: above
#: float32 rounding of the stored scores, so duplicate or near-duplicate anchors add no noise.
RCOND = 1e-5

#: ``scorer(rows)``: exact scores of query ``j`` against items ``rows[j]``, for every query ``j``.
Scorer = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]

#: Per query: the item rows scored exactly and their exact scores (anchors first).
Pool = tuple[np.ndarray, np.ndarray]


def sample_items(n_items: int, k: int, seed: int) -> np.ndarray:
    """``k`` distinct rows of ``n_items`` drawn uniformly with a seeded generator, sorted (anchor items or queries)."""
    if not 1 <= k <= n_items:
        raise IrkitError(f"cannot draw {k} anchors from {n_items} (need 1 <= k <= {n_items})")
    return np.sort(np.random.default_rng(seed).choice(n_items, size=k, replace=False))


def matrix_scorer(exact: np.ndarray) -> Scorer:
    """A scorer reading a cached exact score matrix (queries × items): the search simulated without the model."""
    return lambda rows: [exact[j, r] for j, r in enumerate(rows)]


def pinv(a: np.ndarray, rcond: float = RCOND) -> np.ndarray:
    """Pseudo-inverse in float64 through the SVD, dropping singular values below ``rcond`` × the largest.

    Duplicate or linearly dependent anchors (rank-deficient ``a``) give a finite, minimum-norm
    inverse instead of huge entries; an all-zero ``a`` gives zeros. Never returns NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise IrkitError("the score matrix holds NaN or infinite values; rebuild the index")
    if rcond <= 0 or rcond >= 1:
        raise IrkitError(f"rcond must be in (0, 1), got {rcond}")
    try:
        return np.linalg.pinv(a, rcond=rcond)
    except np.linalg.LinAlgError as e:  # SVD did not converge
        raise IrkitError(f"pseudo-inverse of a {a.shape[0]}x{a.shape[1]} anchor block failed ({e})") from None


def item_embeddings(scores: np.ndarray, anchors: np.ndarray, rcond: float = RCOND) -> np.ndarray:
    """``E = pinv(R[:, anchors]) @ R`` (k_i × N, float32): the items in the space of anchor-item scores."""
    r = np.asarray(scores, dtype=np.float64)
    return (pinv(r[:, anchors], rcond) @ r).astype(np.float32)


def top_rows(values: np.ndarray, m: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """The ``m`` rows with the highest ``values`` (ties: lower row first), skipping the rows in ``exclude``."""
    keep = np.ones(len(values), dtype=bool)
    if exclude is not None:
        keep[exclude] = False
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
    return order[keep[order]][: max(m, 0)].astype(np.int64)


def anncur(scorer: Scorer, n_queries: int, embeddings: np.ndarray, anchors: np.ndarray, k_r: int) -> list[Pool]:
    """ANNCUR search: ``k_i`` exact scores against the anchor items, then ``k_r`` on the best approximated others.

    Exactly ``len(anchors) + min(k_r, N - k_i)`` scorer calls per query: the ``k_r`` items are
    the top of ``s_anchors @ E`` among the non-anchor items, and the anchor items keep their
    exact scores in the pool at no further cost.
    """
    anchors = np.asarray(anchors, dtype=np.int64)
    if n_queries == 0:
        return []
    exact = np.stack([np.asarray(s, dtype=np.float64) for s in scorer([anchors] * n_queries)])
    approx = exact @ np.asarray(embeddings, dtype=np.float64)
    picked = [top_rows(approx[j], k_r, anchors) for j in range(n_queries)]
    rescored = scorer(picked)
    return [
        (np.concatenate([anchors, picked[j]]), np.concatenate([exact[j], np.asarray(rescored[j], dtype=np.float64)]))
        for j in range(n_queries)
    ]


def round_sizes(budget: int, rounds: int) -> list[int]:
    """``budget`` split into ``rounds`` near-equal parts (the first ones one larger when it does not divide)."""
    if rounds < 1 or budget < rounds:
        raise IrkitError(f"adaptive search needs 1 <= rounds <= budget, got {rounds} rounds for budget {budget}")
    base, extra = divmod(budget, rounds)
    return [base + (i < extra) for i in range(rounds)]


def adaptive(
    scorer: Scorer,
    n_queries: int,
    scores: np.ndarray,
    budget: int,
    rounds: int,
    seed: int,
    rcond: float = RCOND,
) -> list[Pool]:
    """Adaptive multi-round CUR search with ``budget`` scorer calls per query.

    Round 1 scores ``budget / rounds`` items sampled with ``seed`` (the same for every query);
    each later round approximates all items from the anchors scored so far,
    ``s_S @ pinv(R[:, S]) @ R``, and scores the best approximated items not yet scored. The
    pool is everything scored: exactly ``min(budget, N)`` items per query.
    """
    r = np.asarray(scores, dtype=np.float64)
    sizes = round_sizes(min(budget, r.shape[1]), rounds)
    if n_queries == 0:
        return []
    rows = [sample_items(r.shape[1], sizes[0], seed)] * n_queries
    got = [np.asarray(s, dtype=np.float64) for s in scorer(rows)]
    for m in sizes[1:]:
        picked = []
        for j in range(n_queries):
            weights = got[j] @ pinv(r[:, rows[j]], rcond)  # 1 × k_q: the query as a mix of anchor queries
            picked.append(top_rows(weights @ r, m, rows[j]))
        new = scorer(picked)
        rows = [np.concatenate([rows[j], picked[j]]) for j in range(n_queries)]
        got = [np.concatenate([got[j], np.asarray(new[j], dtype=np.float64)]) for j in range(n_queries)]
    return list(zip(rows, got, strict=True))
