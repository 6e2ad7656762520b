"""What every Lucene-backed index kind (BM25, SPLADE) shares: the loaded directory, and Anserini's
``IndexCollection`` run through irkit's JVM.

One place for the arguments every kind passes (absolute paths: the JVM resolves relative
ones against the directory it started in), the check that Lucene indexed what it was given,
and the removal of the writer's lock file, which readers never need.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

from irkit.data.docstore import DocStore
from irkit.errors import IrkitError
from irkit.index.manifest import DOCSTORE, read_manifest

LUCENE_DIR = "lucene"
# Lucene's in-memory indexing buffer, flushed to a segment when full. Anserini's default is 4 GiB,
# so a large build's memory grows with the corpus up to that; 512 MiB keeps it bounded.
WRITER_BUFFER_MB = 512


class LuceneIndex:
    """A loaded Lucene index directory of kind ``kind``: the Lucene index path, its DocStore and manifest."""

    kind: ClassVar[str]

    def __init__(self, path: Path, manifest: dict[str, Any], docstore: DocStore) -> None:
        self.path, self.manifest, self.docstore = path, manifest, docstore
        # absolute: the JVM resolves relative paths against its own start directory, not Python's cwd
        self.lucene_dir = path.resolve() / LUCENE_DIR

    @classmethod
    def load(cls, path: str | Path, verify: bool = False) -> Self:
        """Open an index directory, checking its manifest (``verify``: hash every file, not only changed ones)."""
        path = Path(path)
        manifest = read_manifest(path, cls.kind, verify=verify)
        return cls(path, manifest, DocStore(path / DOCSTORE))

    def __len__(self) -> int:
        return int(self.manifest["doc_count"])


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
        *("-threads", str(threads), "-memoryBuffer", str(WRITER_BUFFER_MB)),
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
