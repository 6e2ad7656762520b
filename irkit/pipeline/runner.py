"""One runner for any stage or pipeline over many queries: sharded, checkpointed, resumable, local or on Ray.

The queries are cut into fixed shards (``shard_size`` queries, in input order) and the stage
runs on each shard on its own, so a query's result never depends on how the job was
interrupted or where it ran: a resumed job, a Ray job and an in-process job write the same
run file. Each finished shard is appended to ``results.jsonl`` in the checkpoint directory
(one line per query, flushed and fsync'd); a rerun skips what is there, a torn last line (a
crash mid-write) is cut off, and the output run is written atomically once every query is
done. ``job.json`` records what the checkpoint belongs to (the stage, a fingerprint of the
input, the shard size); a checkpoint of another job is refused unless it holds no finished
query, so a failed start never blocks the corrected command.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from irkit._ray import check_executor
from irkit.data.io import atomic_path, write_run
from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.pipeline.stage import Stage, StageInput, as_input

RESULTS = "results.jsonl"
JOB = "job.json"
FORMAT = 1


class Runner:
    """Run ``stage`` over many queries: ``Runner(pipe, checkpoint="ckpt").run(queries, out="run.trec")``.

    ``checkpoint`` is the directory of finished queries (default: ``OUT.ckpt`` next to ``out``,
    removed after success; with neither, nothing is checkpointed). ``executor="ray"`` runs the
    shards on a Ray Data actor pool of ``workers`` actors (a local cluster unless ``address``
    names one); each actor rebuilds the stage from its parameters.
    """

    def __init__(
        self,
        stage: Stage,
        checkpoint: str | Path | None = None,
        executor: str = "local",
        workers: int = 2,
        shard_size: int = 16,
        progress: bool = True,
        address: str | None = None,
    ) -> None:
        if not isinstance(stage, Stage):
            raise IrkitError(f"the runner runs a Stage, got {type(stage).__name__}")
        check_executor(executor)
        if workers < 1 or shard_size < 1:
            raise IrkitError(f"workers and shard_size must be >= 1, got {workers} and {shard_size}")
        if stage.produces != "ranking":
            raise IrkitError(f"the runner writes rankings, but {stage!r} produces {stage.produces}")
        self.stage, self.executor, self.workers, self.shard_size = stage, executor, workers, shard_size
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.progress, self.address = progress, address

    def run(self, inp: object, out: str | Path | None = None, tag: str = "irkit") -> Ranking:
        """Rank every query of ``inp`` (Queries, or a Ranking to rerank), resuming from the checkpoint."""
        x = as_input(inp)
        self.stage.check_input(x)
        ckpt, own = self.checkpoint, False
        if ckpt is None and out is not None:
            ckpt, own = Path(out).with_name(Path(out).name + ".ckpt"), True
        qids = list(x)
        shards = [qids[i : i + self.shard_size] for i in range(0, len(qids), self.shard_size)]
        done: dict[str, dict[str, Any]] = {}
        if ckpt is not None:
            done = _open_checkpoint(ckpt, self._job(x))
        todo = [s for s in shards if any(q not in done for q in s)]
        if done:
            print(f"resuming: {len(done)} of {len(qids)} queries already done", file=sys.stderr)
        bar = _progress(len(qids), len(done), self.progress)
        docstore = getattr(x, "docstore", None)
        log = open(ckpt / RESULTS, "a", encoding="utf-8") if ckpt is not None else None  # noqa: SIM115
        try:
            for ranking in self._execute(x, todo):
                docstore = ranking.docstore or docstore
                new = {q: _record(ranking, q) for q in ranking if q not in done}
                if log is not None and new:
                    log.write("".join(json.dumps(r) + "\n" for r in new.values()))
                    log.flush()
                    os.fsync(log.fileno())
                done.update(new)
                bar.update(len(new))
        finally:
            bar.close()
            if log is not None:
                log.close()
        result = _ranking([done[q] for q in qids if q in done], x, docstore)
        if out is not None:
            write_run(result, out, tag=tag)
        if ckpt is not None and out is not None:
            if own:
                shutil.rmtree(ckpt, ignore_errors=True)
            else:
                for name in (RESULTS, JOB):
                    (ckpt / name).unlink(missing_ok=True)
        return result

    def _job(self, x: StageInput) -> dict[str, Any]:
        from irkit.pipeline.config import to_dict

        try:
            stage: Any = to_dict(self.stage)
        except IrkitError:  # a stage without a YAML form: its description stands in
            stage = repr(self.stage)
        return {"format": FORMAT, "stage": stage, "input": fingerprint(x), "shard_size": self.shard_size}

    def _execute(self, x: StageInput, shards: list[list[str]]) -> Iterator[Ranking]:
        if not shards:
            return
        if self.executor == "local":
            for shard in shards:
                yield _run_shard(self.stage, x, shard)
            return
        yield from _ray_shards(self, x, shards)


def fingerprint(x: StageInput) -> str:
    """sha256 of an input's queries (ids, texts, fields) and, for a ranking, its candidates and scores."""
    h = hashlib.sha256()
    queries = x if isinstance(x, Queries) else x.queries
    if queries is not None:
        h.update(json.dumps([queries.texts, queries.fields], sort_keys=True, default=str).encode())
    if isinstance(x, Ranking):
        for q, (docids, scores) in x.items():
            h.update(json.dumps([q, list(docids), scores.tolist()]).encode())
    return h.hexdigest()


