"""Length-sorted batches with dynamic padding, shared by the bi-encoder and the cross-encoder.

Sorting inputs by their exact token length and padding each batch only to its own longest
row means short texts never pay for long ones (the main cost on variable-length input).
A batch also holds at most ``TOKENS_PER_PASS`` tokens (padding included), so a pass over
long texts keeps its activations small; ``run_batches`` runs one batch per core.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

#: most tokens (rows x longest row) in one forward pass: 8 texts at BERT's usual 256-token cap
TOKENS_PER_PASS = 2048


def sorted_batches(
    columns: Mapping[str, list[list[int]]],
    batch_size: int,
    pad_id: int,
    desc: str = "batches",
    show_progress: bool = False,
    max_tokens: int = TOKENS_PER_PASS,
) -> Iterator[tuple[np.ndarray, dict[str, Any], Any]]:
    """Yield ``(row indices, {column: padded LongTensor}, bool mask tensor)``, longest rows first.

    ``columns`` are unpadded token-id lists of equal row count (``input_ids`` first, optionally
    ``token_type_ids``); ``input_ids`` pad with ``pad_id``, other columns with 0. A batch has at
    most ``batch_size`` rows and, unless that leaves one row, at most ``max_tokens`` tokens.
    """
    import torch

    ids = columns["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(-lengths, kind="stable")
    batches: Any = []
    start = 0
    while start < len(order):
        rows = max(1, min(batch_size, max_tokens // max(1, int(lengths[order[start]]))))
        batches.append(order[start : start + rows])
        start += rows
    if show_progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch")
    for idx in batches:
        mask = np.arange(lengths[idx[0]]) < lengths[idx][:, None]  # sorted: the first row is the longest
        padded = {}
        for key, rows in columns.items():
            arr = np.full(mask.shape, pad_id if key == "input_ids" else 0, dtype=np.int64)
            arr[mask] = np.concatenate([rows[i] for i in idx])
            padded[key] = torch.from_numpy(arr)
        yield idx, padded, torch.from_numpy(mask)


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Inference mode with the model in eval mode (no dropout), restoring its training flag after."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(training)


def run_batches(batches: Iterable[T], step: Callable[[T], None]) -> None:
    """``step(batch)`` for every batch: one batch per core at a time, each on one torch thread.

    With torch set to N > 1 threads and at least two batches, N worker threads each take the
    next batch and run it single-threaded (torch's thread count is 1 meanwhile and restored
    after); otherwise the batches run in turn on all of torch's threads (e.g. one batch of
    queries). A batch gives the same floating-point result either way, so an in-process run
    equals a one-thread Ray actor's. Steps run under ``torch.inference_mode``; the first error
    (or a Ctrl-C) stops the workers taking new batches, waits for their current one, and is raised here.
    """
    import torch

    threads = torch.get_num_threads()
    pending = iter(batches)
    first = list(itertools.islice(pending, 2))
    queue = itertools.chain(first, pending)
    if threads < 2 or len(first) < 2:
        with torch.inference_mode():
            for batch in queue:
                step(batch)
        return
    lock, failed = threading.Lock(), threading.Event()
    errors: list[BaseException] = []
    finished = [threading.Event() for _ in range(threads)]

    def worker(done: threading.Event) -> None:
        try:
            # OpenMP's thread count belongs to each thread: without this, oneDNN in a new thread
            # takes the process default and splits the batch's products, changing their rounding
            torch.set_num_threads(1)
            with torch.inference_mode():
                while not failed.is_set():
                    with lock:
                        batch = next(queue, None)
                    if batch is None:
                        return
                    try:
                        step(batch)
                    except BaseException as e:  # re-raised in the calling thread below
                        errors.append(e)
                        failed.set()
        finally:
            done.set()

    # after a Ctrl-C, wait on each worker's event before joining it: CPython 3.11 marks a thread as
    # stopped when a Ctrl-C interrupts its join, so a second join would return at once and the
    # interpreter could exit while a worker is still inside torch (which aborts the process)
    workers = [threading.Thread(target=worker, args=(d,), name=f"irkit-batch-{i}") for i, d in enumerate(finished)]
    torch.set_num_threads(1)
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    except BaseException:  # e.g. Ctrl-C while waiting: no worker may outlive this call
        failed.set()
        for w, done in zip(workers, finished, strict=True):
            if w.ident is not None:
                done.wait()
                w.join()
        raise
    finally:
        torch.set_num_threads(threads)
    if errors:
        raise errors[0]


def text_batches(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    batch_size: int,
    desc: str = "batches",
    show_progress: bool = False,
) -> Iterator[tuple[np.ndarray, dict[str, Any], Any]]:
    """``sorted_batches`` of single texts, tokenised once (with special tokens, cut at ``max_length``)."""
    if not texts:
        return
    ids = tokenizer(
        list(texts), truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False
    )["input_ids"]
    yield from sorted_batches({"input_ids": ids}, batch_size, tokenizer.pad_token_id or 0, desc, show_progress)
