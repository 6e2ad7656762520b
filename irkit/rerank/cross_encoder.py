"""CrossEncoder: rerank candidates by scoring each (query, document) pair jointly.

Any Hugging Face sequence-classification model works (a registered name, a local
directory or a hub id). Speed on CPU (measured in ``eval/bench/rerank.py``):

* pairs are tokenised once, sorted by token length and cut into batches padded only
  to their own longest pair, so short pairs never pay for long ones;
* batches run side by side, one per core (``irkit.models.batching.run_batches``);
* fp32 linear layers run on oneDNN with packed weights (``irkit.models.onednn``),
  which uses AVX-512 where PyTorch's default MKL path on AMD CPUs does not.

``backend="int8"`` (YAML ``backend: int8``, ``irkit rerank --stage cross_encoder --backend
int8``) scores with int8 linear layers instead (``irkit.models.quantize``): about 1.5x
faster on an AVX2 CPU, but on the bundled model it costs 0.027 SciFact nDCG@10
(eval/regressions.yaml, ``scifact-ce-top20-int8``), so fp32 stays the default.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from irkit.errors import IrkitError
from irkit.models import registry
from irkit.models.batching import evaluating, run_batches, sorted_batches
from irkit.models.quantize import apply_backend, check_backend
from irkit.pipeline.stage import Reranker, doc_text

if TYPE_CHECKING:
    from irkit.data.docstore import Doc

#: The default model: MiniLM + connected adapter trained by irkit.tune (irkit/resources/).
DEFAULT_MODEL = "cross-encoder-minilm"


class CrossEncoder(Reranker):
    """Score (query, document) pairs with a sequence-classification model; as a stage, rerank a Ranking.

    The score is the model's logit when it has one label; with several labels it is the
    log-probability of the last label (the "relevant" class by convention). Documents are
    read as ``Doc.contents`` (title and text), the rendering every text-reading stage uses.
    """

    name = "cross_encoder"

    def __init__(
        self,
        model: str | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        onednn: bool = True,
        backend: str = "fp32",
    ) -> None:
        check_backend(backend)  # before loading the model
        model = model or DEFAULT_MODEL
        if max_length is None:  # what a tuned artifact was trained with, else 512
            max_length = _artifact_config(str(model)).get("max_length", 512)
        if max_length < 8 or batch_size < 1:
            raise IrkitError(f"max_length must be >= 8 and batch_size >= 1, got {max_length} and {batch_size}")
        self._setup(str(model), *_load(str(model)), max_length, batch_size, onednn, backend)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, max_length: int = 512, batch_size: int = 32) -> CrossEncoder:
        """Wrap a model already in memory (e.g. one being tuned); it is scored as it is, in eval mode."""
        self = cls.__new__(cls)
        self._setup("in-memory", model, tokenizer, max_length, batch_size, True)
        return self

    def _setup(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        max_length: int,
        batch_size: int,
        onednn: bool,
        backend: str = "fp32",
    ) -> None:
        import torch

        from irkit.models.onednn import OneDNNLinears

        self.model_name, self.max_length, self.batch_size = name, max_length, batch_size
        self.backend = backend
        self.model, self.tokenizer = apply_backend(model, backend), tokenizer
        self.onednn = onednn
        self._fast = OneDNNLinears(enabled=onednn)
        self._torch = torch

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"model": self.model_name, "max_length": self.max_length, "batch_size": self.batch_size}
        if not self.onednn:
            p["onednn"] = False
        return p if self.backend == "fp32" else {**p, "backend": self.backend}

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> dict[str, list[list[int]]]:
        """Token ids of each pair, unpadded, truncated to ``max_length`` (longest side first)."""
        queries = [q for q, _ in pairs]
        docs = [d for _, d in pairs]
        enc = self.tokenizer(queries, docs, truncation=True, max_length=self.max_length)
        return {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}

    def predict(
        self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None, show_progress: bool = False
    ) -> np.ndarray:
        """Scores of ``pairs`` (float32, input order); batched by length with dynamic padding."""
        torch = self._torch
        out = np.zeros(len(pairs), dtype=np.float32)
        if len(pairs) == 0:
            return out
        enc = self.tokenize(pairs)
        size = batch_size or self.batch_size
        batches = sorted_batches(enc, size, self.tokenizer.pad_token_id or 0, "rerank", show_progress)

        def step(batch: tuple[np.ndarray, dict[str, Any], Any]) -> None:
            idx, inputs, mask = batch
            logits = self.model(**inputs, attention_mask=mask.long()).logits.float()
            scores = logits[:, 0] if logits.shape[-1] == 1 else torch.log_softmax(logits, -1)[:, -1]
            out[idx] = scores.numpy()

        with evaluating(self.model), self._fast(self.model):
            run_batches(batches, step)
        return out

    def score(self, query: str, docs: Sequence[Doc | str]) -> np.ndarray:
        return self.predict([(query, doc_text(d)) for d in docs])

    def score_batch(self, items: Sequence[tuple[str, Sequence[Doc | str]]]) -> list[np.ndarray]:
        """All queries' pairs in one length-sorted batching, so short lists fill whole batches."""
        scores = self.predict([(q, doc_text(d)) for q, docs in items for d in docs])
        bounds = np.cumsum([0] + [len(docs) for _, docs in items])
        return [scores[a:b] for a, b in itertools.pairwise(bounds)]


def _artifact_config(model: str) -> dict[str, Any]:
    """The ``irkit_adapter.json`` of a tuned artifact, or ``{}`` for a plain model."""
    from irkit.models.tuned import is_artifact, read_config

    path = registry.resolve(model)
    return read_config(path) if is_artifact(path) else {}


def _load(model: str) -> tuple[Any, Any]:
    """Model and tokenizer for a name, directory or hub id; irkit tune artifacts through irkit.models.tuned."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from irkit.models.tuned import is_artifact, load_cross_encoder

    path = registry.resolve(model)
    try:
        if is_artifact(path):
            net, tok = load_cross_encoder(path)
        else:
            net = AutoModelForSequenceClassification.from_pretrained(path)
            tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise IrkitError(
            f"cannot load cross-encoder {model!r} ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "pass a local model directory, a registered name or a cached hub id"
        ) from None
    return net.eval(), tok
