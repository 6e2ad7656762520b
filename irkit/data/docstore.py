"""DocStore: ``docid -> {title, text}`` on disk (SQLite), random access by docid or position."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from irkit.errors import IrkitError


class Doc(NamedTuple):
    docid: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """Title and text joined the way BEIR baselines index them."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


class DocStore:
    """A read-only SQLite document store. Picklable (reopens on first use), thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise IrkitError("docstore not found", path=self.path)
        self._local = threading.local()
        try:
            self._len = self._conn().execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise IrkitError(f"not a readable docstore ({e})", path=self.path) from None

    @classmethod
    def build(cls, path: str | Path, docs: Iterable[Doc], batch: int = 10_000) -> DocStore:
        """Write ``docs`` to a new store at ``path``; the file appears only when complete."""
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp)
        try:
            conn.execute(
                "CREATE TABLE docs (ord INTEGER PRIMARY KEY, docid TEXT UNIQUE NOT NULL, title TEXT, text TEXT)"
            )
            rows: list[tuple[int, str, str, str]] = []
            for i, d in enumerate(docs):
                rows.append((i, d.docid, d.title, d.text))
                if len(rows) >= batch:
                    conn.executemany("INSERT INTO docs VALUES (?,?,?,?)", rows)
                    rows.clear()
            conn.executemany("INSERT INTO docs VALUES (?,?,?,?)", rows)
            conn.commit()
        except sqlite3.IntegrityError as e:
            conn.close()
            tmp.unlink(missing_ok=True)
            raise IrkitError(f"duplicate docid while building docstore ({e})", path=path) from None
        except BaseException:
            conn.close()
            tmp.unlink(missing_ok=True)
            raise
        conn.close()
        os.replace(tmp, path)
        return cls(path)

    @classmethod
    def for_corpus(cls, corpus: str | Path) -> DocStore:
        """A store for a corpus file: a ``.sqlite`` store as it is; a ``.jsonl`` corpus built once into the cache.

        The cached copy is keyed by the corpus's absolute path, size and modification time,
        so a changed corpus gets a new store and jobs over the same corpus share one.
        """
        import hashlib

        from irkit.data.io import read_corpus
        from irkit.paths import cache_dir

        corpus = Path(corpus)
        if corpus.suffix in (".sqlite", ".db"):
            return cls(corpus)
        if not corpus.is_file():
            raise IrkitError("corpus file not found", path=corpus)
        st = corpus.stat()
        key = hashlib.sha256(f"{corpus.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:20]
        path = cache_dir("docstores") / f"{corpus.stem}-{key}.sqlite"
        if path.is_file():
            return cls(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls.build(path, read_corpus(corpus))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # a file: URI so the store opens read-only; as_uri escapes '#', '?' and '%' in the path
            uri = f"{self.path.absolute().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._local.conn = conn
        return conn

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "_len": self._len}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"DocStore({str(self.path)!r}, {self._len} docs)"

    def __len__(self) -> int:
        return self._len

    def __contains__(self, docid: object) -> bool:
        row = self._conn().execute("SELECT 1 FROM docs WHERE docid=?", (docid,)).fetchone()
        return row is not None

    def __iter__(self) -> Iterator[Doc]:
        for docid, title, text in self._conn().execute("SELECT docid, title, text FROM docs ORDER BY ord"):
            yield Doc(docid, title, text)

    def get(self, docid: str) -> Doc:
        row = self._conn().execute("SELECT docid, title, text FROM docs WHERE docid=?", (docid,)).fetchone()
        if row is None:
            raise IrkitError(f"docid {docid!r} is not in the docstore", path=self.path)
        return Doc(*row)

    def get_many(self, docids: list[str]) -> list[Doc]:
        """Documents for ``docids`` in the same order; a missing id raises naming it."""
        found: dict[str, Doc] = {}
        conn = self._conn()
        for start in range(0, len(docids), 500):
            chunk = docids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT docid, title, text FROM docs WHERE docid IN ({marks})", chunk):
                found[row[0]] = Doc(*row)
        for d in docids:
            if d not in found:
                raise IrkitError(f"docid {d!r} is not in the docstore", path=self.path)
        return [found[d] for d in docids]

    def docids(self) -> list[str]:
        """All docids in insertion order (position ``i`` is row ``i`` of a dense index)."""
        return [r[0] for r in self._conn().execute("SELECT docid FROM docs ORDER BY ord")]


class DocTexts(Mapping[str, str]):
    """``docid -> contents`` (title and text) of a DocStore, read on demand.

    A corpus-sized mapping that keeps no text in memory, for code that takes a ``Mapping``
    of texts (the tuning loop looks up only the documents it samples).
    """

    def __init__(self, store: DocStore) -> None:
        self.store = store

    def __getitem__(self, docid: str) -> str:
        try:
            return self.store.get(docid).contents
        except IrkitError:
            raise KeyError(docid) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.store.docids())

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, docid: object) -> bool:
        return docid in self.store
