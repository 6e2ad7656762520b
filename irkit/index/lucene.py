"""Anserini's ``IndexCollection`` run through irkit's JVM, for every Lucene-backed index kind (BM25, SPLADE).

One place for the arguments every kind passes (absolute paths: the JVM resolves relative
ones against the directory it started in), the check that Lucene indexed what it was given,
and the removal of the writer's lock file, which readers never need.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from irkit.errors import IrkitError

LUCENE_DIR = "lucene"


def index_collection(
    collection: str, input_dir: Path, lucene_dir: Path, flags: Sequence[str], threads: int, expected: int, out: Path
) -> None:
    """Index the Anserini ``collection`` files in ``input_dir`` into ``lucene_dir``.

    ``expected`` is how many documents Lucene must hold afterwards; any other count (a line
    Anserini could not parse, for instance) is an IrkitError naming ``out``.
    """
    from irkit._java import autoclass

    args = [
        *("-collection", collection, "-generator", "DefaultLuceneDocumentGenerator"),
        *("-input", str(input_dir.absolute()), "-index", str(lucene_dir.absolute())),
        *("-threads", str(threads)),
        *flags,
    ]
    autoclass("io.anserini.index.IndexCollection").main(args)
    indexed = lucene_doc_count(lucene_dir)
    if indexed != expected:
        raise IrkitError(f"Lucene indexed {indexed} of {expected} documents; see the log above", path=out)
    (lucene_dir / "write.lock").unlink(missing_ok=True)


def lucene_doc_count(lucene_dir: Path) -> int:
    """How many documents the Lucene index at ``lucene_dir`` holds."""
    from irkit._java import autoclass

    reader = autoclass("io.anserini.index.IndexReaderUtils").getReader(str(lucene_dir.absolute()))
    try:
        return int(reader.numDocs())
    finally:
        reader.close()
