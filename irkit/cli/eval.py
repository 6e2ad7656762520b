"""``irkit eval``: score TREC run files against qrels, optionally with significance tests."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate run files against qrels",
        description=(
            "Evaluate a TREC run file against qrels (TREC or BEIR TSV). Measures are ir-measures strings, "
            "e.g. nDCG@10, R@100, 'RR(rel=2)@10'. With --compare, each further run is tested against the "
            "first with a paired t-test, Holm-corrected across the compared runs."
        ),
    )
    p.add_argument("run", help="TREC run file (qid Q0 docid rank score tag)")
    p.add_argument("qrels", help="qrels file: TREC format or BEIR TSV with header")
    p.add_argument("-m", "--measure", action="append", dest="measures", help="measure (repeatable; default nDCG@10)")
    p.add_argument("--per-query", action="store_true", help="also print one line per query and measure")
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN", help="runs to test against the first run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit.data.io import read_qrels, read_run
    from irkit.evaluation import compare, evaluate

    measures = args.measures or ["nDCG@10"]
    qrels = read_qrels(args.qrels)
    base = read_run(args.run)
    result = evaluate(base, qrels, measures)
    if args.per_query:
        for m, col in result.per_query.items():
            for q, v in col.items():
                print(f"{m}\t{q}\t{v:.4f}")
    print(result.table())
    if args.compare:
        runs = {path: read_run(path) for path in args.compare}
        for m in measures:
            print(f"\n{m}: run vs {args.run} (paired t-test, Holm-corrected)")
            for c in compare(base, runs, qrels, m):
                print(f"{c.name}\t{c.mean:.4f} vs {c.baseline_mean:.4f}\tp={c.p_value:.4g}\tp_holm={c.p_holm:.4g}")
    return 0
