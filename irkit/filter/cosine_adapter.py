"""Cosine Adapter relevance filtering: calibrated scores and one global threshold (Rossi et al., CIKM 2024).

A retriever's raw scores are not comparable across queries (a cosine of 0.6 is a strong match
for one query and a weak one for another), so neither top-K nor one raw threshold removes
irrelevant results reliably. The Cosine Adapter maps each raw score ``s`` of query ``q``
through a query-dependent monotone function into a probability of relevance, then keeps the
results whose probability is at least one global threshold ``tau``:

    u = max((s - lo) / scale, 0)                    # fixed per artifact: [-1, 1] -> [0, 1] for cosine
    m(q, d) = sigmoid(sum_k a_k(q) * (T_k(u) - mu_k) / sd_k + b(q))

with slopes ``a_k(q) = softplus(.) + 1e-3 > 0`` and increasing terms ``T_k``, so the map is
increasing in ``s`` and never reorders a query's list. The family fixes the terms: ``linear``
``[u]``, ``sqrt`` ``[sqrt(u)]``, ``quadratic`` ``[u, u^2]``, ``power`` the Box-Cox-like
``(u^p(q) - mu^p(q)) / (p(q) mu^(p(q)-1))`` with ``p(q) = 5^tanh(.)`` in [1/5, 5] (equal to ``u - mu``
at first order, so ``p`` bends the curve without moving it). ``mu_k``/``sd_k`` standardise each
term over the training pairs (preconditioning only; fixed and stored). A two-layer network
reads the *frozen* query embedding of the retriever's own query encoder
(:class:`irkit.models.encoder.BiEncoder`; for BM25, ``minilm``), by default together with five
statistics of the query's raw score list (an extension; ``features="query"`` is the paper's
input), and outputs ``a(q)``, ``b(q)``
(and ``p(q)``); it is trained with binary cross-entropy on the (query, retrieved document)
pairs of the retriever's top-k: positives from qrels, negatives the retrieved non-relevant
documents, i.e. the distribution it filters at deployment. The mapping runs in float64 at
inference, so distinct raw scores keep distinct probabilities unless the sigmoid saturates.

Known from the paper (abstract and public summaries; the full text was not reachable):
query-dependent mapping from a network on the query embedding, families linear, square
root, quadratic and power, one global threshold, PR-AUC and P@R95 as offline measures. The
forms above, the loss, the network and the threshold rule are this module's reading.

The artifact (a directory) holds ``cosine_adapter.safetensors`` and ``cosine_filter.json``
(family, ``tau`` and the rule that chose it, score domain, encoder, training data, and the
retriever's identity read from its index manifest). The filter knows which retriever produced
a ranking from the ranking's DocStore: an irkit index keeps ``docstore.sqlite`` next to its
``manifest.json``, whose type, model, corpus fingerprint, etc. must match the artifact's
(``match="model"`` relaxes this to the same scoring function on any corpus, for transfer).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from irkit.data.types import Qrels, Ranking
from irkit.errors import IrkitError
from irkit.pipeline.stage import INPUT_SCORE, Filter, StageInput

if TYPE_CHECKING:
    import torch

FAMILIES = ("linear", "sqrt", "quadratic", "power")
#: number of standardised terms T_k of each family (one slope each)
TERMS = {"linear": 1, "sqrt": 1, "quadratic": 2, "power": 1}
CONFIG_NAME = "cosine_filter.json"
WEIGHTS_NAME = "cosine_adapter.safetensors"
FORMAT = 1
MATCH = ("index", "model")
#: manifest fields that name the scoring function (``match="model"``) and, with the corpus, the index
MODEL_KEYS = ("type", "model", "dimension", "metric", "normalized", "analyzer", "contents")
INDEX_KEYS = (*MODEL_KEYS, "factory", "doc_count", "corpus_sha256")
#: what the query network reads: the query embedding (the paper), or it plus statistics of the query's raw list
#: (the default: see eval/results/cosine_adapter.md)
FEATURES = ("query", "query+list")
LIST_STATS = ("max", "mean", "std", "median", "10th")
MIN_SLOPE = 1e-3
MAX_POWER = 5.0  # p in [1/5, 5]: beyond, u^p underflows and distinct scores would share a probability
_EPS = 1e-6  # keeps d/dp u^p finite at u = 0


# --- the retriever a ranking came from -------------------------------------------------------------------------


def retriever_identity(run: Ranking) -> dict[str, Any]:
    """Who scored ``run``: the manifest fields of the index its DocStore belongs to (plus the index path).

    Refuses a ranking without a DocStore, one whose DocStore is not inside an irkit index, and
    one a reranker has rescored (it carries the ``input_score`` column): the adapter reads
    first-stage scores.
    """
    from irkit.index.manifest import DOCSTORE, read_manifest

    if INPUT_SCORE in run.columns:
        raise IrkitError(
            "the cosine filter reads a retriever's raw scores, but this ranking was rescored by a reranker; "
            "put the filter directly after the retriever"
        )
    if run.docstore is None:
        raise IrkitError(
            "the cosine filter must know the retriever: the ranking carries no docstore "
            "(filter the output of an irkit Dense or BM25 retriever)"
        )
    path = Path(run.docstore.path)
    if path.name != DOCSTORE or not (path.parent / "manifest.json").is_file():
        raise IrkitError(
            "the cosine filter must know the retriever, but the ranking's docstore is not inside an irkit index",
            path=path,
        )
    manifest = read_manifest(path.parent)
    return {"index": str(path.parent), **{k: manifest[k] for k in INDEX_KEYS if k in manifest}}


def check_identity(expected: dict[str, Any], found: dict[str, Any], match: str, where: str | None) -> None:
    """Refuse a retriever other than the one the adapter was trained behind, naming the first difference."""
    keys = MODEL_KEYS if match == "model" else INDEX_KEYS
    for k in keys:
        if expected.get(k) != found.get(k):
            raise IrkitError(
                f"this cosine filter was trained behind the retriever of index {expected.get('index')!r} "
                f"({k}={expected.get(k)!r}), but the ranking comes from index {found.get('index')!r} "
                f"({k}={found.get(k)!r}); train one for this retriever"
                + ("" if match == "model" else ", or pass match='model' to apply it to another corpus"),
                path=where,
            )


def score_domain(identity: dict[str, Any], scores: Sequence[np.ndarray]) -> dict[str, float]:
    """``{lo, scale}`` of ``u = (s - lo) / scale``: cosine [-1, 1] for normalised dense indexes.

    Other scores (BM25) span ``[min(0, smallest), largest]`` of the training scores.
    """
    if identity.get("type") == "dense" and identity.get("normalized", True):
        return {"lo": -1.0, "scale": 2.0}
    flat = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores]) if scores else np.zeros(1)
    lo = min(0.0, float(flat.min()))
    return {"lo": lo, "scale": max(float(flat.max()) - lo, 1e-12)}


def to_unit(scores: np.ndarray, domain: dict[str, float]) -> np.ndarray:
    """``u = max((s - lo) / scale, 0)`` in float64 (order-preserving; the families need ``u >= 0``)."""
    return np.maximum((np.asarray(scores, dtype=np.float64) - domain["lo"]) / domain["scale"], 0.0)


# --- the mapping and the network -----------------------------------------------------------------------------


def n_params(family: str) -> int:
    """Outputs of the network for ``family``: one slope per term, the offset, and the exponent for ``power``."""
    if family not in FAMILIES:
        raise IrkitError(f"unknown mapping family {family!r}; choose one of {', '.join(FAMILIES)}")
    return TERMS[family] + 1 + (family == "power")


def terms(family: str, u: torch.Tensor) -> list[torch.Tensor]:
    """The increasing terms ``T_k(u)`` of ``family`` for ``u >= 0`` (``power`` at p = 1; see :func:`map_logits`)."""
    if family == "sqrt":
        return [u.sqrt()]
    if family == "quadratic":
        return [u, u * u]
    return [u]


def map_logits(
    family: str, raw: torch.Tensor, u: torch.Tensor, standard: Sequence[tuple[float, float]], prior: float
) -> torch.Tensor:
    """Logits ``sum_k a_k (T_k(u) - mu_k) / sd_k + b`` for raw network outputs ``raw`` (B, n) and scores ``u`` (B, L).

    Works in the dtype of ``u`` (float64 at inference, so nearby raw scores keep distinct probabilities).
    """
    import torch
    import torch.nn.functional as F

    raw = raw.to(u.dtype)
    k = TERMS[family]
    slopes = F.softplus(raw[:, :k]) + MIN_SLOPE
    offset = raw[:, k : k + 1] + prior
    if family == "power":  # p = 1 at raw 0; centred at mu with unit slope there, so p only bends the curve
        p = MAX_POWER ** torch.tanh(raw[:, k + 1 : k + 2])
        ((mu, sd),) = standard
        t = ((u + _EPS) ** p - mu**p) / (p * mu ** (p - 1))
        return offset + slopes * t / sd
    z = offset.expand_as(u).clone()
    for i, (t, (mu, sd)) in enumerate(zip(terms(family, u), standard, strict=True)):
        z = z + slopes[:, i : i + 1] * (t - mu) / sd
    return z


def _net(dim: int, family: str, hidden: int) -> torch.nn.Module:
    """The query network: embedding -> hidden -> raw mapping parameters, starting near zero (the prior)."""
    import torch
    from torch import nn

    net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, n_params(family)))
    with torch.no_grad():
        net[2].weight.mul_(0.01)
        net[2].bias.zero_()
    return net


def _standardisation(family: str, u: np.ndarray) -> list[tuple[float, float]]:
    """Mean and std of each term over the training pairs (``power`` at p = 1)."""
    import torch

    t = torch.as_tensor(u, dtype=torch.float64)
    return [(max(float(x.mean()), _EPS), max(float(x.std()), 1e-6)) for x in terms(family, t)]


def list_stats(u: Sequence[np.ndarray], depth: int) -> np.ndarray:
    """``(Q, 5)``: max, mean, std, median and 10th best of each query's first ``depth`` scores (zeros if empty)."""
    out = np.zeros((len(u), len(LIST_STATS)))
    for i, x in enumerate(u):
        x = np.asarray(x[:depth], dtype=np.float64)
        if len(x):
            out[i] = (x.max(), x.mean(), x.std(), np.median(x), np.sort(x)[::-1][min(9, len(x) - 1)])
    return out


