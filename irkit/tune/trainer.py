"""One trainer for every tuning method, for bi-encoders and cross-encoders.

- bi-encoder: InfoNCE over cosine similarities / temperature; each query's candidates are its
  positive, its hard (BM25) negatives and every other document in the batch (in-batch negatives).
- cross-encoder: softmax cross-entropy over 1 positive + n negatives per query (listwise).

Model selection and early stopping use a caller-given dev metric (e.g. nDCG@10 on a dev
slice carved from the *train* split, see :func:`split_dev`), evaluated after every epoch or
every ``eval_every`` steps; the best trainable state is restored at the end. Seeds are fixed,
the loss curve goes to a jsonl log, progress to tqdm.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from irkit.data.types import Qrels, Ranking
from irkit.errors import IrkitError
from irkit.tune.adapters import TunedCrossEncoder, TunedEncoder, trainable_state

# learning rates that work per method (adapters start from zero and need a larger step than full FT)
DEFAULT_LR = {"connected": 1e-3, "side": 1e-3, "houlsby": 1e-3, "lora": 5e-4, "bitfit": 1e-3, "full": 3e-5}


@dataclass
class Example:
    """One training query with one relevant text and its hard negatives.

    ``teacher`` (cross-encoder only), one score per text in the order positive, negatives: the
    target becomes the softmax of these scores instead of the positive alone (distillation,
    :mod:`irkit.tune.distil`).
    """

    query: str
    positive: str
    negatives: list[str]
    teacher: list[float] | None = None


@dataclass
class TrainConfig:
    epochs: int = 1
    steps: int = 0  # total steps when > 0 (passes over the data as needed), else epochs x steps per epoch
    batch_size: int = 8  # queries per step
    n_negatives: int = 7
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps
    max_length: int = 192  # pair length (cross) or document length (bi)
    query_max_length: int = 64  # bi-encoder queries
    temperature: float = 0.05  # bi-encoder InfoNCE
    seed: int = 13
    patience: int = 2  # dev evaluations without improvement before stopping
    eval_every: int = 0  # steps; 0 = once per epoch
    grad_clip: float = 1.0
    log_path: str | None = None
    bf16: bool = False  # bfloat16 autocast: ~2-2.5x faster on CPUs with AVX512-BF16 (far slower without), fp32 weights


@dataclass
class TrainResult:
    best_dev: float | None
    best_step: int
    steps: int
    wall_s: float
    train_s: float = 0.0  # wall time of the training steps alone (dev checks excluded)
    train_cpu_s: float = 0.0  # CPU time of the same steps, all threads: compute that contention does not inflate
    losses: list[float] = field(default_factory=list)
    dev_history: list[tuple[int, float]] = field(default_factory=list)
    dev_train_s: list[float] = field(default_factory=list)  # train_s when each dev check ran
    dev_train_cpu_s: list[float] = field(default_factory=list)  # train_cpu_s when each dev check ran


def build_examples(
    qrels: Mapping[str, Mapping[str, int]],
    query_text: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    doc_text: Mapping[str, str],
    n_negatives: int = 7,
    depth: int = 30,
    seed: int = 13,
) -> list[Example]:
    """One example per (query, relevant doc); negatives sampled from the query's top-``depth`` candidates.

    Judged-relevant documents and exact duplicates of a positive's text are never negatives.
    A query whose candidates run short is topped up with random documents of the pool.
    """
    rng = random.Random(seed)
    pool_ids = sorted(doc_text)
    out = []
    for qid in sorted(qrels):
        positives = [d for d, g in qrels[qid].items() if g > 0 and d in doc_text]
        if not positives or qid not in query_text:
            continue
        banned = set(qrels[qid])
        pos_texts = {doc_text[d] for d in positives}
        top = list(candidates.get(qid, []))[:depth]
        ranked = [d for d in top if d not in banned and doc_text.get(d) not in pos_texts]
        for pos in positives:
            negs = rng.sample(ranked, min(n_negatives, len(ranked)))
            while len(negs) < n_negatives:
                d = rng.choice(pool_ids)
                if d not in banned and d not in negs:
                    negs.append(d)
            out.append(Example(query_text[qid], doc_text[pos], [doc_text[d] for d in negs]))
    return out


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_dev(qids: Sequence[str], fraction: float = 0.1, seed: int = 13) -> tuple[list[str], list[str]]:
    """Carve a deterministic dev slice from training queries: ``(train_qids, dev_qids)``."""
    if not 0 < fraction < 1:
        raise IrkitError(f"dev fraction must be in (0, 1), got {fraction}")
    order = sorted(qids)
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(len(order) * fraction))
    return sorted(order[n_dev:]), sorted(order[:n_dev])


class Trainer:
    """Trains the ``requires_grad`` parameters of a tuned bi- or cross-encoder."""

    def __init__(self, model: nn.Module, tokenizer, config: TrainConfig) -> None:
        if isinstance(model, TunedCrossEncoder):
            self.kind = "cross-encoder"
        elif isinstance(model, TunedEncoder):
            self.kind = "bi-encoder"
        else:
            raise IrkitError(f"Trainer takes a TunedEncoder or TunedCrossEncoder, got {type(model).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        if self.kind == "bi-encoder":  # training embeds exactly as BiEncoder encodes (pooling, normalisation)
            from irkit.models.encoder import BiEncoder

            self._queries = BiEncoder.from_model(model, tokenizer, config.query_max_length)
            self._documents = BiEncoder.from_model(model, tokenizer, config.max_length)

    def _loss(self, batch: list[Example]) -> torch.Tensor:
        cfg = self.config
        docs = [[ex.positive, *ex.negatives[: cfg.n_negatives]] for ex in batch]
        n = len(docs[0])
        if any(len(d) != n for d in docs):
            raise IrkitError("every example needs at least n_negatives negatives")
        if self.kind == "cross-encoder":
            enc = self.tokenizer(
                [ex.query for ex in batch for _ in range(n)],
                [d for ds in docs for d in ds],
                truncation=True,
                max_length=cfg.max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = self.model(**enc).logits.float().view(len(batch), n)
            return nn.functional.cross_entropy(logits, self._targets(batch, n))
        if any(ex.teacher is not None for ex in batch):
            raise IrkitError("teacher scores (distillation) train cross-encoders only")
        q = self._queries.embed([self._queries.query_prefix + ex.query for ex in batch])
        d = self._documents.embed([self._documents.document_prefix + t for ds in docs for t in ds])
        scores = q @ d.T / cfg.temperature
        target = torch.arange(len(batch)) * n  # each query's positive comes first in its group
        return nn.functional.cross_entropy(scores, target)

    @staticmethod
    def _targets(batch: list[Example], n: int) -> torch.Tensor:
        """Each list's target distribution: all mass on the positive, or the softmax of its teacher scores."""
        target = torch.zeros(len(batch), n)
        for i, ex in enumerate(batch):
            if ex.teacher is None:
                target[i, 0] = 1.0
            elif len(ex.teacher) < n:
                raise IrkitError(f"an example has {len(ex.teacher)} teacher scores for {n} texts")
            else:
                target[i] = torch.softmax(torch.tensor(ex.teacher[:n], dtype=torch.float32), 0)
        return target

    def fit(
        self,
        train: Sequence[Example],
        dev: Callable[[nn.Module], float] | None = None,
        show_progress: bool = True,
    ) -> TrainResult:
        """Train; with ``dev`` (higher is better), keep the best state and stop early."""
        from tqdm.auto import tqdm
        from transformers import get_linear_schedule_with_warmup

        cfg = self.config
        if not train:
            raise IrkitError("no training examples")
        if cfg.steps < 0:
            raise IrkitError(f"steps must be >= 0 (0: epochs x steps per epoch), got {cfg.steps}")
        set_seed(cfg.seed)
        rng = random.Random(cfg.seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise IrkitError("the model has no trainable parameters")
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = cfg.steps or per_epoch * cfg.epochs
        sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * total), total)
        log = open(cfg.log_path, "a", encoding="utf-8") if cfg.log_path else None  # noqa: SIM115
        result = TrainResult(best_dev=None, best_step=0, steps=0, wall_s=0.0)
        best_state = trainable_state(self.model)
        bad_evals = 0
        start = time.perf_counter()

        def write(record: dict) -> None:
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()

        def evaluate(step: int) -> bool:
            """Dev check; returns True when training should stop."""
            nonlocal best_state, bad_evals
            self.model.eval()
            with torch.inference_mode(), autocast(cfg.bf16):
                score = float(dev(self.model))  # type: ignore[misc]
            self.model.train()
            result.dev_history.append((step, score))
            result.dev_train_s.append(result.train_s)
            result.dev_train_cpu_s.append(result.train_cpu_s)
            write(
                {
                    "step": step,
                    "dev": score,
                    "time_s": round(time.perf_counter() - start, 2),
                    "train_s": round(result.train_s, 2),
                    "train_cpu_s": round(result.train_cpu_s, 2),
                }
            )
            if result.best_dev is None or score > result.best_dev:
                result.best_dev, result.best_step, bad_evals = score, step, 0
                best_state = trainable_state(self.model)
                return False
            bad_evals += 1
            return bad_evals >= cfg.patience

        write({"config": asdict(cfg), "kind": self.kind, "n_train": len(train)})
        if dev is not None:
            evaluate(0)
        self.model.train()
        step, stop = 0, False
        bar = tqdm(total=total, desc=f"tune {self.kind}", unit="step", disable=not show_progress)
        for epoch in range(math.ceil(total / per_epoch)):
            order = list(range(len(train)))
            rng.shuffle(order)
            for i in range(0, len(order), cfg.batch_size):
                if step == total:
                    break
                tick, cpu_tick = time.perf_counter(), time.process_time()
                with autocast(cfg.bf16):
                    loss = self._loss([train[j] for j in order[i : i + cfg.batch_size]])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                step += 1
                value = loss.item()
                result.train_s += time.perf_counter() - tick
                result.train_cpu_s += time.process_time() - cpu_tick
                result.losses.append(value)
                write({"step": step, "epoch": epoch, "loss": value, "lr": sched.get_last_lr()[0]})
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if dev is not None and cfg.eval_every and step % cfg.eval_every == 0 and evaluate(step):
                    stop = True
                    break
            if stop:
                break
            if dev is not None and not cfg.eval_every and evaluate(step):
                break
        if dev is not None and cfg.eval_every and not stop and result.dev_history[-1][0] != step:
            evaluate(step)  # the final state is always checked
        bar.close()
        if dev is not None:
            self.model.load_state_dict(best_state, strict=False)
        self.model.eval()
        result.steps = step
        result.wall_s = time.perf_counter() - start
        write({"done": True, "steps": step, "best_dev": result.best_dev, "best_step": result.best_step})
        if log is not None:
            log.close()
        return result


