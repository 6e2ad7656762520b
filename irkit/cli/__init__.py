"""The ``irkit`` command: index build, search, eval, fuse, run, rerank, tune, models."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from irkit.errors import IrkitError, IrkitWarning

# each module irkit/cli/<name>.py defines add_parser(subparsers) and run(args) -> int
SUBCOMMANDS = ["index", "search", "eval", "fuse", "run", "rerank", "tune", "models"]


def build_parser() -> argparse.ArgumentParser:
    from irkit import __version__

    parser = argparse.ArgumentParser(
        prog="irkit",
        description="Retrieve-then-rerank pipelines over FAISS and Lucene indexes.",
    )
    parser.add_argument("--version", action="version", version=f"irkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"irkit.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False) or getattr(args, "no_progress", False):
        quiet_libraries()
    with warnings.catch_warnings():
        warnings.simplefilter("default", IrkitWarning)
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except IrkitError as e:
            print(f"irkit: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            pass  # reported below, once the traceback is released: the progress bars of the generators
            # it kept suspended print their last state when they are closed, and that must not come last
        except OSError as e:  # read-only directory, disk full, permissions: one line, not a traceback
            where = f"{e.filename}: " if e.filename else ""
            print(f"irkit: error: {where}{e.strerror or e}", file=sys.stderr)
            return 1
    print("irkit: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130  # what a shell reports for a process ended by SIGINT


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    prefix = "irkit: warning: " if issubclass(category, IrkitWarning) else f"{category.__name__}: "
    print(f"{prefix}{message}", file=sys.stderr)


def quiet_libraries() -> None:
    """Silence the progress bars and load reports of Hugging Face libraries (for --quiet / --no-progress)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    if "transformers" in sys.modules:  # already imported: its settings were read at import time
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
