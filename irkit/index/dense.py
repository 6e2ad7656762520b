"""Dense FAISS indexes: encode a corpus with a bi-encoder, resumably, into any ``index_factory`` index.

Vectors are L2-normalised and searched by inner product (cosine). Encoding is
checkpointed every ``chunk_size`` documents as ``.npy`` shards in a work directory
beside the target, so a killed build resumes where it stopped and gives the same index.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irkit._ray import check_executor
from irkit.data.docstore import DocStore
from irkit.data.io import atomic_path
from irkit.errors import IrkitError
from irkit.index.manifest import (
    DOCSTORE,
    build_docstore,
    building,
    check_counts,
    docs_of,
    encode_in_chunks,
    exclusive,
    read_manifest,
    reset_stale_work,
    work_dir,
    write_manifest,
)

if TYPE_CHECKING:
    from irkit.models.encoder import BiEncoder

INDEX_FILE = "index.faiss"
METRIC = "inner_product"
_TRAIN_MAX = 200_000  # the most vectors used to train IVF/PQ quantisers (a seeded sample of the corpus)
_POINTS_PER_CENTROID = 256  # FAISS k-means subsamples to this many points per centroid (its default)


def _faiss() -> Any:
    import faiss

    return faiss


def _faiss_reason(e: RuntimeError) -> str:
    """The human part of a FAISS C++ error (drops the function signature and source location)."""
    text = " ".join(str(e).split())
    return re.split(r"\.cpp:\d+: ", text)[-1].removeprefix("Error: ")


def make_faiss_index(dim: int, factory: str) -> Any:
    """An empty inner-product FAISS index from a factory string; a bad string is an IrkitError."""
    faiss = _faiss()
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise IrkitError(f"FAISS cannot build {factory!r} for dimension {dim}: {_faiss_reason(e)}") from None


def train_size(index: Any) -> int:
    """How many training vectors ``index`` can use: 256 per centroid of its largest k-means
    (the IVF lists, or a 256-entry PQ/SQ codebook), at most ``_TRAIN_MAX``; FAISS samples down to that itself."""
    ivf = _faiss().try_extract_index_ivf(index)
    centroids = max(256, int(ivf.nlist) if ivf is not None else 0)
    return min(_TRAIN_MAX, _POINTS_PER_CENTROID * centroids)


def _train(index: Any, vectors: np.ndarray, factory: str) -> None:
    try:
        index.train(vectors)
    except RuntimeError as e:
        raise IrkitError(f"FAISS cannot train {factory!r} on {len(vectors)} vectors: {_faiss_reason(e)}") from None


class DenseIndex:
    """A loaded dense index: FAISS index, DocStore (row ``i`` is ``docids[i]``) and manifest."""

    def __init__(self, path: Path, manifest: dict[str, Any], index: Any, docstore: DocStore) -> None:
        self.path, self.manifest, self.index, self.docstore = path, manifest, index, docstore
        self.docids: list[str] = docstore.docids()
        self._rows: dict[str, int] | None = None  # docid -> row, built on the first lookup
        if len(self.docids) != index.ntotal:
            raise IrkitError(
                f"index has {index.ntotal} vectors but its docstore has {len(self.docids)} docs", path=path
            )

    @classmethod
    def load(cls, path: str | Path, verify: bool = False, mmap: bool = False) -> DenseIndex:
        """Open an index directory, checking its manifest (``verify``: hash every file, not only changed ones).

        ``mmap=True`` maps the vectors (codes, HNSW graph, IVF lists) from the file instead of reading
        them into memory: the OS pages them in as searches touch them and shares them between processes.
        FAISS cannot map fast-scan codes (``PQ32x4fs``, ``IVF…,PQ…x4fs``): those are an IrkitError.
        """
        path = Path(path)
        manifest = read_manifest(path, "dense", verify=verify)
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        except RuntimeError as e:
            raise IrkitError(f"FAISS cannot read the index: {_faiss_reason(e)}", path=path) from None
        if mmap and (part := _unmappable(index)) is not None:
            raise IrkitError(
                f"FAISS cannot memory-map a {part} (factory {manifest.get('factory')!r}): it would be read into "
                "memory; load it without mmap, or build with a factory FAISS maps (Flat, HNSW, IVF…,PQ…, SQ8)",
                path=path,
            )
        return cls(path, manifest, index, DocStore(path / DOCSTORE))

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"DenseIndex({str(self.path)!r}, {len(self)} docs, {self.model}, {self.manifest['factory']})"

    def set_search_params(self, params: str) -> None:
        """FAISS search-time parameters, e.g. ``"nprobe=16"`` (IVF) or ``"efSearch=128"`` (HNSW)."""
        try:
            _faiss().ParameterSpace().set_index_parameters(self.index, params)
        except RuntimeError as e:
            raise IrkitError(f"search parameters {params!r} do not apply: {_faiss_reason(e)}", path=self.path) from None

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, rows)`` for each query vector; missing hits have row -1."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise IrkitError(
                f"query vectors have dimension {vectors.shape[-1]}, but this index holds {self.dim}-dimensional "
                f"vectors of model {self.model!r}",
                path=self.path,
            )
        return self.index.search(vectors, min(k, len(self)))

    def vectors(self) -> np.ndarray:
        """All stored vectors in row order (exact for Flat indexes; reconstructions otherwise)."""
        return self.index.reconstruct_n(0, len(self))

    def query_encoder(self, model: str | None = None) -> BiEncoder:
        """The encoder for this index's queries: ``model`` (default: the manifest's) at the length and
        backend the documents were encoded with. Another dimension or query prefix than the index was
        built for is an IrkitError (an index built before prefixes were recorded has none)."""
        from irkit.models.encoder import BiEncoder

        model = model or self.model
        build = self.manifest["build"]
        encoder = BiEncoder(model, max_length=int(build["max_length"]), backend=build.get("backend", "fp32"))
        if encoder.dim != self.dim:
            raise IrkitError(
                f"encoder {model!r} gives {encoder.dim}-dimensional vectors, but the index holds "
                f"{self.dim}-dimensional vectors of {self.model!r}",
                path=self.path,
            )
        expected = str(self.manifest.get("query_prefix", ""))
        if encoder.query_prefix != expected:
            raise IrkitError(
                f"encoder {model!r} prefixes queries with {encoder.query_prefix!r}, but this index was built "
                f"for queries prefixed with {expected!r} (see its manifest)",
                path=self.path,
            )
        return encoder

    def lookup(self, docids: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of the ``docids`` this index holds, and a mask of which those are (None: none).

        Exact for Flat and HNSW…Flat; quantised factories give their reconstructions (an IVF index
        gets the direct map FAISS needs for that, in memory).
        """
        if self._rows is None:
            self._rows = {d: i for i, d in enumerate(self.docids)}
        rows = np.array([self._rows.get(d, -1) for d in docids], dtype=np.int64)
        found = rows >= 0
        if not found.any():
            return np.zeros((0, self.dim), dtype=np.float32), found
        faiss = _faiss()
        ivf = faiss.try_extract_index_ivf(self.index)
        try:
            if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
                ivf.make_direct_map()  # IVF lists reconstruct through it
            return self.index.reconstruct_batch(rows[found]), found
        except RuntimeError as e:
            raise IrkitError(f"FAISS cannot return the stored vectors: {_faiss_reason(e)}", path=self.path) from None


