"""Index directories: a ``manifest.json`` that describes and checksums them, and atomic publication.

An index is built into a hidden sibling ``.<name>.partial`` and renamed to ``<name>``
only once its manifest is written, so a crash never leaves a directory that loads.
Resumable work (encoded shards) lives in a second sibling ``.<name>.work`` until the
build succeeds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from irkit.data.docstore import Doc, DocStore
from irkit.data.io import read_json_object
from irkit.errors import IrkitError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DOCSTORE = "docstore.sqlite"
_REQUIRED = ("format_version", "type", "irkit_version", "doc_count", "files")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_checksums(root: Path) -> dict[str, dict[str, Any]]:
    """``relative path -> {sha256, bytes, mtime_ns}`` for every file under ``root`` except the manifest."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            st = p.stat()
            out[p.relative_to(root).as_posix()] = {
                "sha256": sha256_file(p),
                "bytes": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
    return out


def write_manifest(root: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Checksum ``root`` and write its manifest: ``info`` plus version, date and file checksums."""
    from irkit import __version__

    manifest = {
        "format_version": FORMAT_VERSION,
        **info,
        "irkit_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": file_checksums(root),
    }
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
    return manifest


def read_manifest(root: str | Path, kind: str | None = None, verify: bool = False) -> dict[str, Any]:
    """The manifest of index directory ``root``, checked against the files it lists.

    Opening is cheap: every listed file must exist with its recorded size, and only a file
    whose modification time differs from the manifest's is hashed (``verify=True`` hashes
    every file: ``irkit index info --verify``). Raises IrkitError naming the path for a
    missing directory or manifest, bad JSON, a missing field, a missing file, a size or
    checksum mismatch, or an index of another ``kind`` than asked for.
    """
    root = Path(root)
    if not root.is_dir():
        raise IrkitError("index directory not found", path=root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise IrkitError("not an irkit index: manifest.json is missing", path=root)
    manifest = read_json_object(mpath, "corrupt manifest")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise IrkitError(f"corrupt manifest: missing field(s) {missing}", path=mpath)
    if manifest["format_version"] != FORMAT_VERSION:
        raise IrkitError(
            f"index format {manifest['format_version']} is not supported (expected {FORMAT_VERSION})", path=mpath
        )
    if kind is not None and manifest["type"] != kind:
        raise IrkitError(f"expected a {kind} index, found a {manifest['type']!r} index", path=root)
    for rel, meta in manifest["files"].items():
        p = root / rel
        if not p.is_file():
            raise IrkitError(f"index file {rel!r} listed in the manifest is missing", path=root)
        if p.stat().st_size != meta["bytes"]:
            raise IrkitError(f"index file {rel!r} has {p.stat().st_size} bytes, manifest says {meta['bytes']}", path=p)
        changed = verify or p.stat().st_mtime_ns != meta.get("mtime_ns")
        if changed and sha256_file(p) != meta["sha256"]:
            raise IrkitError(f"index file {rel!r} does not match its manifest checksum (corrupt or modified)", path=p)
    return manifest


def work_dir(out_dir: Path) -> Path:
    """Where a build keeps resumable checkpoints for ``out_dir`` (a hidden sibling)."""
    return out_dir.parent / f".{out_dir.name}.work"


@contextlib.contextmanager
def building(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out_dir``; publish it as ``out_dir`` on success.

    The body must write ``manifest.json`` (``write_manifest``). On any error the
    temporary directory is removed, so nothing half-written is left behind.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise IrkitError("output exists; choose another path or pass overwrite=True (--overwrite)", path=out_dir)
    if out_dir.exists() and not (out_dir / MANIFEST).is_file() and any(out_dir.iterdir()):
        raise IrkitError("output exists and is not an irkit index; refusing to overwrite it", path=out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed build
    partial.mkdir()
    try:
        yield partial
        if not (partial / MANIFEST).is_file():
            raise RuntimeError("index build finished without writing a manifest")
        old = out_dir.parent / f".{out_dir.name}.old"
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(partial, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def docs_of(corpus: object) -> Iterator[Doc]:
    """Documents from a corpus argument: a ``corpus.jsonl`` path, a BEIR directory, a Dataset, or Docs."""
    from irkit.data.datasets import Dataset
    from irkit.data.io import read_corpus

    if isinstance(corpus, str | Path):
        p = Path(corpus)
        if p.is_dir():
            p = p / "corpus.jsonl"
        if not p.is_file():
            raise IrkitError("corpus not found (expected a corpus.jsonl file or a BEIR directory)", path=corpus)
        return read_corpus(p)
    if isinstance(corpus, Dataset):
        return corpus.docs() if corpus.corpus_path is not None else _checked(corpus.docs())
    if isinstance(corpus, Iterable):
        return _checked(corpus)
    raise IrkitError(f"a corpus is a path, a Dataset or an iterable of Doc, not {type(corpus).__name__}")


def _checked(docs: Iterable[object]) -> Iterator[Doc]:
    """Validate in-memory documents the way ``read_corpus`` validates a file (id named on error)."""
    seen: set[str] = set()
    for i, d in enumerate(docs):
        if not isinstance(d, Doc):
            raise IrkitError(f"corpus item {i} is a {type(d).__name__}, expected irkit.Doc(docid, title, text)")
        if not d.docid or d.docid in seen:
            raise IrkitError(f"corpus item {i}: {'duplicate' if d.docid else 'empty'} docid {d.docid!r}")
        if not (d.text or "").strip() and not (d.title or "").strip():
            raise IrkitError(f"document {d.docid!r} (corpus item {i}) has empty text")
        seen.add(d.docid)
        yield d


def build_docstore(path: Path, docs: Iterable[Doc]) -> tuple[DocStore, str]:
    """Write the DocStore and return it with a sha256 fingerprint of the corpus content."""
    h = hashlib.sha256()

    def hashed() -> Iterator[Doc]:
        for d in docs:
            for part in d:
                h.update(part.encode("utf-8"))
                h.update(b"\0")
            yield d

    store = DocStore.build(path, hashed())
    if len(store) == 0:
        path.unlink()
        raise IrkitError("the corpus is empty")
    return store, h.hexdigest()
