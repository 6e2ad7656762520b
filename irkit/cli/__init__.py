"""The ``irkit`` command: index build, search, eval, run, rerank, tune."""

from __future__ import annotations

import argparse
import importlib
import sys

from irkit.errors import IrkitError

# each module irkit/cli/<name>.py defines add_parser(subparsers) and run(args) -> int
SUBCOMMANDS = ["index", "search", "eval", "run", "rerank", "tune", "models"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="irkit",
        description="Retrieve-then-rerank pipelines over FAISS and Lucene indexes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"irkit.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IrkitError as e:
        print(f"irkit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
