"""``irkit search``: first-stage retrieval from a dense or BM25 index into a TREC run file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="retrieve from an index into a TREC run file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Retrieve the top --k documents for each query from an index built by 'irkit index build'.\n"
            "The index type (dense or bm25) is read from its manifest; a dense index encodes queries with\n"
            "the model it was built with unless --model says otherwise. The run is written atomically."
        ),
        epilog=(
            "examples:\n"
            "  irkit search --index indexes/scifact-bm25 --dataset ../shared/data/beir/scifact --out runs/bm25.trec\n"
            "  irkit search --index indexes/scifact-minilm --queries topics.tsv --k 100 --out runs/dense.trec\n"
            "  irkit eval runs/bm25.trec ../shared/data/beir/scifact/qrels/test.tsv -m nDCG@10 -m R@100"
        ),
    )
    p.add_argument("--index", required=True, type=Path, help="index directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--queries", type=Path, help="queries: BEIR queries.jsonl or a qid<TAB>query .tsv file")
    src.add_argument("--dataset", help="a BEIR directory or ir_datasets id; its --split queries are searched")
    p.add_argument("--split", default="test", help="split of --dataset whose judged queries are used (test)")
    p.add_argument("--k", type=int, default=1000, help="documents per query (1000)")
    p.add_argument("--out", required=True, type=Path, help="TREC run file to write")
    p.add_argument("--tag", default=None, help="run tag in the last column (default: the index type)")
    bm25 = p.add_argument_group("bm25 options")
    bm25.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (0.9)")
    bm25.add_argument("--b", type=float, default=0.4, help="BM25 b (0.4)")
    bm25.add_argument("--threads", type=int, default=2, help="search threads (2)")
    dense = p.add_argument_group("dense options")
    dense.add_argument("--model", default=None, help="query encoder (default: the index's model)")
    dense.add_argument("--batch-size", type=int, default=32, help="query encoding batch size (32)")
    dense.add_argument("--search-params", default=None, help="FAISS search parameters, e.g. nprobe=16 or efSearch=128")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit.data.io import read_queries, write_run
    from irkit.index.manifest import index_type
    from irkit.pipeline.stage import Stage

    kind = index_type(args.index)
    if args.queries is not None:
        queries = read_queries(args.queries)
    else:
        from irkit.data.datasets import load_dataset

        queries = load_dataset(args.dataset, args.split).queries
    stage: Stage
    if kind == "bm25":
        from irkit.retrieve.bm25 import BM25

        stage = BM25(args.index, k1=args.k1, b=args.b, k=args.k, threads=args.threads)
    else:
        from irkit.retrieve.dense import Dense

        stage = Dense(
            args.index, model=args.model, k=args.k, batch_size=args.batch_size, search_params=args.search_params
        )
    ranking = stage(queries)
    write_run(ranking, args.out, tag=args.tag or kind)
    print(f"wrote {args.out}: {len(ranking)} queries, up to {args.k} documents each ({stage!r})", file=sys.stderr)
    return 0
