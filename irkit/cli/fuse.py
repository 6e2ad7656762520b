"""``irkit fuse``: fuse TREC run files into one (RRF or min-max linear), like ``python -m pyserini.fusion``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuse",
        help="fuse TREC run files (reciprocal rank or min-max linear)",
        description=(
            "Fuse two or more TREC run files into one, with the math of the pipeline operator '|': "
            "reciprocal rank fusion (sum of 1 / (k + rank)) or a weighted sum of per-query min-max scaled "
            "scores (a document a run lacks gets 0 from it). The output is written atomically."
        ),
        epilog="example:\n  irkit fuse bm25.trec dense.trec --method rrf --out fused.trec",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="TREC run files (qid Q0 docid rank score tag), two or more")
    p.add_argument("--out", required=True, help="output TREC run")
    p.add_argument("--method", choices=["rrf", "linear"], default="rrf", help="fusion method (default rrf)")
    p.add_argument("--k", type=float, default=60, help="RRF constant k (default 60)")
    p.add_argument("--weights", type=float, nargs="+", help="linear: one weight per run (default equal)")
    p.add_argument("--depth", type=int, default=1000, help="keep each query's top DEPTH (default 1000)")
    p.add_argument("--tag", default="irkit-fuse", help="run tag in the last column (default: irkit-fuse)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit.data.io import read_run, write_run
    from irkit.errors import IrkitError
    from irkit.pipeline.operators import check_fusion, fuse_rankings

    if args.weights is not None and args.method != "linear":
        raise IrkitError("--weights go with --method linear")
    if args.depth < 1:
        raise IrkitError(f"--depth must be >= 1, got {args.depth}")
    check_fusion(args.method, args.k, args.weights, len(args.runs))  # before reading any file
    runs = [read_run(path) for path in args.runs]
    fused = fuse_rankings(runs, args.method, args.k, args.weights)
    write_run(fused.top_k(args.depth), args.out, tag=args.tag)
    print(f"fused {len(args.runs)} runs ({args.method}) over {len(fused)} queries into {args.out}")
    return 0
