"""CUR indexes (ANNCUR): a cross-encoder's exact scores of anchor queries against every item.

The expensive part, ``R = CE(anchor queries, items)`` (k_q × N pairs), runs through the
shared resumable runner (:class:`irkit.pipeline.runner.Runner`): the cross-encoder reranks
a candidate list holding every item for each anchor query, one shard of queries at a time,
each finished query fsync'd to a checkpoint in the work directory beside the target, locally
or on a Ray actor pool. A killed build rerun with the same arguments resumes from the last
finished query and writes the same files. ``E = pinv(R[:, anchors]) @ R`` for the default
``k_i`` anchor items is stored too; other ``k_i`` are derived from ``R`` when asked for
(:meth:`CURIndex.embeddings`). The math is in :mod:`irkit.models.cur`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irkit.data.docstore import DocStore
from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.index.manifest import DOCSTORE, build_docstore, building, docs_of, read_manifest, work_dir, write_manifest
from irkit.models.cur import RCOND, item_embeddings, sample_items

if TYPE_CHECKING:
    from irkit.rerank.cross_encoder import CrossEncoder

SCORES = "scores.npy"  # R: float32, anchor queries × items (docstore row order)
EMBEDDINGS = "embeddings.npy"  # E: float32, k_i × items


class CURIndex:
    """A loaded CUR index: the score matrix ``R``, the default anchor items and their ``E``, the DocStore."""

    def __init__(self, path: Path, manifest: dict[str, Any], docstore: DocStore) -> None:
        self.path, self.manifest, self.docstore = path, manifest, docstore
        self.docids: list[str] = docstore.docids()
        self.scores: np.ndarray = np.load(path / SCORES)
        if self.scores.shape != (len(manifest["anchor_queries"]), len(self.docids)):
            raise IrkitError(
                f"{SCORES} has shape {self.scores.shape}, expected {len(manifest['anchor_queries'])} anchor queries "
                f"x {len(self.docids)} documents",
                path=path,
            )
        rows = {d: i for i, d in enumerate(self.docids)}
        anchors = np.array([rows[d] for d in manifest["anchor_items"]], dtype=np.int64)
        key = (len(anchors), int(manifest["seed"]), float(manifest["rcond"]))
        self._cache: dict[tuple[int, int, float], tuple[np.ndarray, np.ndarray]] = {
            key: (anchors, np.load(path / EMBEDDINGS))
        }

    @classmethod
    def load(cls, path: str | Path, verify: bool = False) -> CURIndex:
        """Open an index directory, checking its manifest (``verify``: hash every file, not only changed ones)."""
        path = Path(path)
        manifest = read_manifest(path, "cur", verify=verify)
        return cls(path, manifest, DocStore(path / DOCSTORE))

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    @property
    def k_i(self) -> int:
        return len(self.manifest["anchor_items"])

    def __len__(self) -> int:
        return len(self.docids)

    def __repr__(self) -> str:
        return f"CURIndex({str(self.path)!r}, {len(self)} docs, {self.scores.shape[0]} anchor queries, {self.model})"

    def cross_encoder(self, batch_size: int = 32) -> CrossEncoder:
        """The cross-encoder ``R`` was computed with (same model and max_length): queries must use it too."""
        from irkit.rerank.cross_encoder import CrossEncoder

        return CrossEncoder(self.model, max_length=int(self.manifest["max_length"]), batch_size=batch_size)

    def embeddings(
        self, k_i: int | None = None, seed: int | None = None, rcond: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(anchor rows, E)`` for ``k_i`` anchor items drawn with ``seed``: the stored ones, else derived from R."""
        key = (
            self.k_i if k_i is None else int(k_i),
            int(self.manifest["seed"]) if seed is None else int(seed),
            float(self.manifest["rcond"]) if rcond is None else float(rcond),
        )
        if key not in self._cache:
            anchors = sample_items(len(self), key[0], key[1])
            self._cache[key] = (anchors, item_embeddings(self.scores, anchors, key[2]))
        return self._cache[key]


def score_matrix(
    queries: Queries,
    docstore: DocStore,
    cross_encoder: CrossEncoder,
    checkpoint: str | Path | None = None,
    executor: str = "local",
    workers: int = 2,
    shard_size: int = 1,
    show_progress: bool = True,
    address: str | None = None,
) -> np.ndarray:
    """Exact scores (float32, queries × documents in docstore order) of every query against every document.

    Run by the resumable runner: each query reranks the whole docstore with ``cross_encoder``;
    finished queries are kept in ``checkpoint`` (a rerun resumes there) and ``executor="ray"``
    spreads the shards over ``workers`` Ray actors (a local cluster unless ``address`` names one).
    """
    from irkit.pipeline.runner import Runner

    docids = docstore.docids()
    zeros = np.zeros(len(docids))
    candidates = Ranking({q: (docids, zeros) for q in queries}, queries, docstore)
    runner = Runner(
        cross_encoder,
        checkpoint,
        executor=executor,
        workers=workers,
        shard_size=shard_size,
        progress=show_progress,
        address=address,
    )
    ranked = runner.run(candidates)
    column = {d: i for i, d in enumerate(docids)}
    out = np.zeros((len(queries), len(docids)), dtype=np.float32)
    for i, q in enumerate(queries):
        ids, scores = ranked[q]
        out[i, [column[d] for d in ids]] = scores
    return out


