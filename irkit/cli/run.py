"""``irkit run``: run a YAML pipeline over a dataset's queries (resumable, local or Ray), write the run, evaluate."""

from __future__ import annotations

import argparse


def add_runner_options(p: argparse.ArgumentParser) -> None:
    """The options of the shared runner (checkpoint, executor, shards), for ``run`` and ``rerank``."""
    p.add_argument("--checkpoint", help="directory of finished queries (default: OUT.ckpt, removed after success)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="where shards run (default: local)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (and CPUs of a local Ray cluster started here)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster (default: start a local one)")
    p.add_argument("--shard-size", type=int, default=16, help="queries per shard, the unit of checkpointing (16)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def runner(stage: object, args: argparse.Namespace) -> object:
    from irkit.pipeline.runner import Runner

    return Runner(
        stage,  # type: ignore[arg-type]
        checkpoint=args.checkpoint,
        executor=args.executor,
        workers=args.workers,
        shard_size=args.shard_size,
        progress=not args.no_progress,
        address=args.address,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a YAML pipeline on a dataset and write a TREC run (resumable)",
        description=(
            "Build the pipeline a YAML file describes (see examples/pipelines/), run it on the queries of "
            "DATASET/SPLIT and write a TREC run. DATASET is a BEIR directory, a name under $IRKIT_DATA "
            "(e.g. beir/scifact) or an ir_datasets id. Finished queries are checkpointed: after a crash the "
            "same command resumes. With --eval, score the run against the split's qrels."
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
    add_runner_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit.data.datasets import load_dataset
    from irkit.errors import IrkitError
    from irkit.pipeline.config import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    dataset = load_dataset(args.dataset, args.split)
    ranking = runner(pipeline, args).run(dataset.queries, out=args.out, tag=args.tag)  # type: ignore[attr-defined]
    print(f"{len(ranking)} queries -> {args.out}")
    if args.measures:
        if dataset.qrels is None:
            raise IrkitError(f"dataset {args.dataset!r} has no qrels for split {args.split!r}")
        from irkit.evaluation import evaluate

        print(evaluate(ranking, dataset.qrels, args.measures).table())
    return 0
