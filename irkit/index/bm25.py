"""BM25 (Lucene) indexes built with Anserini's ``IndexCollection``, as BEIR's "flat" baseline does.

Each document is indexed as one field, ``contents = title + " " + text``, with positions,
document vectors and raw text stored (the Pyserini BEIR regression settings).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from irkit.data.docstore import Doc
from irkit.index.lucene import LUCENE_DIR, LuceneIndex, index_collection
from irkit.index.manifest import (
    DOCSTORE,
    build_docstore,
    building,
    check_counts,
    docs_of,
    exclusive,
    work_dir,
    write_manifest,
)

_STORE_FLAGS = ("-storePositions", "-storeDocvectors", "-storeRaw", "-quiet")


class BM25Index(LuceneIndex):
    """A loaded BM25 index directory: the Lucene index path, its DocStore and manifest."""

    kind = "bm25"

    def __repr__(self) -> str:
        return f"BM25Index({str(self.path)!r}, {len(self)} docs)"


@exclusive
def build_bm25_index(
    corpus_or_docs: object,
    out_dir: str | Path,
    threads: int = 2,
    overwrite: bool = False,
    show_progress: bool = True,
) -> BM25Index:
    """Index a corpus for BM25 into the directory ``out_dir`` (Lucene index + DocStore + manifest).

    ``corpus_or_docs`` is a ``corpus.jsonl`` path, a BEIR directory, a Dataset or an
    iterable of ``Doc``. Lucene indexing is fast, so a killed build simply starts over.
    """
    out = Path(out_dir)
    check_counts(threads=threads)
    work = work_dir(out)
    shutil.rmtree(work, ignore_errors=True)
    collection = work / "collection"
    collection.mkdir(parents=True)
    try:
        with open(collection / "docs.jsonl", "w", encoding="utf-8") as f:
            docs = _progress(docs_of(corpus_or_docs), show_progress, out.name)
            store, fingerprint = build_docstore(work / DOCSTORE, _written(docs, f))
        with building(out, overwrite) as tmp:
            index_collection("JsonCollection", collection, tmp / LUCENE_DIR, [*_STORE_FLAGS], threads, len(store), out)
            shutil.copy2(work / DOCSTORE, tmp / DOCSTORE)
            write_manifest(
                tmp,
                {
                    "type": "bm25",
                    "doc_count": len(store),
                    "corpus_sha256": fingerprint,
                    "contents": "title + ' ' + text",
                    "analyzer": "Anserini default (English, Porter stemmer)",
                    "build": {"threads": threads, "anserini_flags": list(_STORE_FLAGS)},
                },
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BM25Index.load(out)


def _written(docs: Iterable[Doc], f: Any) -> Iterator[Doc]:
    """Pass documents through while writing them as Anserini JsonCollection lines."""
    for d in docs:
        f.write(json.dumps({"id": d.docid, "contents": d.contents}, ensure_ascii=False) + "\n")
        yield d


def _progress(docs: Iterator[Doc], show: bool, name: str) -> Iterator[Doc]:
    from tqdm.auto import tqdm

    return iter(tqdm(docs, desc=f"read {name}", unit="doc", disable=not show))