def anchor_query_set(
    anchor_queries: str | Path | Queries, split: str = "train", limit: int | None = None, seed: int = 0
) -> Queries:
    """The anchor queries: Queries, a queries file, or a dataset's ``split`` queries; ``limit`` of them seeded."""
    if isinstance(anchor_queries, Queries):
        queries = anchor_queries
    elif Path(anchor_queries).is_file():
        from irkit.data.io import read_queries

        queries = read_queries(anchor_queries)
    else:
        from irkit.data.datasets import load_dataset

        queries = load_dataset(anchor_queries, split).queries
    if len(queries) == 0:
        raise IrkitError("no anchor queries", path=None if isinstance(anchor_queries, Queries) else anchor_queries)
    if limit is not None and limit < len(queries):
        qids = list(queries)
        queries = queries.subset(qids[i] for i in sample_items(len(qids), limit, seed))
    return queries


def build_cur_index(
    corpus_or_docs: object,
    out_dir: str | Path,
    anchor_queries: str | Path | Queries | None = None,
    anchor_split: str = "train",
    num_anchor_queries: int | None = None,
    model: str | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    k_i: int = 100,
    seed: int = 0,
    rcond: float = RCOND,
    shard_size: int = 1,
    executor: str = "local",
    workers: int = 2,
    address: str | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> CURIndex:
    """Score anchor queries against every document with a cross-encoder and write a CUR index at ``out_dir``.

    ``anchor_queries`` is a queries file (BEIR ``queries.jsonl`` or ``qid<TAB>query``), a
    dataset (BEIR directory or name: its ``anchor_split`` queries) or Queries;
    ``num_anchor_queries`` keeps a seeded sample of them (k_q). ``model`` is the cross-encoder
    (default: irkit's bundled one, at its trained ``max_length``); ``k_i`` anchor items are
    drawn with ``seed`` for the stored ``E``. The k_q × N scores are checkpointed per
    ``shard_size`` queries: rerun the same command after a crash to resume;
    ``executor="ray"`` scores shards on ``workers`` Ray actors (a local cluster unless ``address`` names one).
    """
    from irkit.pipeline.config import to_dict
    from irkit.pipeline.runner import fingerprint
    from irkit.rerank.cross_encoder import CrossEncoder

    out = Path(out_dir)
    if anchor_queries is None:
        raise IrkitError("a cur index needs anchor queries (--anchor-queries FILE or DATASET)")
    if out.exists() and not overwrite:
        raise IrkitError("output exists; choose another path or pass overwrite=True (--overwrite)", path=out)
    if k_i < 1 or shard_size < 1:
        raise IrkitError(f"k_i and shard_size must be >= 1, got {k_i} and {shard_size}")
    queries = anchor_query_set(anchor_queries, anchor_split, num_anchor_queries, seed)
    ce = CrossEncoder(model, max_length=max_length, batch_size=batch_size)
    work = work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    try:
        store, corpus_sha = build_docstore(work / DOCSTORE, docs_of(corpus_or_docs))
        if k_i > len(store):
            raise IrkitError(f"k_i = {k_i} anchor items, but the corpus has only {len(store)} documents")
    except BaseException:
        if not any(work.glob("scores-*")):  # nothing scored yet: nothing to resume
            shutil.rmtree(work, ignore_errors=True)
        raise
    # the checkpoint is named by everything its scores depend on; one of another job is stale
    job = [corpus_sha, fingerprint(queries), to_dict(ce), shard_size]
    ckpt = work / f"scores-{hashlib.sha256(json.dumps(job).encode()).hexdigest()[:16]}"
    for old in work.glob("scores-*"):
        if old != ckpt:
            shutil.rmtree(old, ignore_errors=True)
    scores = score_matrix(queries, store, ce, ckpt, executor, workers, shard_size, show_progress, address)
    anchors = sample_items(len(store), k_i, seed)
    embeddings = item_embeddings(scores, anchors, rcond)
    docids = store.docids()

    with building(out, overwrite) as tmp:
        np.save(tmp / SCORES, scores)
        np.save(tmp / EMBEDDINGS, embeddings)
        shutil.copy2(work / DOCSTORE, tmp / DOCSTORE)
        write_manifest(
            tmp,
            {
                "type": "cur",
                "model": ce.model_name,
                "max_length": ce.max_length,
                "doc_count": len(docids),
                "corpus_sha256": corpus_sha,
                "anchor_queries": list(queries),
                "anchor_items": [docids[i] for i in anchors],
                "seed": seed,
                "rcond": rcond,
                "cross_encoder_calls": int(scores.size),
                "build": {"batch_size": batch_size, "shard_size": shard_size, "anchor_split": anchor_split},
            },
        )
    shutil.rmtree(work, ignore_errors=True)
    return CURIndex.load(out)
