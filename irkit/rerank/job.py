"""Batch reranking of a TREC run file with a cross-encoder: checkpointed, resumable, in-process or on Ray Data.

Each query is scored on its own (its pairs batched by length), so a query's scores do not
depend on which other queries ran with it: a resumed job, a Ray job and an in-process job
write the same run file. Finished queries are appended to ``results.jsonl`` in the
checkpoint directory (one fsync'd line each); a rerun skips them, and the output run is
written atomically once every query is done.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.docstore import DocStore
from irkit.data.io import read_corpus, read_queries, read_run, write_run
from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError

EXECUTORS = ("local", "ray")
RESULTS = "results.jsonl"
META = "job.json"
DOCSTORE = "docstore.sqlite"


@dataclass
class RerankJob:
    """What to rerank and how; ``run()`` does it. Paths may be strings."""

    run: Path
    corpus: Path
    topics: Path
    model: str
    out: Path
    batch_size: int = 32
    max_length: int = 512
    executor: str = "local"
    workers: int = 2
    checkpoint_dir: Path | None = None
    progress: bool = True
    _own_checkpoint: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.run, self.corpus, self.topics, self.out = map(Path, (self.run, self.corpus, self.topics, self.out))
        if self.executor not in EXECUTORS:
            raise IrkitError(f"unknown executor {self.executor!r}; choose one of {', '.join(EXECUTORS)}")
        if self.checkpoint_dir is None:
            self.checkpoint_dir = self.out.with_name(self.out.name + ".ckpt")
            self._own_checkpoint = True
        self.checkpoint_dir = Path(self.checkpoint_dir)

    def docstore(self) -> DocStore:
        """The corpus as a DocStore: a ``.sqlite`` store as given, else built once into the checkpoint dir."""
        if self.corpus.suffix in (".sqlite", ".db"):
            return DocStore(self.corpus)
        path = self.checkpoint_dir / DOCSTORE
        if path.is_file():
            return DocStore(path)
        if not self.corpus.is_file():
            raise IrkitError("corpus file not found", path=self.corpus)
        return DocStore.build(path, read_corpus(self.corpus))

    def _meta(self) -> dict[str, Any]:
        """What a checkpoint belongs to; refuse to mix results of different inputs or settings."""
        meta = {
            "run": _fingerprint(self.run),
            "corpus": _fingerprint(self.corpus),
            "topics": _fingerprint(self.topics),
            "model": self.model,
            "max_length": self.max_length,
        }
        path = self.checkpoint_dir / META
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old != meta:
                diff = sorted(k for k in meta if old.get(k) != meta[k])
                raise IrkitError(
                    f"checkpoint of a job with other {', '.join(diff)}; delete it or pick another --checkpoint-dir",
                    path=self.checkpoint_dir,
                )
        return meta

    def execute(self) -> Ranking:
        """Rerank every query of the run and write ``out``; resumes from the checkpoint directory."""
        fresh = not self.checkpoint_dir.exists()
        try:
            queries = read_queries(self.topics)
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            meta = self._meta()
            store = self.docstore()
            run = read_run(self.run, queries, docids=store)
        except IrkitError:
            if fresh:
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            raise
        (self.checkpoint_dir / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        results_path = self.checkpoint_dir / RESULTS
        done = load_checkpoint(results_path, run)
        todo = [q for q in run if q not in done]
        if done:
            print(f"resuming: {len(done)} of {len(run)} queries already reranked, {len(todo)} to go", file=sys.stderr)
        bar = _progress(len(run), len(done), self.progress)
        with open(results_path, "a", encoding="utf-8") as ckpt:
            for qid, docids, scores in self._score(todo, run, queries, store):
                ckpt.write(json.dumps({"qid": qid, "docids": docids, "scores": [float(s) for s in scores]}) + "\n")
                ckpt.flush()
                os.fsync(ckpt.fileno())
                done[qid] = (docids, np.asarray(scores, dtype=np.float64))
                bar.update(1)
        bar.close()
        out = Ranking.from_lists({q: done[q] for q in run}, queries.subset(run), store)
        write_run(out, self.out)
        self._clean()
        return out

    def _score(
        self, todo: list[str], run: Ranking, queries: Queries, store: DocStore
    ) -> Iterator[tuple[str, list[str], list[float]]]:
        if not todo:
            return
        if self.executor == "local":
            scorer = QueryScorer(self.model, self.max_length, self.batch_size, str(store.path))
            for qid in todo:
                yield qid, run[qid][0], scorer.score(queries[qid], run[qid][0])
            return
        items = [{"qid": q, "query": queries[q], "docids": run[q][0]} for q in todo]
        yield from _ray_scores(items, self, str(store.path))

    def _clean(self) -> None:
        """After success the checkpoint is spent; a default checkpoint dir goes entirely."""
        if self._own_checkpoint:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        else:
            for name in (RESULTS, META):
                (self.checkpoint_dir / name).unlink(missing_ok=True)


class QueryScorer:
    """Scores one query's candidates; built once per process (or per Ray actor)."""

    def __init__(self, model: str, max_length: int, batch_size: int, docstore: str) -> None:
        from irkit.rerank.cross_encoder import CrossEncoder

        self.ce = CrossEncoder(model, max_length=max_length, batch_size=batch_size)
        self.store = DocStore(docstore)

    def score(self, query: str, docids: list[str]) -> list[float]:
        texts = [d.contents for d in self.store.get_many(list(docids))]
        return self.ce.predict([(query, t) for t in texts]).tolist()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data ``map_batches`` entry: one row per query in, its scores out."""
        qids, docids, scores = [], [], []
        for qid, query, ids in zip(batch["qid"], batch["query"], batch["docids"], strict=True):
            ids = [str(d) for d in ids]
            qids.append(str(qid))
            docids.append(ids)
            scores.append(self.score(str(query), ids))
        return {"qid": qids, "docids": docids, "scores": scores}


def _ray_scores(items: list[dict[str, Any]], job: RerankJob, docstore: str) -> Iterator[tuple[str, list, list]]:
    """Shard the queries over Ray Data actors; results stream back as they finish."""
    try:
        import ray
    except ImportError:
        raise IrkitError("the ray executor needs Ray: pip install 'irkit[ray]'") from None
    started = not ray.is_initialized()
    if started:  # a local cluster for this job; a cluster the caller started is used as it is
        ray.init(num_cpus=job.workers, include_dashboard=False, log_to_driver=False)
    try:
        yield from _ray_map(ray, items, job, docstore)
    finally:
        if started:
            ray.shutdown()


def _ray_map(ray: Any, items: list[dict[str, Any]], job: RerankJob, docstore: str) -> Iterator[tuple[str, list, list]]:
    ds = ray.data.from_items(items).map_batches(
        QueryScorer,
        fn_constructor_kwargs={
            "model": job.model,
            "max_length": job.max_length,
            "batch_size": job.batch_size,
            "docstore": docstore,
        },
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=job.workers),
        num_cpus=1,
    )
    for row in ds.iter_rows():
        yield str(row["qid"]), [str(d) for d in row["docids"]], [float(s) for s in row["scores"]]


def load_checkpoint(path: Path, run: Ranking) -> dict[str, tuple[list[str], np.ndarray]]:
    """Finished queries from an append-only results file; a torn last line (a crash mid-write) is cut off."""
    done: dict[str, tuple[list[str], np.ndarray]] = {}
    if not path.is_file():
        return done
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    for n, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        try:
            rec = json.loads(line)
            qid, docids, scores = rec["qid"], rec["docids"], rec["scores"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise IrkitError(
                "corrupt checkpoint line; remove the checkpoint to start over", path=path, line=n
            ) from None
        if qid not in run or sorted(run[qid][0]) != sorted(docids) or len(docids) != len(scores):
            raise IrkitError(f"checkpoint query {qid!r} does not match the run", path=path, line=n)
        done[qid] = (docids, np.asarray(scores, dtype=np.float64))
    return done


def _fingerprint(path: Path) -> list[int] | None:
    """Size and modification time: cheap evidence that an input file is unchanged."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _progress(total: int, initial: int, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="rerank", unit="query", disable=not show)
