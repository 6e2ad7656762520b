"""``irkit search``: first-stage retrieval from an index of any kind into a TREC run file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _retrievers() -> dict[str, object]:
    from irkit.index import KINDS

    return {name: kind.get("retriever") for name, kind in KINDS.items()}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from irkit.cli.options import add_options

    p = sub.add_parser(
        "search",
        help="retrieve from an index into a TREC run file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Retrieve the top --depth documents for each query from an index built by 'irkit index build'.\n"
            "The index kind is read from its manifest and its retriever does the search; each kind has its\n"
            "own options (below). A dense index encodes queries with the model it was built with unless\n"
            "--model says otherwise. The run is written atomically."
        ),
        epilog=(
            "examples:\n"
            "  irkit search --index indexes/scifact-bm25 --dataset ../shared/data/beir/scifact --out runs/bm25.trec\n"
            "  irkit search --index indexes/scifact-minilm --queries topics.tsv --depth 100 --out runs/dense.trec\n"
            "  irkit search --index indexes/ivfpq --queries q.tsv --search-params nprobe=32 --mmap --out ivf.trec\n"
            "  irkit eval runs/bm25.trec ../shared/data/beir/scifact/qrels/test.tsv -m nDCG@10 -m R@100"
        ),
    )
    p.add_argument("--index", required=True, type=Path, help="index directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--queries", type=Path, help="queries: BEIR queries.jsonl or a qid<TAB>query .tsv file")
    src.add_argument("--dataset", help="a BEIR directory, dataset name or ir_datasets id; its --split queries")
    p.add_argument("--split", default="test", help="split of --dataset whose judged queries are used (test)")
    p.add_argument("--out", required=True, type=Path, help="TREC run file to write")
    p.add_argument("--tag", default=None, help="run tag in the last column (default: the index type)")
    p.set_defaults(func=run, option_owners=add_options(p, _retrievers(), ("index",), "search options"))


def run(args: argparse.Namespace) -> int:
    from irkit import index
    from irkit.cli.options import chosen
    from irkit.data.io import read_queries, write_run

    kind = index.type_of(args.index)
    if args.queries is not None:
        queries = read_queries(args.queries)
    else:
        from irkit.data.datasets import load_dataset

        queries = load_dataset(args.dataset, args.split).queries
    stage = index.retriever(args.index, **chosen(args, args.option_owners, kind))
    ranking = stage(queries)
    write_run(ranking, args.out, tag=args.tag or kind)
    print(f"wrote {args.out}: {len(ranking)} queries, up to {stage.depth} documents each ({stage!r})", file=sys.stderr)
    return 0