def network_inputs(embeddings: np.ndarray, u: Sequence[np.ndarray], spec: dict[str, Any]) -> np.ndarray:
    """What the network reads: the query embedding, plus standardised list statistics for ``query+list``."""
    if spec["features"] == "query":
        return np.asarray(embeddings, dtype=np.float32)
    stats = (list_stats(u, int(spec["depth"])) - np.asarray(spec["mean"])) / np.asarray(spec["std"])
    return np.hstack([embeddings, stats]).astype(np.float32)


def input_spec(features: str, u: Sequence[np.ndarray], depth: int) -> dict[str, Any]:
    """The recipe of :func:`network_inputs`, standardised on the training queries' lists ``u``."""
    if features not in FEATURES:
        raise IrkitError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
    spec: dict[str, Any] = {"features": features, "depth": depth}
    if features == "query+list":
        stats = list_stats(u, depth)
        spec["mean"] = stats.mean(0).tolist()
        spec["std"] = np.maximum(stats.std(0), 1e-6).tolist()
    return spec


@dataclass
class FitConfig:
    """Training settings of one adapter (saved in the artifact)."""

    hidden: int = 64
    epochs: int = 60
    batch_size: int = 32  # queries per step
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 8  # epochs without a better dev loss before stopping
    seed: int = 13