def autocast(enabled: bool) -> torch.autocast:
    """bfloat16 autocast on CPU when ``enabled`` (a no-op context otherwise)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def as_reranker(model: nn.Module, tokenizer, max_length: int, query_max_length: int = 64, batch_size: int = 32):
    """The model being tuned as the stage users run, for dev scoring: a cross-encoder through
    ``CrossEncoder.from_model``, a bi-encoder (cosine) through ``BiEncoderReranker.from_model``."""
    if isinstance(model, TunedCrossEncoder):
        from irkit.rerank.cross_encoder import CrossEncoder

        return CrossEncoder.from_model(model, tokenizer, max_length=max_length, batch_size=batch_size)
    from irkit.rerank.bi_encoder import BiEncoderReranker

    return BiEncoderReranker.from_model(model, tokenizer, max_length, query_max_length, batch_size)


#: interpolation weights tried on dev (reranker weight; the first stage gets 1 - w)
WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


def interpolation_weight(reranked: Ranking, qrels: Qrels, metric: str = "nDCG@10") -> tuple[float, dict[float, float]]:
    """The ``Interpolate`` weight with the best ``metric`` on ``reranked`` (a reranker's output over its first
    stage's candidates), ties going to the weight nearest 0.5; and the metric at every weight of :data:`WEIGHTS`."""
    from irkit.evaluation import evaluate
    from irkit.pipeline.operators import Interpolate

    by_w = {w: evaluate(Interpolate(w).transform(reranked), qrels, [metric])[metric] for w in WEIGHTS}
    return max(WEIGHTS, key=lambda w: (by_w[w], -abs(w - 0.5))), by_w
