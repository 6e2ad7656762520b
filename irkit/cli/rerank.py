"""``irkit rerank``: rerank a TREC run file with a cross-encoder, resumable, in-process or on Ray."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rerank",
        help="rerank a TREC run with a cross-encoder (checkpointed; local or Ray)",
        description=(
            "Rerank every query of a TREC run file with a cross-encoder and write a new run. Finished queries "
            "are checkpointed (default: OUT.ckpt/); after a crash, the same command resumes where it stopped "
            "without recomputing or duplicating queries. The output file appears only when complete. "
            "--executor ray shards the queries over a Ray Data actor pool (pip install 'irkit[ray]')."
        ),
    )
    p.add_argument("--run", required=True, help="input TREC run (qid Q0 docid rank score tag)")
    p.add_argument("--corpus", required=True, help="passages: BEIR corpus.jsonl, or an irkit docstore .sqlite")
    p.add_argument("--topics", required=True, help="queries: qid<TAB>query .tsv, or BEIR queries.jsonl")
    p.add_argument("--model", required=True, help="cross-encoder: registered name, model directory or hub id")
    p.add_argument("--out", required=True, help="output TREC run")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="where to score (default: local)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (and CPUs of a Ray cluster started here)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per forward pass (default: 32)")
    p.add_argument("--max-length", type=int, default=512, help="truncate pairs to this many tokens (default: 512)")
    p.add_argument("--checkpoint-dir", help="where finished queries are recorded (default: OUT.ckpt)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit.rerank.job import RerankJob

    job = RerankJob(
        run=args.run,
        corpus=args.corpus,
        topics=args.topics,
        model=args.model,
        out=args.out,
        batch_size=args.batch_size,
        max_length=args.max_length,
        executor=args.executor,
        workers=args.workers,
        checkpoint_dir=args.checkpoint_dir,
        progress=not args.no_progress,
    )
    ranking = job.execute()
    print(f"reranked {len(ranking)} queries -> {args.out}")
    return 0
