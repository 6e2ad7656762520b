"""``irkit index``: build an index of any registered kind from a corpus; show an index's manifest."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# parameters every build function takes that the command sets itself
_COMMON = ("corpus_or_docs", "out_dir", "overwrite", "show_progress")


def _builders() -> dict[str, object]:
    from irkit.index import KINDS

    return {name: kind.get("build") for name, kind in KINDS.items()}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from irkit.cli.options import add_options
    from irkit.index import KINDS

    p = sub.add_parser(
        "index",
        help="build and inspect indexes",
        description="Build and inspect irkit indexes. An index is a directory with a manifest.json.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = actions.add_parser(
        "build",
        help="build an index of any kind from a corpus",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Build an index directory from a corpus. The index is written to a hidden temporary directory\n"
            "next to --out and renamed when complete, so an interrupted build never leaves a loadable half\n"
            "index. Long builds checkpoint their work: rerun the same command after a crash and it resumes.\n"
            "The documents are stored inside the index, so rerankers can fetch their texts later.\n"
            "Each --type has its own options (below); they default to the Python API's defaults."
        ),
        epilog=(
            "examples:\n"
            "  irkit index build --type bm25  --corpus ../shared/data/beir/scifact --out indexes/scifact-bm25\n"
            "  irkit index build --type dense --corpus ../shared/data/beir/scifact --out indexes/scifact-minilm\n"
            "  irkit index build --type dense --corpus corpus.jsonl --out indexes/hnsw --factory HNSW32\n"
            "  irkit index build --type dense --corpus corpus.jsonl --out indexes/ivfpq --factory IVF1024,PQ48 \\\n"
            "      --executor ray --workers 8 --address HEAD:6379   # encode on an existing Ray cluster\n"
            "  irkit index build --type splade --corpus ../shared/data/beir/scifact --out indexes/scifact-splade"
        ),
    )
    b.add_argument("--type", required=True, choices=sorted(KINDS), help="index kind")
    b.add_argument(
        "--corpus",
        required=True,
        help="a BEIR directory (with corpus.jsonl), a corpus .jsonl file (_id, title, text), or a dataset name",
    )
    b.add_argument("--out", required=True, type=Path, help="index directory to create")
    b.add_argument("--overwrite", action="store_true", help="replace --out if it already holds an index")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=run, option_owners=add_options(b, _builders(), _COMMON, "build options"))

    i = actions.add_parser("info", help="print an index's manifest", description="Print the manifest of an index.")
    i.add_argument("index", type=Path, help="index directory")
    i.add_argument("--verify", action="store_true", help="also check every file against its sha256 checksum")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit import index
    from irkit.cli.options import chosen

    if args.action == "info":
        manifest = index.read_manifest(args.index, verify=args.verify)
        manifest["files"] = f"{len(manifest['files'])} files" + (", checksums verified" if args.verify else "")
        print(json.dumps(manifest, indent=2))
        return 0

    corpus: object = args.corpus
    if not Path(args.corpus).exists():
        from irkit.data.datasets import load_dataset

        corpus = load_dataset(args.corpus, split=None)
    options = chosen(args, args.option_owners, args.type)
    built = index.build(args.type, corpus, args.out, overwrite=args.overwrite, show_progress=not args.quiet, **options)
    print(f"wrote {built!r}")
    return 0
