"""Shared data plumbing for the eval/tune_*.py experiments on SciFact (BM25 runs, texts, dev slice).

The dev slice is carved from SciFact *train* (``irkit.tune.split_dev``); the test split is only
used for the final numbers.
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from regress import machine

from irkit.cli.tune import add_method_args
from irkit.data.docstore import DocStore, DocTexts
from irkit.data.io import read_qrels, read_queries, read_run, write_run
from irkit.data.types import Qrels, Queries, Ranking
from irkit.paths import eval_data_root
from irkit.tune.trainer import TrainConfig, Trainer, TrainResult, split_dev

ROOT = Path(__file__).resolve().parents[1]
DATA = eval_data_root()
SCIFACT = DATA / "beir" / "scifact"
INDEX = ROOT / "indexes" / "scifact-bm25"
RUNS = ROOT / "runs" / "tune"
T = TypeVar("T")


@dataclass
class SciFact:
    queries: Queries  # all queries
    doc_text: DocTexts  # docid -> Doc.contents, read from the corpus's DocStore
    train_qrels: Qrels  # train split minus the dev slice
    dev_qrels: Qrels  # dev slice carved from train
    test_qrels: Qrels
    bm25: Ranking  # BM25 top-100 for every train and test query, with the corpus's DocStore (rerankers read it)


def bm25_run(queries: Queries, k: int = 100) -> Ranking:
    """BM25 (Anserini defaults) top-``k`` for ``queries``; cached under runs/tune/ and the index under indexes/."""
    path = RUNS / f"scifact-bm25-top{k}.trec"
    if path.is_file():
        return read_run(path, queries)
    from irkit.index.bm25 import build_bm25_index
    from irkit.retrieve.bm25 import BM25

    if not INDEX.exists():
        build_bm25_index(SCIFACT, INDEX)
    run = BM25(INDEX, depth=k).transform(queries)
    write_run(run, path, tag="bm25")
    return run


def load_scifact(dev_fraction: float = 0.1, seed: int = 13) -> SciFact:
    queries = read_queries(SCIFACT / "queries.jsonl")
    train = read_qrels(SCIFACT / "qrels" / "train.tsv", queries)
    test = read_qrels(SCIFACT / "qrels" / "test.tsv", queries)
    train_q, dev_q = split_dev(list(train), dev_fraction, seed)
    store = DocStore.for_corpus(SCIFACT / "corpus.jsonl")
    bm25 = bm25_run(queries.subset(q for q in queries if q in train or q in test))
    bm25.docstore = store
    return SciFact(queries, DocTexts(store), train.subset(train_q), train.subset(dev_q), test, bm25)


def train_candidates(data: SciFact) -> Path:
    """The BM25 top-100 run of the train split (dev slice included) as a file, for ``irkit tune --candidates``."""
    path = RUNS / "scifact-train-bm25-top100.trec"
    write_run(data.bm25.subset(q for q in data.bm25 if q in data.train_qrels or q in data.dev_qrels), path)
    return path


def add_tuning_args(ap: argparse.ArgumentParser, extra_methods: tuple[str, ...] = (), **defaults: Any) -> None:
    """Options every tuning experiment shares: the method (as ``irkit tune`` takes it), budget and dev protocol."""
    add_method_args(ap, extra_methods)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="total training steps (0: --epochs passes over the data)")
    ap.add_argument("--lr", type=float, default=None, help="default: irkit.tune.trainer.DEFAULT_LR")
    ap.add_argument("--train-examples", type=int, default=0, help="seeded random subset of the training examples")
    ap.add_argument("--dev-queries", type=int, default=0, help="seeded random subset of the dev slice")
    ap.add_argument("--eval-every", type=int, default=0, help="dev check every N steps (0: once per epoch)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (slow without AVX512-BF16)")
    ap.set_defaults(**defaults)


def sample(items: Sequence[T], n: int, seed: int) -> list[T]:
    """A seeded random subset of ``n`` items in their original order (all of them when ``n`` is 0)."""
    if not n or n >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def training_report(result: TrainResult) -> dict[str, Any]:
    """What every tuning experiment records of its training run (the learning curve with its clocks)."""
    return {
        "train_wall_s": result.wall_s,
        "train_s": result.train_s,
        "train_cpu_s": result.train_cpu_s,
        "steps": result.steps,
        "best_step": result.best_step,
        "best_dev": result.best_dev,
        "dev_history": result.dev_history,
        "dev_train_s": result.dev_train_s,
        "dev_train_cpu_s": result.dev_train_cpu_s,
    }


def full_step_cost(build: Callable[[], tuple[Any, Any]], cfg: TrainConfig, examples: Sequence, steps: int = 4) -> dict:
    """CPU seconds of one *full fine-tuning* step of a run's model, batch and lengths, measured in the run's
    own process after its training (median of ``steps`` steps after a warm-up one). A run's CPU seconds
    divided by it are its compute in full-FT steps: a unit that still compares runs when a grid spans
    several machines (AVX2 or AVX-512 change the seconds, much less the ratio)."""
    model, tok = build()
    cfg = replace(cfg, epochs=1, steps=steps + 1, eval_every=1, patience=steps + 2, log_path=None)
    result = Trainer(model, tok, cfg).fit(list(examples[: cfg.batch_size * (steps + 1)]), dev=lambda _m: 0.0)
    per_step = np.diff(result.dev_train_cpu_s)[1:]  # checks at steps 0..steps+1; the first step warms up
    return {"full_step_cpu_s": float(np.median(per_step)), "machine": machine()}


def set_threads() -> None:
    """Torch threads for an experiment: ``OMP_NUM_THREADS`` when set (two runs side by side, one core
    each), else both cores of the machines these results come from."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
