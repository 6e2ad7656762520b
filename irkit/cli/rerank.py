"""``irkit rerank``: rerank a TREC run with any reranking stage or pipeline, resumable, in-process or on Ray."""

from __future__ import annotations

import argparse
from pathlib import Path


def _rerankers() -> dict[str, object]:
    """Registered stages that take a ranking (cross_encoder, icr, prp, ...), by name."""
    from irkit.pipeline.config import STAGES, stage_class

    return {name: cls for name in sorted(STAGES) if (cls := stage_class(name)).consumes == "ranking"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from irkit.cli.options import add_options
    from irkit.cli.run import add_runner_options

    stages = _rerankers()
    p = sub.add_parser(
        "rerank",
        help="rerank a TREC run with a stage or pipeline (checkpointed; local or Ray)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Rerank every query of a TREC run file and write a new run. --stage names a reranking stage\n"
            f"({', '.join(stages)}) whose options follow below, or a pipeline YAML file that starts with one.\n"
            "Finished queries are checkpointed (default: OUT.ckpt/); after a crash the same command resumes\n"
            "where it stopped without recomputing or duplicating queries. The output file appears only when\n"
            "complete. --executor ray shards the queries over a Ray Data actor pool (pip install 'irkit[ray]')."
        ),
        epilog=(
            "examples:\n"
            "  irkit rerank --run bm25.trec --corpus passages.jsonl --topics topics.tsv --stage icr --out icr.trec\n"
            "  irkit rerank --run bm25.trec --corpus passages.jsonl --topics topics.tsv --stage prp --k 10 "
            "--out prp.trec"
        ),
    )
    p.add_argument("--run", required=True, help="input TREC run (qid Q0 docid rank score tag)")
    p.add_argument("--corpus", required=True, help="passages: a corpus .jsonl (cached as a docstore) or a .sqlite")
    p.add_argument("--topics", required=True, help="queries: qid<TAB>query .tsv, or BEIR queries.jsonl")
    p.add_argument("--stage", required=True, help="reranking stage name, or a pipeline YAML file")
    p.add_argument("--depth", type=int, default=None, help="rerank only each query's top DEPTH candidates")
    p.add_argument("--out", required=True, help="output TREC run")
    p.add_argument("--tag", default="irkit", help="run tag in the last column (default: irkit)")
    add_runner_options(p)
    p.set_defaults(func=run, option_owners=add_options(p, stages, (), "options"))


def run(args: argparse.Namespace) -> int:
    from irkit.cli.options import chosen
    from irkit.cli.run import runner
    from irkit.data.docstore import DocStore
    from irkit.data.io import read_queries, read_run
    from irkit.data.types import Ranking
    from irkit.errors import IrkitError
    from irkit.pipeline.config import load_pipeline, stage_class

    if args.stage.endswith((".yaml", ".yml")) or Path(args.stage).is_file():
        if chosen(args, args.option_owners, "a pipeline file"):
            raise IrkitError("stage options apply to a named stage; put them in the pipeline file")
        stage = load_pipeline(args.stage)
    else:
        stage = stage_class(args.stage)(**chosen(args, args.option_owners, args.stage))
    queries = read_queries(args.topics)
    store = DocStore.for_corpus(args.corpus)
    candidates = read_run(args.run, queries, docids=store)
    candidates = Ranking(candidates.results, queries.subset(candidates), store)
    if args.depth is not None:
        candidates = candidates.top_k(args.depth)
    ranking = runner(stage, args).run(candidates, out=args.out, tag=args.tag)  # type: ignore[attr-defined]
    print(f"reranked {len(ranking)} queries -> {args.out}")
    return 0
