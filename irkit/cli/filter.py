"""``irkit tune filter``: train a Cosine Adapter relevance filter behind a retriever into an artifact."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(actions: argparse._SubParsersAction) -> None:
    """The ``filter`` action of ``irkit tune`` (irkit/cli/tune.py)."""
    t = actions.add_parser(
        "filter",
        help="train a Cosine Adapter relevance filter behind the retriever of an index",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Retrieve the top --depth of every judged query of --split with the retriever of the index\n"
            "--retriever, then train the Cosine Adapter (a query-dependent monotone map of the raw scores\n"
            "into probabilities) with binary cross-entropy on those (query, document) pairs. A dev slice\n"
            "carved from the split picks the epoch, the mapping family (--family auto: the best dev PR-AUC)\n"
            "and the global threshold tau. Writes OUT (cosine_adapter.safetensors + cosine_filter.json) and\n"
            "the loss log OUT.loss.jsonl. Use it as `Dense(...) % 100 >> CosineFilter.load(OUT)` or\n"
            "{cosine_filter: {path: OUT}} in a pipeline YAML."
        ),
        epilog=(
            "example:\n"
            "  irkit tune filter --retriever indexes/scifact-minilm --dataset ../shared/data/beir/scifact \\\n"
            "      --split train --out runs/filters/scifact-minilm"
        ),
    )
    t.add_argument(
        "--retriever", required=True, type=Path, help="index directory whose retriever the filter will sit behind"
    )
    t.add_argument("--dataset", required=True, help="a BEIR directory, dataset name or ir_datasets id")
    t.add_argument("--split", default="train", help="training split (its judged queries; default train)")
    t.add_argument("--out", required=True, type=Path, help="artifact directory to write")
    t.add_argument("--depth", type=int, default=100, help="documents retrieved per query (default 100)")
    t.add_argument("--family", choices=["auto", "linear", "sqrt", "quadratic", "power"], default="auto")
    t.add_argument(
        "--features",
        choices=["query", "query+list"],
        default="query+list",
        help="network input: the query embedding plus statistics of its raw score list (default), or the "
        "query embedding alone (the paper; it did not beat z-score normalisation in eval/results/cosine_adapter.md)",
    )
    t.add_argument("--encoder", default=None, help="query encoder (default: the dense index's model, else minilm)")
    t.add_argument("--rule", choices=["recall", "precision", "f1"], default="recall", help="how tau is chosen on dev")
    t.add_argument("--target", type=float, default=0.95, help="dev recall (or precision) tau must reach (0.95)")
    t.add_argument("--rel", type=int, default=1, help="lowest relevant grade (default 1)")
    t.add_argument("--dev-fraction", type=float, default=0.2, help="share of the queries held out as dev (0.2)")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--hidden", type=int, default=64, help="hidden units of the query network")
    t.add_argument("--seed", type=int, default=13)
    t.add_argument("--log", type=Path, default=None, help="loss log as jsonl (default OUT.loss.jsonl)")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit import index
    from irkit.data.datasets import load_dataset
    from irkit.errors import IrkitError
    from irkit.filter.cosine_adapter import FitConfig, train, training_set

    if args.depth < 1:
        raise IrkitError(f"--depth must be >= 1, got {args.depth}")
    ds = load_dataset(args.dataset, args.split)
    if ds.qrels is None:
        raise IrkitError(f"split {args.split!r} of {args.dataset} has no qrels to train on")
    retriever = index.retriever(args.retriever, depth=args.depth)
    ranking = retriever(ds.queries)
    log = args.log or args.out.with_name(args.out.name + ".loss.jsonl")
    log.unlink(missing_ok=True)
    data = training_set(ranking, ds.qrels, args.features, args.encoder, args.dev_fraction, args.rel, args.seed)
    flt = train(
        data,
        family=args.family,
        rule=args.rule,
        target=args.target,
        config=FitConfig(epochs=args.epochs, lr=args.lr, hidden=args.hidden, seed=args.seed),
        log_path=log,
        describe={"dataset": str(args.dataset), "split": args.split},
    )
    flt.save(args.out)
    dev = flt.config["dev"][flt.family]
    print(
        f"wrote {args.out}: family {flt.family}, tau {flt.tau:.4g} ({args.rule} >= {args.target} on "
        f"{flt.config['training']['dev_queries']} dev queries), dev PR-AUC {dev['pr_auc']:.4f}; loss log {log}",
        file=sys.stderr,
    )
    return 0
