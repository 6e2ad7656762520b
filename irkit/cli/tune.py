"""``irkit tune``: train a bi-encoder or cross-encoder with connected adapters (or a baseline) into an artifact."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="parameter-efficient tuning of a bi-encoder or cross-encoder",
        description=(
            "Train a BERT-style backbone (default: the bundled MiniLM) with connected adapters or a baseline "
            "(houlsby, lora, bitfit, full) on a BEIR training split. Negatives come from a first-stage run "
            "(e.g. BM25 from `irkit search`); a dev slice carved from the training queries selects the best "
            "epoch (nDCG@10 of reranking its candidates) and stops early. Writes a small adapter artifact "
            "(safetensors + irkit_adapter.json) that CrossEncoder / Dense load by path."
        ),
    )
    p.add_argument("--dataset", required=True, help="BEIR directory (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="train", help="training split (qrels/<split>.tsv); default train")
    p.add_argument("--candidates", required=True, help="TREC run with first-stage candidates for the split")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--kind", choices=["cross-encoder", "bi-encoder"], default="cross-encoder")
    p.add_argument("--method", choices=["connected", "houlsby", "lora", "bitfit", "full"], default="connected")
    p.add_argument("--backbone", default="minilm", help="registry name or path of the backbone (default minilm)")
    p.add_argument("--rank", type=int, default=32, help="adapter bottleneck / LoRA rank (default 32)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default depends on the method)")
    p.add_argument("--batch-size", type=int, default=8, help="queries per step")
    p.add_argument("--negatives", type=int, default=3, help="hard negatives per positive")
    p.add_argument("--neg-depth", type=int, default=30, help="sample negatives from this many top candidates")
    p.add_argument("--max-length", type=int, default=192, help="token cap of a pair (cross) or document (bi)")
    p.add_argument("--dev-fraction", type=float, default=0.1, help="share of training queries held out as dev")
    p.add_argument("--dev-depth", type=int, default=20, help="candidates reranked per dev query")
    p.add_argument("--patience", type=int, default=2, help="dev checks without improvement before stopping")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on CPUs with AVX512-BF16)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--log", default=None, help="loss curve as jsonl (default OUT.loss.jsonl)")
    p.add_argument("--no-cache", action="store_true", help="connected: do not cache the frozen backbone's outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import torch

    from irkit.data.datasets import load_dataset
    from irkit.data.docstore import DocStore, DocTexts
    from irkit.data.io import read_run
    from irkit.data.types import Ranking
    from irkit.errors import IrkitError
    from irkit.evaluation import evaluate
    from irkit.tune import artifacts
    from irkit.tune.adapters import count_params
    from irkit.tune.trainer import DEFAULT_LR, TrainConfig, Trainer, build_examples, rerank_candidates, split_dev

    ds = load_dataset(args.dataset, args.split)
    assert ds.qrels is not None
    run_ = read_run(args.candidates, ds.queries)
    candidates = {q: run_[q][0] for q in run_}
    if not any(q in candidates for q in ds.qrels):
        raise IrkitError(f"no query of split {args.split!r} has candidates in the run", path=args.candidates)
    # texts are read on demand from a scratch DocStore (removed with `scratch`): no corpus-sized dict
    scratch = tempfile.TemporaryDirectory(prefix="irkit-tune-")
    doc_text = DocTexts(DocStore.build(Path(scratch.name) / "docs.sqlite", ds.docs()))
    train_q, dev_q = split_dev(list(ds.qrels), args.dev_fraction, args.seed)
    queries = dict(ds.queries.items())
    examples = build_examples(
        {q: ds.qrels[q] for q in train_q}, queries, candidates, doc_text, args.negatives, args.neg_depth, args.seed
    )
    model, tok = artifacts.build(args.kind, args.backbone, {"method": args.method, "rank": args.rank})
    if args.method == "connected" and not args.no_cache:
        model_encoder = model.encoder if args.kind == "cross-encoder" else model
        model_encoder.enable_tap_cache()
    dev_queries = {q: queries[q] for q in dev_q if q in candidates}
    dev_qrels = ds.qrels.subset(dev_queries)

    def dev(m: torch.nn.Module) -> float:
        scores = rerank_candidates(m, tok, dev_queries, candidates, doc_text, args.dev_depth, args.max_length)
        return evaluate(Ranking.from_scores(scores), dev_qrels, ["nDCG@10"])["nDCG@10"]

    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        n_negatives=args.negatives,
        lr=args.lr or DEFAULT_LR[args.method],
        max_length=args.max_length,
        seed=args.seed,
        patience=args.patience,
        bf16=args.bf16,
        log_path=args.log or f"{args.out.rstrip('/')}.loss.jsonl",
    )
    trainable, total = count_params(model)
    print(f"{len(examples)} examples, {len(dev_queries)} dev queries; trainable {trainable:,} of {total:,}")
    result = Trainer(model, tok, cfg).fit(examples, dev=dev if dev_queries else None)
    artifacts.save(
        model,
        args.out,
        kind=args.kind,
        backbone=args.backbone,
        max_length=args.max_length,
        dev_ndcg10=result.best_dev,
        trained_on=f"{args.dataset} {args.split}",
    )
    print(f"best dev nDCG@10 {result.best_dev} at step {result.best_step}; wrote {args.out}")
    return 0
