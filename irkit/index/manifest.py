"""Index directories: a ``manifest.json`` that describes and checksums them, and atomic publication.

An index is built into a hidden sibling ``.<name>.partial`` and renamed to ``<name>``
only once its manifest is written, so a crash never leaves a directory that loads.
Resumable work (encoded shards) lives in a second sibling ``.<name>.work`` until the
build succeeds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from irkit.data.docstore import Doc, DocStore
from irkit.data.io import read_json_object, valid_id
from irkit.errors import IrkitError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DOCSTORE = "docstore.sqlite"
_REQUIRED = ("format_version", "type", "irkit_version", "doc_count", "files")
F = TypeVar("F", bound=Callable[..., Any])


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
    manifest = _parse_manifest(root)
    if kind is not None and manifest["type"] != kind:
        raise IrkitError(f"expected a {kind} index, found a {manifest['type']!r} index", path=root)
    for rel, meta in manifest["files"].items():
        p = root / rel
        if not p.resolve().is_relative_to(root.resolve()):
            raise IrkitError(f"index file {rel!r} resolves outside the index directory", path=root / MANIFEST)
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


def check_counts(**values: object) -> None:
    """Refuse a build setting that is not an integer >= 1 (``chunk_size=0``, ``threads=True``), by name."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise IrkitError(f"{name} must be an integer >= 1, got {value!r}")


def reset_stale_work(work: Path, key: dict[str, Any], pattern: str) -> None:
    """Drop the checkpoints (files matching ``pattern`` under ``work``) of another corpus or other settings.

    ``key`` is everything the checkpoints depend on; it is kept in ``work/work.json``.
    """
    meta = work / "work.json"
    if meta.is_file():
        try:
            same = json.loads(meta.read_text(encoding="utf-8")) == key
        except json.JSONDecodeError:
            same = False
        if same:
            return
    for shard in work.glob(pattern):
        shard.unlink()
    meta.write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")


def encode_in_chunks(
    folder: Path,
    suffix: str,
    docids: list[str],
    chunk_size: int,
    valid: Callable[[Path, list[str]], bool],
    write: Callable[[Path, list[str]], None],
    desc: str,
    show_progress: bool,
    elsewhere: Callable[[list[tuple[Path, list[str]]]], Iterable[tuple[Path, list[str]]]] | None = None,
) -> list[Path]:
    """One checkpoint shard ``folder/vectors-NNNNNN{suffix}`` per ``chunk_size`` documents, resumably.

    A shard already on disk that ``valid(shard, chunk)`` accepts is kept; a damaged or foreign one
    is removed and written again by ``write(shard, chunk)``, which must write it atomically. With
    ``elsewhere`` the missing shards are all handed to it instead (e.g. Ray actors running ``write``);
    it yields each ``(shard, chunk)`` once written, and each is checked with ``valid``.
    Returns every shard, in document order.
    """
    from tqdm.auto import tqdm

    chunks = [docids[s : s + chunk_size] for s in range(0, len(docids), chunk_size)]
    shards = [folder / f"vectors-{i:06d}{suffix}" for i in range(len(chunks))]
    for shard, chunk in zip(shards, chunks, strict=True):
        if shard.is_file() and not valid(shard, chunk):
            shard.unlink()
    todo = [(shard, chunk) for shard, chunk in zip(shards, chunks, strict=True) if not shard.is_file()]
    done = len(docids) - sum(len(chunk) for _, chunk in todo)
    with tqdm(total=len(docids), initial=done, desc=desc, unit="doc", disable=not show_progress) as bar:
        if elsewhere is None:
            for shard, chunk in todo:
                write(shard, chunk)
                bar.update(len(chunk))
        else:
            for shard, chunk in elsewhere(todo):
                if not valid(shard, chunk):
                    raise IrkitError(
                        f"a worker wrote a damaged checkpoint shard for {len(chunk)} documents", path=shard
                    )
                bar.update(len(chunk))
    return shards


