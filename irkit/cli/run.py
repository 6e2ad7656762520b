"""``irkit run``: run a YAML pipeline over a dataset's queries, write the run, optionally evaluate it."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a YAML pipeline on a dataset and write a TREC run",
        description=(
            "Build the pipeline a YAML file describes (see examples/pipelines/), run it on the queries of "
            "DATASET/SPLIT and write a TREC run. DATASET is a BEIR directory, a name under $IRKIT_DATA "
            "(e.g. beir/scifact) or an ir_datasets id. With --eval, score the run against the split's qrels."
        ),
    )
    p.add_argument("pipeline", help="pipeline YAML file")
    p.add_argument("--dataset", required=True, help="BEIR directory, name under $IRKIT_DATA, or ir_datasets id")
    p.add_argument("--split", default="test", help="qrels split whose queries are run (default: test)")
    p.add_argument("--out", required=True, help="output TREC run file (written atomically)")
    p.add_argument("--tag", default="irkit", help="run tag in the last column (default: irkit)")
    p.add_argument(
        "--eval", action="append", dest="measures", metavar="MEASURE", help="ir-measures measure (repeatable)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit.data.datasets import load_dataset
    from irkit.data.io import write_run
    from irkit.errors import IrkitError
    from irkit.pipeline.config import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    dataset = load_dataset(args.dataset, args.split)
    ranking = pipeline(dataset.queries)
    write_run(ranking, args.out, tag=args.tag)
    print(f"{len(ranking)} queries -> {args.out}")
    if args.measures:
        if dataset.qrels is None:
            raise IrkitError(f"dataset {args.dataset!r} has no qrels for split {args.split!r}")
        from irkit.evaluate import evaluate

        print(evaluate(ranking, dataset.qrels, args.measures).table())
    return 0
