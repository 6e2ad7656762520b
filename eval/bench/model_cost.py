"""What each bundled and fetched model costs on this machine: encoding, reranking, index size, memory.

One fresh interpreter per model (so peak memory is that model's), the same texts for all:

* encode: the first ``--docs`` DL19 passages into what a first-stage index stores (dense vectors,
  or SPLADE term weights), docs per wall second and per CPU second of the process;
* rerank: the first ``--queries`` DL19 queries, each with its first ``--docs`` BM25 candidates,
  scored by the model's reranking stage (bi-encoder cosine, SPLADE dot product, cross-encoder),
  pairs per wall second and per CPU second (CPU seconds move little when other jobs share the cores);
* index bytes per document: a FAISS Flat vector (dim x 4 bytes) for dense models; for SPLADE and
  BM25 the Lucene index of SciFact under ``indexes/`` divided by its documents, when it exists;
* peak resident memory of the process (Python, torch and the model; ``VmHWM``).

    nice -n 10 python eval/bench/model_cost.py --out eval/results/model_cost.json
    python eval/bench/model_cost.py --models minilm splade-tiny --docs 64    # a quick look

Opt-in models (EmbeddingGemma) are measured only when fetched. Both cores, torch's default threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import finish, machine, peak_rss_gib, run_child
from encode import DATA, ROOT, timed

DL19 = DATA / "trec-dl-2019"
# name -> (encoder kind, reranking stage kind); None where the model has no such use
MODELS: dict[str, tuple[str | None, str]] = {
    "minilm": ("dense", "bi_encoder"),
    "nomic-embed-text-v1.5": ("dense", "bi_encoder"),
    "embeddinggemma-300m": ("dense", "bi_encoder"),
    "splade-tiny": ("splade", "splade"),
    "cross-encoder": (None, "cross_encoder"),  # the bundled MiniLM cross-encoder (irkit.CrossEncoder())
}
LUCENE = {"splade-tiny": ROOT / "indexes" / "scifact-splade", "bm25": ROOT / "indexes" / "scifact-bm25"}


def texts(n_docs: int, n_queries: int) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The first DL19 passages of the BM25 run, and the first queries with their first candidates."""
    from irkit.data.docstore import DocStore
    from irkit.data.io import read_queries, read_run

    store = DocStore.for_corpus(DL19 / "passages.jsonl")
    run, topics = read_run(DL19 / "bm25-top100.run"), read_queries(DL19 / "topics.tsv")
    qids = list(run)[:n_queries]
    items = [(topics[q], [store.get(d).contents for d in run[q][0][:n_docs]]) for q in qids]
    return items[0][1], items


def child(name: str, n_docs: int, n_queries: int) -> dict[str, Any]:
    """Load ``name``, encode and rerank the texts once (after a warm-up), report rates and memory."""
    encoder_kind, stage_kind = MODELS[name]
    docs, items = texts(n_docs, n_queries)
    t0 = time.perf_counter()
    from irkit.pipeline.config import stage_class

    stage = stage_class(stage_kind)(**({} if stage_kind == "cross_encoder" else {"model": name}))
    out: dict[str, Any] = {"model": name, "load_s": time.perf_counter() - t0, "docs": len(docs)}
    stage.score(items[0][0], docs[:4])  # warm-up
    if encoder_kind == "dense":
        enc = stage.documents  # the reranker's BiEncoder: the one a dense index build uses
        out["dim"] = enc.dim
        out["index_bytes_per_doc"] = enc.dim * 4
        _, wall, cpu = timed(enc.encode_documents, docs)
    elif encoder_kind == "splade":
        from irkit.models.splade import Splade

        enc = Splade(name)
        enc.encode(docs[:4])
        _, wall, cpu = timed(enc.encode, docs)
    if encoder_kind is not None:
        out |= {"encode_docs_per_s": len(docs) / wall, "encode_docs_per_cpu_s": len(docs) / cpu}
    pairs = sum(len(d) for _, d in items)
    _, wall, cpu = timed(lambda pairs: [stage.score(q, d) for q, d in pairs], items)
    out |= {"pairs": pairs, "rerank_pairs_per_s": pairs / wall, "rerank_pairs_per_cpu_s": pairs / cpu}
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def describe(row: dict[str, Any]) -> str:
    """One line of a model's figures; a use the model has not is left out."""
    parts = []
    if "encode_docs_per_s" in row:
        parts.append(f"encode {row['encode_docs_per_s']:.1f} docs/s ({row['encode_docs_per_cpu_s']:.1f} per CPU-s)")
    parts.append(f"rerank {row['rerank_pairs_per_s']:.1f} pairs/s ({row['rerank_pairs_per_cpu_s']:.1f} per CPU-s)")
    if row.get("index_bytes_per_doc"):
        parts.append(f"index {row['index_bytes_per_doc']:.0f} B/doc")
    return ", ".join([*parts, f"peak memory {row['peak_rss_gib']:.2f} GiB"])


def lucene_bytes_per_doc(path: Path) -> float | None:
    """Size of the Lucene index inside an irkit index (``lucene/``) per document of its manifest."""
    from irkit.index.manifest import read_manifest

    lucene = path / "lucene"
    if not lucene.is_dir():
        return None
    return sum(f.stat().st_size for f in lucene.rglob("*") if f.is_file()) / read_manifest(path)["doc_count"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--docs", type=int, default=96, help="passages encoded, and candidates per query (default 96)")
    ap.add_argument("--queries", type=int, default=2, help="DL19 queries reranked (default 2)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "DOCS", "QUERIES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        import json

        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return 0
    from irkit.models.fetch import SOURCES, is_fetched

    setup = machine(docs=args.docs, queries=args.queries)
    rows = []
    for name in args.models:
        if name in SOURCES and not is_fetched(name):
            print(f"{name}: not fetched (irkit models fetch {name}); skipped")
            continue
        row = run_child(__file__, name, str(args.docs), str(args.queries))
        if name in LUCENE:
            row["index_bytes_per_doc"] = lucene_bytes_per_doc(LUCENE[name])
        rows.append(row)
        print(f"{name}: {describe(row)}", flush=True)
    bm25 = lucene_bytes_per_doc(LUCENE["bm25"])
    rows.append({"model": "bm25", "index_bytes_per_doc": bm25})
    print(f"bm25: index {bm25 or 0:.0f} B/doc (positions, document vectors and raw text)")
    finish(setup, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
