"""Learning efficiency on a small budget: the same SciFact cross-encoder steps under each tuning method.

Every method sees the same examples in the same order (same seed) for ``--steps`` steps; we
record the training loss curve and wall time. This is the paper's "parameter-efficient but
not learning-efficient" question at a scale a 2-core CPU allows; it is no substitute for the
full dev/test tables of eval/tune_all.sh.

    nice -n 10 python eval/tune_convergence.py --steps 20 --results eval/results/tune_convergence.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from tune_common import load_scifact

from irkit.tune import artifacts
from irkit.tune.adapters import count_params
from irkit.tune.trainer import DEFAULT_LR, TrainConfig, Trainer, build_examples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["connected", "houlsby", "lora", "bitfit", "full"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-negatives", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--results", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_scifact(seed=args.seed)
    examples = build_examples(
        {q: data.train_qrels[q] for q in data.train_qrels},
        dict(data.queries.items()),
        {q: data.bm25[q][0] for q in data.bm25},
        data.doc_text,
        n_negatives=args.n_negatives,
        seed=args.seed,
    )[: args.steps * args.batch_size]
    report = {}
    for method in args.methods:
        model, tok = artifacts.build("cross-encoder", "minilm", {"method": method, "rank": args.rank})
        cfg = TrainConfig(
            epochs=1,
            batch_size=args.batch_size,
            n_negatives=args.n_negatives,
            lr=DEFAULT_LR[method],
            max_length=args.max_length,
            seed=args.seed,
        )
        result = Trainer(model, tok, cfg).fit(examples)
        trainable, total = count_params(model)
        tail = max(1, args.steps // 4)
        report[method] = {
            "trainable_pct": 100.0 * trainable / total,
            "wall_s": result.wall_s,
            "s_per_step": result.wall_s / result.steps,
            "first_loss": float(np.mean(result.losses[:tail])),
            "last_loss": float(np.mean(result.losses[-tail:])),
            "losses": result.losses,
        }
        print(method, {k: v for k, v in report[method].items() if k != "losses"})
    with open(args.results, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