def _run_shard(stage: Stage, x: StageInput, shard: list[str]) -> Ranking:
    out = stage.transform(x.subset(shard))
    assert isinstance(out, Ranking)
    return out


def _record(r: Ranking, q: str) -> dict[str, Any]:
    docids, scores = r[q]
    rec: dict[str, Any] = {"qid": q, "docids": list(docids), "scores": scores.tolist()}
    columns = {name: col[q].tolist() for name, col in r.columns.items() if q in col}
    if columns:
        rec["columns"] = columns
    if q in r.meta:
        rec["meta"] = r.meta[q]
    return rec


def _ranking(records: list[dict[str, Any]], x: StageInput, docstore: Any) -> Ranking:
    results = {r["qid"]: (r["docids"], np.asarray(r["scores"], dtype=np.float64)) for r in records}
    columns: dict[str, dict[str, np.ndarray]] = {}
    for r in records:
        for name, values in r.get("columns", {}).items():
            columns.setdefault(name, {})[r["qid"]] = np.asarray(values)
    meta = {r["qid"]: r["meta"] for r in records if "meta" in r}
    queries = x if isinstance(x, Queries) else x.queries
    return Ranking(results, queries, docstore, columns, meta)


def _open_checkpoint(ckpt: Path, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished queries of the checkpoint at ``ckpt`` for ``job``; creates it when new."""
    ckpt.mkdir(parents=True, exist_ok=True)
    done = load_results(ckpt / RESULTS)
    path = ckpt / JOB
    if done:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        if old != job:
            diff = sorted(k for k in job if old.get(k) != job[k]) or ["format"]
            raise IrkitError(
                f"checkpoint of another job (different {', '.join(diff)}) with {len(done)} finished queries; "
                "delete it or choose another checkpoint directory",
                path=ckpt,
            )
    if not done:  # nothing finished: whatever was here never blocks a new job
        (ckpt / RESULTS).unlink(missing_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return done


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """Records of an append-only results file; a torn last line (a crash mid-write) is cut off."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    for n, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), start=1):
        try:
            rec = json.loads(line)
            ok = isinstance(rec["qid"], str) and len(rec["docids"]) == len(rec["scores"])
        except (json.JSONDecodeError, KeyError, TypeError):
            ok = False
        if not ok:
            raise IrkitError("corrupt checkpoint line; delete the checkpoint to start over", path=path, line=n)
        done[rec["qid"]] = rec
    return done


def _progress(total: int, initial: int, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="run", unit="query", disable=not show)


class _ShardWorker:
    """A Ray Data actor: rebuilds the stage once, then runs whole shards."""

    def __init__(self, stage: Stage, inp: Any) -> None:
        import ray

        self.stage = stage
        self.inp = ray.get(inp) if isinstance(inp, ray.ObjectRef) else inp

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = []
        for shard in batch["shard"]:
            ranking = _run_shard(self.stage, self.inp, [str(q) for q in json.loads(shard)])
            out.append(json.dumps([_record(ranking, q) for q in ranking]))
        return {"records": out}


def _ray_shards(runner: Runner, x: StageInput, shards: list[list[str]]) -> Iterator[Ranking]:
    """Shards over a Ray Data actor pool; each finished shard streams back to be checkpointed here."""
    from irkit._ray import actor_rows, session

    with session(runner.workers, runner.address) as ray:
        kwargs = {"stage": runner.stage, "inp": ray.put(x)}
        items = [{"shard": json.dumps(s)} for s in shards]
        for row in actor_rows(ray, items, _ShardWorker, kwargs, runner.workers):
            records = json.loads(row["records"])
            yield _ranking(records, x, getattr(x, "docstore", None))