def _parse_manifest(root: Path) -> dict[str, Any]:
    """``root/manifest.json`` checked for the fields and types irkit writes, each listed file confined
    to ``root`` (no absolute path, no ``..``); not yet checked against the files themselves."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise IrkitError("not an irkit index: manifest.json is missing", path=root)
    manifest = read_json_object(mpath, "corrupt manifest")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise IrkitError(f"corrupt manifest: missing field(s) {missing}", path=mpath)
    version = manifest["format_version"]
    if not _is_int(version):
        raise IrkitError(f"corrupt manifest: format_version {version!r} is not an integer", path=mpath)
    if version != FORMAT_VERSION:
        raise IrkitError(f"index format {version} is not supported (expected {FORMAT_VERSION})", path=mpath)
    if not isinstance(manifest["type"], str) or not manifest["type"]:
        raise IrkitError(f"corrupt manifest: type {manifest['type']!r} is not a name", path=mpath)
    if not _is_int(manifest["doc_count"]) or manifest["doc_count"] < 0:
        raise IrkitError(f"corrupt manifest: doc_count {manifest['doc_count']!r} is not a count", path=mpath)
    files = manifest["files"]
    if not isinstance(files, dict):
        raise IrkitError("corrupt manifest: files is not a mapping", path=mpath)
    for rel, meta in files.items():
        parts = PurePosixPath(rel).parts
        if not rel or rel == MANIFEST or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
            raise IrkitError(f"corrupt manifest: file entry {rel!r} is not a path inside the index", path=mpath)
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str) and _is_int(meta.get("bytes"))):
            raise IrkitError(f"corrupt manifest: file entry {rel!r} lacks sha256 and bytes", path=mpath)
    return manifest


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def exclusive(build: F) -> F:
    """Decorate an index build function ``build(corpus, out_dir, ..., overwrite=False, ...)`` to run
    under ``claim(out_dir, overwrite)``: checked target, and one build at a time per ``out_dir``."""
    signature = inspect.signature(build)

    @functools.wraps(build)
    def locked(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with claim(bound.arguments["out_dir"], bound.arguments["overwrite"]):
            return build(*args, **kwargs)

    return locked  # type: ignore[return-value]


@contextlib.contextmanager
def claim(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Hold the build lock of ``out_dir`` for a whole build, after checking the target may be written.

    The lock is an exclusive ``fcntl`` lock on a hidden sibling ``.<name>.lock``, so a second
    build into the same directory fails at once instead of sharing the work and partial
    directories with the first. Index builders take it for their whole run (work directories
    included) with the ``exclusive`` decorator, and publish with ``building`` inside it.
    """
    import fcntl

    out_dir = Path(out_dir)
    check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = out_dir.parent / f".{out_dir.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IrkitError(
                f"another build is writing this index (it holds {lock.name}); wait for it or choose another path",
                path=out_dir,
            ) from None
        try:  # the previous holder removes the file when done: make sure we locked the one on disk now
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        check_target(out_dir, overwrite)  # another build may have published it while we waited
        yield out_dir
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output path irkit may not replace: any existing path without ``overwrite``, and with it
    anything but an empty directory or an irkit index whose manifest lists every file in it."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not overwrite:
        raise IrkitError("output exists; choose another path or pass overwrite=True (--overwrite)", path=out_dir)
    if out_dir.is_symlink() or not out_dir.is_dir():
        what = "a symbolic link" if out_dir.is_symlink() else "not a directory"
        raise IrkitError(f"output exists and is {what}; refusing to overwrite it", path=out_dir)
    if not any(out_dir.iterdir()):
        return
    try:
        listed = set(_parse_manifest(out_dir)["files"])
    except IrkitError as e:
        raise IrkitError(
            f"output exists and is not an irkit index ({e.message}); refusing to overwrite it", path=e.path
        ) from None
    unlisted = sorted(
        rel
        for top, dirs, files in os.walk(out_dir)
        for name in files + [d for d in dirs if Path(top, d).is_symlink()]
        if (rel := Path(top, name).relative_to(out_dir).as_posix()) not in listed and rel != MANIFEST
    )
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise IrkitError(
            f"output holds files its manifest does not list ({shown}); refusing to delete them", path=out_dir
        )


@contextlib.contextmanager
def building(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out_dir``; publish it as ``out_dir`` on success.

    The body must write ``manifest.json`` (``write_manifest``). On any error the
    temporary directory is removed, so nothing half-written is left behind. An existing
    ``out_dir`` is replaced only as ``check_target`` allows.
    """
    out_dir = Path(out_dir)
    check_target(out_dir, overwrite)
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
        if p.is_dir():  # BEIR's corpus.jsonl, or the gzip'd one its archives hold
            p = next((p / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (p / n).is_file()), p / "corpus.jsonl")
        if not p.is_file():
            raise IrkitError("corpus not found (expected a corpus.jsonl[.gz] file or a BEIR directory)", path=corpus)
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
        if not isinstance(d.docid, str) or not valid_id(d.docid):
            raise IrkitError(
                f"corpus item {i}: docid {d.docid!r} is empty or not a string, or holds whitespace or U+FEFF"
            )
        if d.docid in seen:
            raise IrkitError(f"corpus item {i}: duplicate docid {d.docid!r}")
        if not isinstance(d.title, str) or not isinstance(d.text, str):
            raise IrkitError(f"document {d.docid!r} (corpus item {i}): title and text must be strings")
        try:
            for part in d:
                part.encode("utf-8")
        except UnicodeEncodeError:
            raise IrkitError(f"document {d.docid!r} (corpus item {i}) holds a lone UTF-16 surrogate") from None
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