def _unmappable(index: Any) -> str | None:
    """The class of a part of ``index`` whose codes FAISS reads into memory even when asked to map them."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexFastScan | faiss.IndexIVFFastScan):
        return type(index).__name__
    for part in ("index", "base_index", "refine_index", "storage"):  # wrappers, refinement, HNSW storage
        child = getattr(index, part, None)
        if isinstance(child, faiss.Index) and (found := _unmappable(child)) is not None:
            return found
    return None


@exclusive
def build_dense_index(
    corpus_or_docs: object,
    out_dir: str | Path,
    model: str = "minilm",
    factory: str = "Flat",
    batch_size: int = 32,
    max_length: int = 256,
    chunk_size: int = 2048,
    executor: str = "local",
    workers: int = 2,
    address: str | None = None,
    backend: str = "fp32",
    overwrite: bool = False,
    show_progress: bool = True,
) -> DenseIndex:
    """Encode a corpus and write a dense index directory at ``out_dir``.

    ``corpus_or_docs`` is a ``corpus.jsonl`` path, a BEIR directory, a Dataset or an
    iterable of ``Doc``; ``factory`` is any FAISS ``index_factory`` string (``Flat``,
    ``HNSW32``, ``IVF256,PQ32`` ...; trained on a seeded sample of the corpus when it needs
    training). A build killed part-way resumes from its last ``chunk_size`` checkpoint when
    rerun with the same arguments. ``executor="ray"`` encodes the chunks on ``workers`` Ray
    actors (a local cluster unless ``address`` names one) into the same checkpoints, so the
    index is the same as the in-process one and either kind of build resumes the other.
    ``backend="int8"`` encodes with dynamically quantised linear layers (faster on CPUs; its
    quality cost is in eval/RESULTS.md); the manifest records it and ``Dense`` then encodes
    queries the same way.
    """
    from irkit.models.encoder import BiEncoder

    out = Path(out_dir)
    check_counts(chunk_size=chunk_size, batch_size=batch_size, max_length=max_length, workers=workers)
    check_executor(executor)
    work = work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    try:
        store, fingerprint = build_docstore(work / DOCSTORE, docs_of(corpus_or_docs))
        encoder = BiEncoder(model, max_length=max_length, backend=backend)
        # reject a bad factory string, or one the corpus is too small to train, before encoding
        probe = make_faiss_index(encoder.dim, factory)
        if not probe.is_trained and len(store) < train_size(probe):
            rng = np.random.default_rng(0)
            _train(probe, rng.standard_normal((len(store), encoder.dim), dtype=np.float32), factory)
    except BaseException as e:
        if isinstance(e, IrkitError) or not any(work.glob("vectors-*.npy")):
            shutil.rmtree(work, ignore_errors=True)  # user error, or nothing encoded yet: nothing to resume
        raise
    # int8 vectors differ from fp32 ones: recorded (and kept apart on resume) only when not fp32,
    # so fp32 manifests stay as they were
    quantised = {"backend": backend} if backend != "fp32" else {}
    key = {
        "model": encoder.name,
        "document_prefix": encoder.document_prefix,
        "max_length": max_length,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "corpus_sha256": fingerprint,
        "doc_count": len(store),
        **quantised,
    }
    reset_stale_work(work, key, "vectors-*.npy")

    docids = store.docids()
    elsewhere = None
    if executor == "ray":  # each actor loads the encoder once; the one here only checked the settings
        from irkit._ray import write_chunks

        remote = functools.partial(_open_shard_writer, str(work / DOCSTORE), model, max_length, batch_size, backend)
        elsewhere = functools.partial(write_chunks, make_writer=remote, workers=workers, address=address)
    shards = encode_in_chunks(
        work,
        ".npy",
        docids,
        chunk_size,
        lambda shard, chunk: _valid_shard(shard, len(chunk), encoder.dim),
        _shard_writer(store, encoder, batch_size, show_progress),
        f"encode {out.name}",
        show_progress,
        elsewhere,
    )

    index = make_faiss_index(encoder.dim, factory)
    if not index.is_trained:
        _train(index, _sample_vectors(shards, len(docids), train_size(index)), factory)
    for shard in shards:  # one shard in memory at a time
        index.add(np.load(shard))

    with building(out, overwrite) as tmp:
        _faiss().write_index(index, str(tmp / INDEX_FILE))
        del index
        shutil.copy2(work / DOCSTORE, tmp / DOCSTORE)
        write_manifest(
            tmp,
            {
                "type": "dense",
                "model": encoder.name,
                "dimension": encoder.dim,
                "metric": METRIC,
                "normalized": True,
                # asymmetric models: what the documents carried, and what queries must carry (Dense enforces it)
                "query_prefix": encoder.query_prefix,
                "document_prefix": encoder.document_prefix,
                "factory": factory,
                "doc_count": len(docids),
                "corpus_sha256": fingerprint,
                "build": {"batch_size": batch_size, "max_length": max_length, "chunk_size": chunk_size, **quantised},
            },
        )
    shutil.rmtree(work, ignore_errors=True)
    return DenseIndex.load(out)


def _shard_writer(
    store: DocStore, encoder: Any, batch_size: int, show_progress: bool = False
) -> Callable[[Path, list[str]], None]:
    """``write(shard, docids)``: encode those documents (one call, so batches do not depend on the executor).

    ``show_progress`` adds a per-batch bar: a checkpoint chunk of a large model takes half an hour on a CPU.
    """

    def write(shard: Path, chunk: list[str]) -> None:
        texts = [d.contents for d in store.get_many(chunk)]
        _save_npy(shard, encoder.encode_documents(texts, batch_size=batch_size, show_progress=show_progress))

    return write


def _open_shard_writer(
    docstore: str, model: str, max_length: int, batch_size: int, backend: str
) -> Callable[[Path, list[str]], None]:
    """The shard writer of a Ray actor, which opens the build's DocStore and loads the encoder itself."""
    from irkit.models.encoder import BiEncoder

    return _shard_writer(DocStore(docstore), BiEncoder(model, max_length=max_length, backend=backend), batch_size)


def _valid_shard(path: Path, rows: int, dim: int) -> bool:
    """Is a checkpoint shard one this build would have written: ``rows`` finite unit vectors of ``dim``?"""
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    return (
        vectors.dtype == np.float32
        and vectors.shape == (rows, dim)
        and bool(np.isfinite(vectors).all())
        and bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3))
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write a checkpoint shard atomically: present only when complete."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _sample_vectors(shards: list[Path], total: int, size: int) -> np.ndarray:
    """A seeded uniform sample of ``size`` of the ``total`` vectors (all if fewer), reading one shard at a time."""
    rows = np.arange(total) if total <= size else np.sort(np.random.default_rng(0).choice(total, size, replace=False))
    parts, start = [], 0
    for shard in shards:
        vectors = np.load(shard)
        lo, hi = np.searchsorted(rows, [start, start + len(vectors)])
        parts.append(vectors[rows[lo:hi] - start])
        start += len(vectors)
    return np.concatenate(parts)
