"""Ray for irkit's batch jobs: one session per job and a Ray Data actor pool over its work items.

The runner (query shards) and the dense index build (corpus chunks) both run here, so the
cluster start, the JVM signal-handler protection and the actor pool are written once.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from irkit.errors import IrkitError

EXECUTORS = ("local", "ray")


def check_executor(executor: str) -> None:
    if executor not in EXECUTORS:
        raise IrkitError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


@contextlib.contextmanager
def session(workers: int, address: str | None = None) -> Iterator[Any]:
    """Yield the ``ray`` module with a cluster connected: the caller's, else ``address``'s, else a local one.

    A local cluster gets ``workers`` CPUs; a cluster this function connects to is shut down on exit.
    """
    # Ray's C++ crash handler and the faulthandler that ray.init enables replace the SIGSEGV handler of
    # pyserini's JVM in this process, which the JVM relies on: its next safepoint poll would kill the
    # process. So Ray's handler stays off and the JVM's handlers are put back after init and shutdown.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
    except ImportError:
        raise IrkitError("the ray executor needs Ray: pip install 'irkit[ray]'") from None
    from irkit._java import keep_fatal_signal_handlers

    restore_handlers = keep_fatal_signal_handlers()
    started = not ray.is_initialized()
    if started:  # one the caller started is used as is
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        restore_handlers()
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
        restore_handlers()


def actor_rows(
    ray: Any, items: list[dict[str, Any]], actor: type, kwargs: dict[str, Any], workers: int
) -> Iterator[dict[str, Any]]:
    """Each item through a pool of ``workers`` ``actor(**kwargs)`` (one CPU each, one item per call).

    Output rows stream back as they finish, not necessarily in item order.
    """
    ds = ray.data.from_items(items).map_batches(
        actor,
        fn_constructor_kwargs=kwargs,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )
    yield from ds.iter_rows()


class _ChunkWriter:
    """A Ray Data actor: builds its shard writer once (model loaded once), then writes whole chunks."""

    def __init__(self, make_writer: Callable[[], Callable[[Path, list[str]], None]]) -> None:
        self.write = make_writer()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        for shard, chunk in zip(batch["shard"], batch["chunk"], strict=True):
            self.write(Path(str(shard)), json.loads(str(chunk)))
        return {"shard": batch["shard"]}


def write_chunks(
    todo: list[tuple[Path, list[str]]],
    make_writer: Callable[[], Callable[[Path, list[str]], None]],
    workers: int,
    address: str | None = None,
) -> Iterator[tuple[Path, list[str]]]:
    """Write checkpoint shards on Ray actors: each calls ``make_writer()`` once and then ``write(shard, chunk)``.

    Yields each ``(shard, chunk)`` of ``todo`` once its shard is written. The actors read and write
    the paths themselves, so against a remote cluster they must be on storage every node sees.
    """
    if not todo:
        return
    pending = {str(shard): (shard, chunk) for shard, chunk in todo}
    items = [{"shard": str(shard), "chunk": json.dumps(chunk)} for shard, chunk in todo]
    with session(workers, address) as ray:
        for row in actor_rows(ray, items, _ChunkWriter, {"make_writer": make_writer}, workers):
            yield pending[str(row["shard"])]