@dataclass
class Pairs:
    """Padded (query, retrieved document) pairs: network inputs (Q, D), scores u (Q, L), labels and mask (Q, L)."""

    inputs: np.ndarray
    u: np.ndarray
    labels: np.ndarray
    mask: np.ndarray

    @classmethod
    def build(cls, inputs: np.ndarray, u: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None = None) -> Pairs:
        width = max((len(x) for x in u), default=0)
        uu = np.zeros((len(u), max(width, 1)))
        yy = np.zeros_like(uu)
        mm = np.zeros_like(uu, dtype=bool)
        for i, x in enumerate(u):
            uu[i, : len(x)] = x
            mm[i, : len(x)] = True
            if labels is not None:
                yy[i, : len(x)] = labels[i]
        return cls(np.asarray(inputs, dtype=np.float32), uu, yy, mm)

    def rows(self, idx: np.ndarray) -> Pairs:
        return Pairs(self.inputs[idx], self.u[idx], self.labels[idx], self.mask[idx])

    def pooled(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values, labels)`` of the real (unpadded) pairs."""
        return values[self.mask], self.labels[self.mask].astype(bool)


@dataclass
class Fitted:
    """A trained network with what its mapping needs."""

    family: str
    net: Any
    standard: list[tuple[float, float]]
    prior: float
    history: list[dict[str, float]]

    def probabilities(self, inputs: np.ndarray, u: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Calibrated probabilities for each query's scores (float64, same order)."""
        import torch

        if not len(u):
            return []
        pairs = Pairs.build(inputs, u)
        with torch.inference_mode():
            self.net.eval()
            raw = self.net(torch.from_numpy(pairs.inputs))
            z = map_logits(self.family, raw, torch.from_numpy(pairs.u), self.standard, self.prior)
            probs = torch.sigmoid(z).numpy()
        return [probs[i, : len(x)].copy() for i, x in enumerate(u)]


