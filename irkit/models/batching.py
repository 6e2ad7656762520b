"""Length-sorted batches with dynamic padding, shared by the bi-encoder and the cross-encoder.

Sorting inputs by their exact token length and padding each batch only to its own longest
row means short texts never pay for long ones (the main cost on variable-length input).
A batch also holds at most ``TOKENS_PER_PASS`` tokens (padding included), so a pass over
long texts keeps its activations small; ``run_batches`` runs the batches in turn.
"""

from __future__ import annotations

import contextlib
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
    """``step(batch)`` for every batch in turn, under ``torch.inference_mode``, on all of torch's threads.

    Running batches side by side (one per core, one torch thread each) was about 1.25x faster on a
    2-core AVX2 CPU, but its floating-point results differed from a single-threaded run, so a Ray
    build (one thread per actor) no longer equalled the in-process one: it is off until that is solved.
    """
    import torch

    with torch.inference_mode():
        for batch in batches:
            step(batch)


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
