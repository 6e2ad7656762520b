"""QERM, GenCRF's query-evaluation reward model, at the scale this project can train and run.

The paper fine-tunes RoBERTa-Large (4 epochs) to predict, from a query's clustered
reformulations, whether retrieval with them will reach nDCG@10 >= τ; a reformulation set
whose logit is below ε (the mean first-round logit) is regenerated, at most M = 2 rounds.
Here the honest small-scale equivalent: an L2-regularised logistic regression on features
of the rewriter's own MiniLM embeddings — the original query's vector, the mean of the
cluster queries' vectors, and five numbers (cluster count / 3, mean, max and min cosine of
the cluster queries to the query, mean cosine between cluster queries). The L2 strength is
chosen by k-fold cross-validated log-loss on the training set, whose cross-validated AUC is
kept in ``info`` so the model's worth is on record. ε is the mean logit over the training
queries' first-round reformulations (fixed at training time, so a query's outcome never
depends on which other queries share its batch).

A trained model is one JSON file (``qerm.json`` in a directory): numbers only, nothing executable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irkit.errors import IrkitError

FILE = "qerm.json"
FORMAT = 1
L2_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def features(init: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """QERM's input for one reformulation set: ``[q_init, mean(cluster vectors), 5 statistics]``."""
    from irkit.reformulate.gencrf import cosine

    init = np.asarray(init, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=np.float64).reshape(-1, len(init))
    if len(clusters) == 0:
        return np.concatenate([init, np.zeros_like(init), np.zeros(5)])
    sims = cosine(init, clusters)
    unit = clusters / np.maximum(np.linalg.norm(clusters, axis=1, keepdims=True), 1e-12)
    pair = unit @ unit.T
    between = pair[np.triu_indices(len(unit), 1)].mean() if len(unit) > 1 else 1.0
    stats = [len(clusters) / 3, sims.mean(), sims.max(), sims.min(), between]
    return np.concatenate([init, clusters.mean(0), np.array(stats)])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), by the rank-sum formula."""
    from scipy.stats import rankdata

    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Weights and bias minimising mean log-loss + ``l2/2 · |w|²/n`` (L-BFGS)."""
    from scipy.optimize import minimize

    n, d = x.shape

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        z = x @ w + b
        p = 1.0 / (1.0 + np.exp(-z))
        value = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * (w @ w) / n
        grad = np.append(x.T @ (p - y) / n + l2 * w / n, np.mean(p - y))
        return float(value), grad

    res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B")
    return res.x[:d], float(res.x[d])


@dataclass
class QERM:
    """A trained reward model: ``logits(features)``; regenerate below ``threshold``."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray
    threshold: float
    encoder: str
    info: dict[str, Any] = field(default_factory=dict)

    features = staticmethod(features)

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != len(self.weights):
            raise IrkitError(f"QERM takes {len(self.weights)} features, got {x.shape[1]}")
        return ((x - self.mean) / self.std) @ self.weights + self.bias

    @classmethod
    def fit(cls, x: np.ndarray, labels: np.ndarray, encoder: str, folds: int = 5, seed: int = 0, **extra: Any) -> QERM:
        """Train on feature rows ``x`` and 0/1 ``labels``; L2 strength by ``folds``-fold cross-validation.

        ``extra`` (e.g. the label threshold τ, the training queries) is kept in ``info``.
        """
        x, y = np.asarray(x, dtype=np.float64), np.asarray(labels, dtype=np.float64)
        if len(x) != len(y) or set(np.unique(y).tolist()) != {0.0, 1.0}:
            raise IrkitError(
                f"QERM needs both labels among its {len(y)} training examples, got {sorted(set(y.tolist()))}"
            )
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 1e-8, std, 1.0)
        z = (x - mean) / std
        k = max(2, min(folds, int(y.sum()), int(len(y) - y.sum())))
        fold = np.random.default_rng(seed).permutation(len(y)) % k
        best = None
        for l2 in L2_GRID:
            held = np.zeros(len(y))
            for f in range(k):
                w, b = _fit_logistic(z[fold != f], y[fold != f], l2)
                held[fold == f] = z[fold == f] @ w + b
            logloss = float(np.mean(np.logaddexp(0.0, held) - y * held))
            if best is None or logloss < best[0]:
                best = (logloss, l2, auc(held, y))
        assert best is not None
        w, b = _fit_logistic(z, y, best[1])
        threshold = float(np.mean(z @ w + b))
        info = {"examples": len(y), "positives": int(y.sum()), "l2": best[1], "cv_folds": k}
        info |= {"cv_logloss": best[0], "cv_auc": best[2], **extra}
        return cls(w, b, mean, std, threshold, encoder, info)

    def save(self, path: str | Path) -> Path:
        """Write ``path/qerm.json`` atomically; returns the directory."""
        import json

        from irkit.data.io import atomic_path

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        body = {
            "format": FORMAT,
            "encoder": self.encoder,
            "threshold": self.threshold,
            "bias": self.bias,
            "weights": self.weights.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "info": self.info,
        }
        with atomic_path(out / FILE) as tmp:
            tmp.write_text(json.dumps(body), encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> QERM:
        from irkit.data.io import read_json_object

        file = Path(path) / FILE if Path(path).is_dir() else Path(path)
        body = read_json_object(file, "QERM model")
        try:
            model = cls(
                np.asarray(body["weights"], dtype=np.float64),
                float(body["bias"]),
                np.asarray(body["mean"], dtype=np.float64),
                np.asarray(body["std"], dtype=np.float64),
                float(body["threshold"]),
                str(body["encoder"]),
                dict(body.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IrkitError(f"not a QERM model ({type(e).__name__}: {e})", path=file) from None
        if not len(model.weights) == len(model.mean) == len(model.std):
            raise IrkitError("QERM weights, mean and std differ in length", path=file)
        return model