def fit(
    family: str,
    train: Pairs,
    dev: Pairs | None = None,
    config: FitConfig | None = None,
    log_path: str | Path | None = None,
    show_progress: bool = False,
) -> Fitted:
    """Train the query network of ``family`` with BCE on ``train``; keep the epoch of lowest dev loss.

    Only the network's parameters are optimised: the query embeddings are inputs (the encoder is
    frozen and never part of the graph). Seeded; one jsonl line per epoch goes to ``log_path``.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from irkit.evaluation import pr_auc
    from irkit.tune.trainer import set_seed

    cfg = config or FitConfig()
    n_params(family)
    pos, n = train.labels[train.mask].sum(), train.mask.sum()
    if pos == 0 or pos == n:
        raise IrkitError(f"training pairs need both relevant and non-relevant documents ({int(pos)} of {int(n)})")
    set_seed(cfg.seed)
    rate = float(pos / n)
    fitted = Fitted(
        family,
        _net(train.inputs.shape[1], family, cfg.hidden),
        _standardisation(family, train.u[train.mask]),
        math.log(rate / (1 - rate)),
        [],
    )
    net = fitted.net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)

    def loss_of(batch: Pairs) -> torch.Tensor:
        raw = net(torch.from_numpy(batch.inputs))
        z = map_logits(family, raw, torch.from_numpy(batch.u).float(), fitted.standard, fitted.prior)
        mask = torch.from_numpy(batch.mask)
        return F.binary_cross_entropy_with_logits(z[mask], torch.from_numpy(batch.labels).float()[mask])

    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
    best = (math.inf, {k: v.clone() for k, v in net.state_dict().items()})
    bad = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small run fastest on one thread (several spin on a busy machine)
    try:
        for epoch in tqdm(range(1, cfg.epochs + 1), desc=f"cosine adapter ({family})", disable=not show_progress):
            net.train()
            order = torch.randperm(len(train.inputs), generator=gen).numpy()
            losses = []
            for i in range(0, len(order), cfg.batch_size):
                loss = loss_of(train.rows(order[i : i + cfg.batch_size]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            record = {"family": family, "epoch": epoch, "train_loss": float(np.mean(losses))}
            net.eval()
            if dev is not None:
                with torch.inference_mode():
                    record["dev_loss"] = float(loss_of(dev))
                probs = fitted.probabilities(dev.inputs, [r[m] for r, m in zip(dev.u, dev.mask, strict=True)])
                record["dev_pr_auc"] = pr_auc(np.concatenate(probs), dev.labels[dev.mask].astype(bool))
            fitted.history.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            score = record.get("dev_loss", record["train_loss"])
            if score < best[0] - 1e-6:
                best, bad = (score, {k: v.clone() for k, v in net.state_dict().items()}), 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
    finally:
        torch.set_num_threads(threads)
        if log is not None:
            log.close()
    net.load_state_dict(best[1])
    net.eval()
    return fitted


# --- the stage ----------------------------------------------------------------------------------------------


class CosineFilter(Filter):
    """Keep the results whose calibrated probability is >= ``tau``; the probabilities become the scores.

    ``dense % 100 >> CosineFilter.load("filters/scifact-minilm")``; YAML
    ``{cosine_filter: {path: filters/scifact-minilm}}``. ``tau`` overrides the artifact's
    threshold; ``match="model"`` accepts a ranking of another index scored by the same model
    (to study transfer), ``"index"`` (default) only the index the adapter was trained behind.
    """

    name: ClassVar[str] = "cosine_filter"

    def __init__(self, path: str | Path, tau: float | None = None, match: str = "index", batch_size: int = 64) -> None:
        cfg, fitted = _read(path)
        self._setup(cfg, fitted, path, tau, match, batch_size)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> CosineFilter:
        """The filter saved at ``path`` (see ``__init__`` for the options)."""
        return cls(path, **kwargs)

    def _setup(
        self,
        cfg: dict[str, Any],
        fitted: Fitted,
        path: str | Path | None,
        tau: float | None,
        match: str,
        bs: int,
        encoder: Any = None,
    ) -> None:
        from irkit.models.encoder import BiEncoder

        if match not in MATCH:
            raise IrkitError(f"match must be one of {', '.join(MATCH)}, got {match!r}")
        if tau is not None and not (isinstance(tau, int | float) and 0 <= tau <= 1):
            raise IrkitError(f"tau is a probability in [0, 1], got {tau!r}")
        if bs < 1:
            raise IrkitError(f"batch_size must be >= 1, got {bs}")
        self.config, self.fitted = cfg, fitted
        self.path = None if path is None else str(path)
        self._tau, self.match, self.batch_size = tau, match, int(bs)
        self.encoder = encoder or BiEncoder(cfg["encoder"]["model"], max_length=int(cfg["encoder"]["max_length"]))

    @property
    def tau(self) -> float:
        return float(self.config["tau"] if self._tau is None else self._tau)

    @property
    def family(self) -> str:
        return str(self.config["family"])

    def params(self) -> dict[str, Any]:
        if self.path is None:
            raise IrkitError("this cosine filter lives only in memory; save(path) it first")
        p: dict[str, Any] = {"path": self.path}
        if self._tau is not None:
            p["tau"] = self._tau
        if self.match != "index":
            p["match"] = self.match
        if self.batch_size != 64:
            p["batch_size"] = self.batch_size
        return p

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "in memory"
        return f"CosineFilter({where!r}, family={self.family}, tau={self.tau:.4g})"

    def check_retriever(self, run: Ranking) -> None:
        """Refuse a ranking from another retriever than the one this adapter was trained behind."""
        check_identity(self.config["retriever"], retriever_identity(run), self.match, self.path)

    def probabilities(self, queries: Sequence[str], scores: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Calibrated probabilities of raw ``scores`` (one array per query text), order unchanged."""
        u = [to_unit(s, self.config["domain"]) for s in scores]
        emb = self.encoder.encode_queries(list(queries), batch_size=self.batch_size)
        return self.fitted.probabilities(network_inputs(emb, u, self.config["inputs"]), u)

    def calibrate(self, run: Ranking) -> Ranking:
        """``run`` with every score replaced by its probability, nothing removed."""
        self.check_retriever(run)
        qids = list(run)
        texts = run.queries
        if texts is None:
            raise IrkitError(f"{self!r} needs query texts, but the ranking carries none")
        probs = self.probabilities([texts[q] for q in qids], [run[q][1] for q in qids])
        out = run.cut({})
        out.results = {q: (run[q][0], p) for q, p in zip(qids, probs, strict=True)}
        return out

    def keep_batch(self, items: Sequence[tuple[str, list[str], np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        probs = self.probabilities([q for q, _, _ in items], [s for _, _, s in items])
        return [(p >= self.tau, p) for p in probs]

    def transform(self, inp: StageInput) -> Ranking:
        self.check_input(inp)
        assert isinstance(inp, Ranking)
        self.check_retriever(inp)
        return super().transform(inp)

    def save(self, out: str | Path) -> Path:
        """Write the artifact directory (weights + JSON) atomically; this filter then rebuilds from ``out``."""
        from safetensors.torch import save_file

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            state = {k: v.detach().contiguous() for k, v in self.fitted.net.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": str(FORMAT)})
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
            tmp.chmod(0o755)
            for f in tmp.iterdir():
                f.chmod(0o644)
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.path = str(out)
        return out


def _read(path: str | Path) -> tuple[dict[str, Any], Fitted]:
    """The validated config and the network of an artifact directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from irkit.data.io import read_json_object

    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file():
        raise IrkitError(f"not a cosine filter directory (no {CONFIG_NAME})", path=path)
    cfg = read_json_object(cfg_path, "cosine filter config")
    fields = (("format", int), ("family", str), ("tau", float), ("domain", dict), ("standard", list))
    fields += (("prior", float), ("inputs", dict), ("encoder", dict), ("retriever", dict), ("fit", dict))
    for key, typ in fields:
        if not isinstance(cfg.get(key), typ) or isinstance(cfg.get(key), bool):
            raise IrkitError(f"field {key!r} missing or not a {typ.__name__}", path=cfg_path)
    if cfg["format"] != FORMAT:
        raise IrkitError(f"unsupported cosine filter format {cfg['format']} (this irkit reads {FORMAT})", path=cfg_path)
    if cfg["family"] not in FAMILIES:
        raise IrkitError(f"unknown mapping family {cfg['family']!r}", path=cfg_path)
    if len(cfg["standard"]) != TERMS[cfg["family"]]:
        raise IrkitError(f"'standard' needs {TERMS[cfg['family']]} (mean, std) pairs", path=cfg_path)
    try:
        state = load_file(str(Path(path) / WEIGHTS_NAME))
    except (SafetensorError, FileNotFoundError, OSError) as e:
        raise IrkitError(f"cannot read the adapter weights ({e})", path=Path(path) / WEIGHTS_NAME) from None
    if cfg["inputs"].get("features") not in FEATURES:
        raise IrkitError(f"unknown inputs.features {cfg['inputs'].get('features')!r}", path=cfg_path)
    dim = int(cfg["encoder"]["dim"]) + (len(LIST_STATS) if cfg["inputs"]["features"] == "query+list" else 0)
    net = _net(dim, cfg["family"], int(cfg["fit"]["hidden"]))
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise IrkitError(f"weights do not match the config (expected {expected}, found {found})", path=path)
    net.load_state_dict(state)
    net.eval()
    standard = [(float(m), float(s)) for m, s in cfg["standard"]]
    return cfg, Fitted(cfg["family"], net, standard, float(cfg["prior"]), [])


# --- training behind a retriever --------------------------------------------------------------------------------


@dataclass
class TrainingSet:
    """A retriever's ranking of training queries turned into labelled pairs, split into train and dev.

    Built once (encoding the queries is its cost) and reused to train every family.
    """

    identity: dict[str, Any]
    domain: dict[str, float]
    inputs: dict[str, Any]
    encoder: Any
    train: Pairs
    dev: Pairs
    facts: dict[str, Any]


def training_set(
    run: Ranking,
    qrels: Qrels,
    features: str = "query+list",
    encoder: str | None = None,
    dev_fraction: float = 0.2,
    rel: int = 1,
    seed: int = 13,
) -> TrainingSet:
    """Label the (query, retrieved document) pairs of ``run`` with ``qrels`` and carve a seeded dev slice.

    ``run`` is the retriever's top-k for the training queries, from an irkit index (so the
    retriever is known); a pair is positive when its grade is >= ``rel``. ``dev_fraction`` of
    the judged queries form the dev slice (``irkit.tune.split_dev``). ``features="query+list"``
    (the default; an irkit extension, not in the paper) also feeds the network statistics of the
    query's raw list (max, mean, std, median, 10th best); ``"query"`` is the paper's query
    embedding alone. The default is the variant that beat every baseline in
    eval/results/cosine_adapter.md (the query embedding alone did not). The mapping stays
    monotone per query either way. ``encoder`` is the frozen query encoder (default: the dense index's own model, else
    ``minilm``).
    """
    from irkit.models.encoder import BiEncoder
    from irkit.tune.trainer import split_dev

    identity = retriever_identity(run)
    texts = run.queries
    if texts is None:
        raise IrkitError("training needs the query texts: the ranking carries none")
    judged = [q for q in run if q in qrels]
    if len(judged) < 2:
        raise IrkitError(f"need at least 2 judged queries in the ranking, got {len(judged)}")
    train_q, dev_q = split_dev(judged, dev_fraction, seed)
    domain = score_domain(identity, [run[q][1] for q in train_q])
    depth = int(max(len(run[q][0]) for q in judged))
    spec = input_spec(features, [to_unit(run[q][1], domain) for q in train_q], depth)
    model = encoder or (identity.get("model") if identity.get("type") == "dense" else None) or "minilm"
    max_length = 256
    if identity.get("type") == "dense" and model == identity.get("model"):
        from irkit.index.manifest import read_manifest

        max_length = int(read_manifest(identity["index"])["build"].get("max_length", 256))
    bi = BiEncoder(model, max_length=max_length)

    def pairs(qids: list[str]) -> Pairs:
        emb = bi.encode_queries([texts[q] for q in qids], batch_size=64)
        u = [to_unit(run[q][1], domain) for q in qids]
        labels = [np.array([qrels.judgments[q].get(d, 0) >= rel for d in run[q][0]], dtype=float) for q in qids]
        return Pairs.build(network_inputs(emb, u, spec), u, labels)

    tr, dv = pairs(train_q), pairs(dev_q)
    if not dv.labels[dv.mask].any():
        raise IrkitError("no relevant document among the dev slice's retrieved pairs; raise dev_fraction or the depth")
    facts = {
        "rel": rel,
        "depth": depth,
        "dev_fraction": dev_fraction,
        "split_seed": seed,
        "train_queries": len(train_q),
        "dev_queries": len(dev_q),
        "train_pairs": int(tr.mask.sum()),
        "train_positives": int(tr.labels[tr.mask].sum()),
        "dev_pairs": int(dv.mask.sum()),
        "dev_positives": int(dv.labels[dv.mask].sum()),
    }
    return TrainingSet(identity, domain, spec, bi, tr, dv, facts)


def train(
    data: TrainingSet,
    family: str = "auto",
    rule: str = "recall",
    target: float = 0.95,
    config: FitConfig | None = None,
    log_path: str | Path | None = None,
    describe: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> CosineFilter:
    """Train a cosine filter on a :func:`training_set`; returns it in memory (``save`` it).

    The dev slice picks the epoch, the family (``"auto"``: every family, the best dev PR-AUC)
    and ``tau`` by ``rule``: ``recall`` (largest tau with dev recall >= ``target``),
    ``precision`` (most recall with dev precision >= ``target``) or ``f1``. ``describe``
    (e.g. the dataset and split) is recorded in the artifact with the training facts.
    """
    from irkit.evaluation import choose_threshold, pr_auc, precision_at_recall

    cfg = config or FitConfig()
    families = FAMILIES if family == "auto" else (family,)
    for f in families:
        n_params(f)
    dv = data.dev
    results: dict[str, tuple[Fitted, np.ndarray]] = {}
    for f in families:
        fitted = fit(f, data.train, dv, cfg, log_path, show_progress)
        results[f] = (fitted, _padded(fitted, dv))
    dev_stats = {
        f: {"pr_auc": pr_auc(*dv.pooled(p)), "p_at_r95": precision_at_recall(*dv.pooled(p), 0.95)}
        for f, (_, p) in results.items()
    }
    best = max(dev_stats, key=lambda f: dev_stats[f]["pr_auc"])
    fitted, probs = results[best]
    tau = choose_threshold(*dv.pooled(probs), rule, target)
    config_json = {
        "format": FORMAT,
        "family": best,
        "tau": tau,
        "threshold": {"rule": rule, "target": target},
        "domain": data.domain,
        "inputs": data.inputs,
        "standard": [list(x) for x in fitted.standard],
        "prior": fitted.prior,
        "encoder": {"model": data.encoder.name, "max_length": data.encoder.max_length, "dim": data.encoder.dim},
        "retriever": data.identity,
        "fit": asdict(cfg),
        "training": {**(describe or {}), **data.facts},
        "dev": dev_stats,
    }
    out = CosineFilter.__new__(CosineFilter)
    out._setup(config_json, fitted, None, None, "index", 64, data.encoder)
    return out


def _padded(fitted: Fitted, pairs: Pairs) -> np.ndarray:
    """Probabilities of every padded pair slot of ``pairs`` (mask them with ``pairs.pooled``)."""
    rows = fitted.probabilities(pairs.inputs, list(pairs.u))
    return np.stack(rows)
