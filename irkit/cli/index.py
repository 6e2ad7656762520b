"""``irkit index``: build dense (FAISS) and BM25 (Lucene) indexes from a corpus; show an index's manifest."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="build and inspect indexes",
        description="Build and inspect irkit indexes. An index is a directory with a manifest.json.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = actions.add_parser(
        "build",
        help="build a dense or BM25 index from a corpus",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Build an index directory from a corpus. The index is written to a hidden temporary directory\n"
            "next to --out and renamed when complete, so an interrupted build never leaves a loadable half\n"
            "index. A dense build checkpoints its encoding every --chunk-size documents: rerun the same\n"
            "command after a crash and it resumes. The documents are stored inside the index, so rerankers\n"
            "can fetch their texts later."
        ),
        epilog=(
            "examples:\n"
            "  irkit index build --type bm25  --corpus ../shared/data/beir/scifact --out indexes/scifact-bm25\n"
            "  irkit index build --type dense --corpus ../shared/data/beir/scifact --out indexes/scifact-minilm\n"
            "  irkit index build --type dense --corpus corpus.jsonl --out indexes/hnsw --factory HNSW32"
        ),
    )
    b.add_argument("--type", required=True, choices=["dense", "bm25"], help="index kind")
    b.add_argument(
        "--corpus",
        required=True,
        help="a BEIR directory (with corpus.jsonl), a corpus .jsonl file (_id, title, text), or an ir_datasets id",
    )
    b.add_argument("--out", required=True, type=Path, help="index directory to create")
    b.add_argument("--overwrite", action="store_true", help="replace --out if it already holds an index")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    dense = b.add_argument_group("dense options")
    dense.add_argument("--model", default="minilm", help="bi-encoder: a registered name or a local path (minilm)")
    dense.add_argument(
        "--factory",
        default="Flat",
        help="FAISS index_factory string: Flat (exact), HNSW32, IVF1024,Flat, IVF256,PQ32 ... (Flat)",
    )
    dense.add_argument("--batch-size", type=int, default=32, help="encoding batch size (32)")
    dense.add_argument("--max-length", type=int, default=256, help="tokens per document; longer ones are cut (256)")
    dense.add_argument("--chunk-size", type=int, default=2048, help="documents per resumable checkpoint (2048)")
    bm25 = b.add_argument_group("bm25 options")
    bm25.add_argument("--threads", type=int, default=2, help="Lucene indexing threads (2)")
    b.set_defaults(func=run)

    i = actions.add_parser("info", help="print an index's manifest", description="Print the manifest of an index.")
    i.add_argument("index", type=Path, help="index directory")
    i.add_argument("--verify", action="store_true", help="also check every file against its checksum")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irkit.index.manifest import read_manifest

    if args.action == "info":
        manifest = read_manifest(args.index, verify=args.verify)
        manifest["files"] = f"{len(manifest['files'])} files" + (", checksums verified" if args.verify else "")
        print(json.dumps(manifest, indent=2))
        return 0

    corpus: object = args.corpus
    if not Path(args.corpus).exists():
        from irkit.data.datasets import load_dataset

        corpus = load_dataset(args.corpus, split=None)
    if args.type == "dense":
        from irkit.index.dense import build_dense_index

        index = build_dense_index(
            corpus,
            args.out,
            model=args.model,
            factory=args.factory,
            batch_size=args.batch_size,
            max_length=args.max_length,
            chunk_size=args.chunk_size,
            overwrite=args.overwrite,
            show_progress=not args.quiet,
        )
    else:
        from irkit.index.bm25 import build_bm25_index

        index = build_bm25_index(
            corpus, args.out, threads=args.threads, overwrite=args.overwrite, show_progress=not args.quiet
        )
    print(f"wrote {index!r}")
    return 0
