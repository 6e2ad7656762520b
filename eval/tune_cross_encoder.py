"""Train a MiniLM cross-encoder with one tuning method on SciFact train; rerank BM25 on SciFact test.

Selection (epoch, interpolation weight) uses only the dev slice carved from SciFact train.
Reports: reranker alone, and min-max linear fusion of BM25 and the reranker with the weight
tuned on dev, each with a paired t-test against BM25 on the test queries.

    nice -n 10 python eval/tune_cross_encoder.py --method side --rank 32 --epochs 6 \
        --out irkit/resources/cross-encoder-minilm --results eval/results/cross_encoder_minilm.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tune_common import (
    RUNS,
    SciFact,
    add_tuning_args,
    full_step_cost,
    load_scifact,
    sample,
    set_threads,
    training_report,
)

from irkit.cli.tune import tune_section
from irkit.data.io import write_run
from irkit.data.types import Qrels, Ranking
from irkit.evaluation import compare, evaluate
from irkit.pipeline.operators import Interpolate
from irkit.tune import artifacts
from irkit.tune.adapters import count_params
from irkit.tune.trainer import (
    DEFAULT_LR,
    TrainConfig,
    Trainer,
    as_reranker,
    autocast,
    build_examples,
    interpolation_weight,
)


def rerank(model: torch.nn.Module, tok, data: SciFact, qids: list[str], depth: int, max_length: int) -> Ranking:
    """The BM25 top-``depth`` of each query in ``qids`` reranked by the model as ``CrossEncoder`` runs it."""
    return as_reranker(model, tok, max_length).transform(data.bm25.subset(qids).top_k(depth))


def ndcg(run: Ranking, qrels: Qrels) -> float:
    return evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tuning_args(ap, epochs=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-negatives", type=int, default=3)
    ap.add_argument("--neg-depth", type=int, default=30)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--dev-depth", type=int, default=20)
    ap.add_argument("--test-depth", type=int, default=20)
    ap.add_argument("--pooling", default="mean")
    ap.add_argument("--no-cache", action="store_true", help="do not cache frozen-backbone outputs (side)")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: at most this many examples / queries")
    ap.add_argument("--out", type=Path, default=None, help="save the selected model as an adapter artifact here")
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()
    set_threads()

    data = load_scifact(seed=args.seed)
    examples = build_examples(
        {q: data.train_qrels[q] for q in data.train_qrels},
        dict(data.queries.items()),
        {q: data.bm25[q][0] for q in data.train_qrels if q in data.bm25},
        data.doc_text,
        n_negatives=args.n_negatives,
        depth=args.neg_depth,
        seed=args.seed,
    )
    examples = sample(examples, args.train_examples, args.seed)
    dev_qids = sample(sorted(q for q in data.dev_qrels if q in data.bm25), args.dev_queries, args.seed)
    test_qids = sorted(q for q in data.test_qrels if q in data.bm25)
    if args.limit:
        examples, dev_qids, test_qids = examples[: args.limit], dev_qids[: args.limit], test_qids[: args.limit]
    model, tok = artifacts.build("cross-encoder", "minilm", tune_section(args), args.pooling)
    if args.method == "side" and not args.no_cache:
        model.encoder.enable_tap_cache()
    trainable, total = count_params(model)
    log = RUNS / f"ce-{args.results.stem}.loss.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    cfg = TrainConfig(
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        n_negatives=args.n_negatives,
        lr=args.lr or DEFAULT_LR[args.method],
        max_length=args.max_length,
        seed=args.seed,
        patience=args.patience,
        eval_every=args.eval_every,
        log_path=str(log),
        bf16=args.bf16,
    )
    print(f"{len(examples)} training examples, {len(dev_qids)} dev queries; trainable {trainable:,} / {total:,}")

    def dev(m: torch.nn.Module) -> float:
        return ndcg(rerank(m, tok, data, dev_qids, args.dev_depth, args.max_length), data.dev_qrels)

    result = Trainer(model, tok, cfg).fit(examples, dev=dev)
    if args.method == "side":
        model.encoder.enable_tap_cache(False)  # test pairs are seen once: no cache
    # interpolation weight chosen on dev (reranker scores of the selected model)
    with autocast(args.bf16):
        dev_ce = rerank(model, tok, data, dev_qids, args.dev_depth, args.max_length)
        best_w, dev_by_w = interpolation_weight(dev_ce, data.dev_qrels)
        t0 = time.perf_counter()
        test_ce = rerank(model, tok, data, test_qids, args.test_depth, args.max_length)
        test_s = time.perf_counter() - t0
    bm25 = data.bm25.subset(test_qids)
    test_qrels = data.test_qrels.subset(test_qids)
    fused = Interpolate(best_w).transform(test_ce)  # (1 - w) * minmax(BM25) + w * minmax(CE)
    tag = f"ce-{args.method}-s{args.seed}"
    write_run(test_ce, RUNS / f"{tag}.test.trec", tag=tag)
    write_run(fused, RUNS / f"{tag}.fused.test.trec", tag=f"{tag}-fused")
    cmp = {c.name: c for c in compare(bm25, {"ce": test_ce, "fused": fused}, test_qrels)}
    metrics = ["nDCG@10"]
    report = {
        "method": args.method,
        "tune": model.encoder.tune_config.to_dict(),
        "rank": model.encoder.tune_config.rank,
        "lr": cfg.lr,
        "seed": args.seed,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / total,
        **training_report(result),
        **full_step_cost(
            lambda: artifacts.build("cross-encoder", "minilm", tune_section(args) | {"method": "full"}, args.pooling),
            cfg,
            examples,
        ),
        "dev_interp": dev_by_w,
        "interp_weight": best_w,
        "test_depth": args.test_depth,
        "test_rerank_s": test_s,
        "test_pairs_per_s": sum(len(v[0]) for _, v in test_ce.items()) / test_s,
        "n_train_examples": len(examples),
        "n_dev_queries": len(dev_qids),
        "n_test_queries": len(test_qids),
        "bm25": evaluate(bm25, test_qrels, ["nDCG@10", "R@100"]).aggregate,
        "ce": {**evaluate(test_ce, test_qrels, metrics).aggregate, "p_vs_bm25": cmp["ce"].p_value},
        "fused": {**evaluate(fused, test_qrels, metrics).aggregate, "p_vs_bm25": cmp["fused"].p_value},
        "config": vars(args) | {"out": str(args.out), "results": str(args.results)},
    }
    if args.out is not None:
        artifacts.save(
            model,
            args.out,
            kind="cross-encoder",
            backbone="minilm",
            pooling=args.pooling,
            max_length=args.max_length,
            interpolation={"first_stage": "bm25", "weight": best_w, "normalisation": "minmax"},
            trained_on="BEIR SciFact train (dev slice held out), BM25 negatives",
            dev_ndcg10=result.best_dev,
        )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("bm25", "ce", "fused", "interp_weight", "train_wall_s")}, indent=2))


if __name__ == "__main__":
    main()
