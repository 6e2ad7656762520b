"""Dense FAISS indexes: encode a corpus with a bi-encoder, resumably, into any ``index_factory`` index.

Vectors are L2-normalised and searched by inner product (cosine). Encoding is
checkpointed every ``chunk_size`` documents as ``.npy`` shards in a work directory
beside the target, so a killed build resumes where it stopped and gives the same index.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

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

INDEX_FILE = "index.faiss"
METRIC = "inner_product"
_TRAIN_MAX = 200_000  # vectors used to train IVF/PQ quantisers (the first ones, for determinism)


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
        if len(self.docids) != index.ntotal:
            raise IrkitError(
                f"index has {index.ntotal} vectors but its docstore has {len(self.docids)} docs", path=path
            )

    @classmethod
    def load(cls, path: str | Path, verify: bool = False) -> DenseIndex:
        """Open an index directory, checking its manifest (``verify``: hash every file, not only changed ones)."""
        path = Path(path)
        manifest = read_manifest(path, "dense", verify=verify)
        try:
            index = _faiss().read_index(str(path / INDEX_FILE))
        except RuntimeError as e:
            raise IrkitError(f"FAISS cannot read the index: {_faiss_reason(e)}", path=path) from None
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


@exclusive
def build_dense_index(
    corpus_or_docs: object,
    out_dir: str | Path,
    model: str = "minilm",
    factory: str = "Flat",
    batch_size: int = 32,
    max_length: int = 256,
    chunk_size: int = 2048,
    overwrite: bool = False,
    show_progress: bool = True,
) -> DenseIndex:
    """Encode a corpus and write a dense index directory at ``out_dir``.

    ``corpus_or_docs`` is a ``corpus.jsonl`` path, a BEIR directory, a Dataset or an
    iterable of ``Doc``; ``factory`` is any FAISS ``index_factory`` string (``Flat``,
    ``HNSW32``, ``IVF256,PQ32`` ...; trained on the corpus when it needs training).
    A build killed part-way resumes from its last ``chunk_size`` checkpoint when rerun
    with the same arguments.
    """
    from irkit.models.encoder import BiEncoder

    out = Path(out_dir)
    check_counts(chunk_size=chunk_size, batch_size=batch_size, max_length=max_length)
    work = work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    try:
        store, fingerprint = build_docstore(work / DOCSTORE, docs_of(corpus_or_docs))
        encoder = BiEncoder(model, max_length=max_length)
        # reject a bad factory string, or one the corpus is too small to train, before encoding
        probe = make_faiss_index(encoder.dim, factory)
        if not probe.is_trained and len(store) < _TRAIN_MAX:
            rng = np.random.default_rng(0)
            _train(probe, rng.standard_normal((len(store), encoder.dim), dtype=np.float32), factory)
    except BaseException as e:
        if isinstance(e, IrkitError) or not any(work.glob("vectors-*.npy")):
            shutil.rmtree(work, ignore_errors=True)  # user error, or nothing encoded yet: nothing to resume
        raise
    key = {
        "model": encoder.name,
        "document_prefix": encoder.document_prefix,
        "max_length": max_length,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "corpus_sha256": fingerprint,
        "doc_count": len(store),
    }
    reset_stale_work(work, key, "vectors-*.npy")

    docids = store.docids()

    def encode(shard: Path, chunk: list[str]) -> None:
        texts = [d.contents for d in store.get_many(chunk)]
        _save_npy(shard, encoder.encode_documents(texts, batch_size=batch_size))

    shards = encode_in_chunks(
        work,
        ".npy",
        docids,
        chunk_size,
        lambda shard, chunk: _valid_shard(shard, len(chunk), encoder.dim),
        encode,
        f"encode {out.name}",
        show_progress,
    )

    index = make_faiss_index(encoder.dim, factory)
    if not index.is_trained:
        _train(index, _first_vectors(shards, _TRAIN_MAX), factory)
    for shard in shards:
        index.add(np.load(shard))

    with building(out, overwrite) as tmp:
        _faiss().write_index(index, str(tmp / INDEX_FILE))
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
                "build": {"batch_size": batch_size, "max_length": max_length, "chunk_size": chunk_size},
            },
        )
    shutil.rmtree(work, ignore_errors=True)
    return DenseIndex.load(out)


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


def _first_vectors(shards: list[Path], limit: int) -> np.ndarray:
    parts, n = [], 0
    for shard in shards:
        if n >= limit:
            break
        parts.append(np.load(shard)[: limit - n])
        n += len(parts[-1])
    return np.concatenate(parts)
