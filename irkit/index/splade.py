"""Learned-sparse (SPLADE) first stage: documents encoded once into term weights, in a Lucene impact index.

Each document's SPLADE weights (:class:`irkit.models.splade.Splade`) are quantised to
integer impacts, ``round(scale * weight)`` with zeros dropped (``scale = 100`` as in
Pyserini's and Anserini's SPLADE regressions), written as Anserini ``JsonVectorCollection``
lines and indexed with ``IndexCollection -impact -pretokenized``: each term's frequency is
its impact, so an impact search with integer query weights scores a document by the dot
product of the two quantised vectors. Encoding is checkpointed every ``chunk_size``
documents as ``.jsonl`` shards in a work directory beside the target, so a killed build
resumes where it stopped and indexes the same vectors. A document none of whose weights
survives quantisation cannot match any query; Lucene leaves it out (counted in the
manifest as ``empty_documents``), and the DocStore still holds it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from irkit.data.io import atomic_path
from irkit.errors import IrkitError
from irkit.index.lucene import LUCENE_DIR, LuceneIndex, index_collection
from irkit.index.manifest import (
    DOCSTORE,
    build_docstore,
    building,
    check_counts,
    docs_of,
    encode_in_chunks,
    exclusive,
    reset_stale_work,
    work_dir,
    write_manifest,
)

if TYPE_CHECKING:
    from irkit.models.splade import Splade

SCALE = 100.0
COLLECTION = "collection"  # the work directory's folder of JsonVectorCollection shards (Anserini reads it all)
ANSERINI_FLAGS = ("-impact", "-pretokenized", "-quiet")
QUANTISATION = "round(scale * weight), zeros dropped (documents and queries)"


class SpladeIndex(LuceneIndex):
    """A loaded SPLADE impact index: the Lucene index path, its DocStore and manifest (model, scale)."""

    kind = "splade"

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    @property
    def scale(self) -> float:
        return float(self.manifest["scale"])

    def encoder(self) -> Splade:
        """The SPLADE model the documents were encoded with, at the same token cap: queries must use it too."""
        from irkit.models.splade import Splade

        return Splade(self.model, max_length=int(self.manifest["build"]["max_length"]))

    def __repr__(self) -> str:
        return f"SpladeIndex({str(self.path)!r}, {len(self)} docs, {self.model}, scale {self.scale:g})"


@exclusive
def build_splade_index(
    corpus_or_docs: object,
    out_dir: str | Path,
    model: str = "splade-tiny",
    scale: float = SCALE,
    batch_size: int = 32,
    max_length: int = 256,
    chunk_size: int = 2048,
    threads: int = 2,
    overwrite: bool = False,
    show_progress: bool = True,
) -> SpladeIndex:
    """Encode a corpus with SPLADE and write a Lucene impact index directory at ``out_dir``.

    ``corpus_or_docs`` is a ``corpus.jsonl`` path, a BEIR directory, a Dataset or an iterable
    of ``Doc``; ``model`` a registered SPLADE model (``splade-tiny``) or a masked-LM folder;
    impacts are ``round(scale * weight)``. A build killed part-way resumes from its last
    ``chunk_size`` checkpoint when rerun with the same arguments; ``threads`` index in Lucene.
    """
    out = Path(out_dir)
    check_counts(chunk_size=chunk_size, batch_size=batch_size, max_length=max_length, threads=threads)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not (math.isfinite(scale) and scale > 0):
        raise IrkitError(f"scale must be a finite number > 0, got {scale!r}")
    work = work_dir(out)
    shards_dir = work / COLLECTION
    try:
        shards_dir.mkdir(parents=True, exist_ok=True)
        store, fingerprint = build_docstore(work / DOCSTORE, docs_of(corpus_or_docs))
        from irkit.models.splade import Splade

        encoder = Splade(model, max_length=max_length)
    except BaseException as e:
        if isinstance(e, IrkitError) or not any(shards_dir.glob("vectors-*.jsonl")):
            shutil.rmtree(work, ignore_errors=True)  # user error, or nothing encoded yet: nothing to resume
        raise
    key = {
        "model": encoder.name,
        "scale": float(scale),
        "max_length": max_length,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "corpus_sha256": fingerprint,
        "doc_count": len(store),
    }
    reset_stale_work(work, key, f"{COLLECTION}/vectors-*.jsonl")
    for leftover in shards_dir.glob(".*"):  # a temporary shard of a killed run: Anserini would read it too
        leftover.unlink()

    docids = store.docids()
    nonempty: dict[Path, int] = {}  # documents with at least one weight, per shard (Lucene indexes only those)

    def valid(shard: Path, chunk: list[str]) -> bool:
        count = _shard_nonempty(shard, chunk)
        if count is not None:
            nonempty[shard] = count
        return count is not None

    def encode(shard: Path, chunk: list[str]) -> None:
        texts = [d.contents for d in store.get_many(chunk)]
        vectors = encoder.terms(texts, scale=scale, batch_size=batch_size, show_progress=show_progress)
        with atomic_path(shard) as tmp:
            tmp.write_text(
                "".join(
                    json.dumps({"id": d, "vector": v}, ensure_ascii=False) + "\n"
                    for d, v in zip(chunk, vectors, strict=True)
                ),
                encoding="utf-8",
            )
        nonempty[shard] = sum(1 for v in vectors if v)

    encode_in_chunks(shards_dir, ".jsonl", docids, chunk_size, valid, encode, f"encode {out.name}", show_progress)
    indexed = sum(nonempty.values())
    with building(out, overwrite) as tmp:
        index_collection("JsonVectorCollection", shards_dir, tmp / LUCENE_DIR, ANSERINI_FLAGS, threads, indexed, out)
        shutil.copy2(work / DOCSTORE, tmp / DOCSTORE)
        write_manifest(
            tmp,
            {
                "type": "splade",
                "model": encoder.name,
                "scale": float(scale),
                "quantisation": QUANTISATION,
                "doc_count": len(docids),
                "empty_documents": len(docids) - indexed,
                "corpus_sha256": fingerprint,
                "build": {
                    "batch_size": batch_size,
                    "max_length": max_length,
                    "chunk_size": chunk_size,
                    "threads": threads,
                    "anserini_flags": list(ANSERINI_FLAGS),
                },
            },
        )
    shutil.rmtree(work, ignore_errors=True)
    return SpladeIndex.load(out)


def _shard_nonempty(path: Path, docids: list[str]) -> int | None:
    """How many non-empty vectors a checkpoint shard holds, if it is one this build would have written
    (one line per document of ``docids``, in order, each a map of terms to positive integers); else None."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if [r.get("id") if isinstance(r, dict) else None for r in records] != docids:
        return None
    vectors = [r.get("vector") for r in records]
    for v in vectors:
        if not isinstance(v, dict) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in v.values()
        ):
            return None
    return sum(1 for v in vectors if v)
