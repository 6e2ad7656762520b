"""CrossEncoder: rerank candidates by scoring each (query, document) pair jointly.

Any Hugging Face sequence-classification model works (a registered name, a local
directory or a hub id). Speed on CPU (measured in ``eval/bench/rerank.py``):

* pairs are tokenised once, sorted by token length and cut into batches padded only
  to their own longest pair, so short pairs never pay for long ones;
* fp32 linear layers run on oneDNN with packed weights (``irkit.models.onednn``),
  which uses AVX-512 where PyTorch's default MKL path on AMD CPUs does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irkit.data.types import Ranking
from irkit.errors import IrkitError
from irkit.models import registry
from irkit.models.batching import sorted_batches
from irkit.pipeline.stage import Stage, StageInput, candidate_texts

#: The default model: MiniLM + connected adapter trained by irkit.tune (irkit/resources/).
DEFAULT_MODEL = "cross-encoder-minilm"


class CrossEncoder(Stage):
    """Score (query, document) pairs with a sequence-classification model; as a stage, rerank a Ranking.

    The score is the model's logit when it has one label; with several labels it is the
    log-probability of the last label (the "relevant" class by convention).
    """

    name = "cross_encoder"

    def __init__(
        self, model: str | None = None, max_length: int | None = None, batch_size: int = 32, onednn: bool = True
    ) -> None:
        model = model or DEFAULT_MODEL
        if max_length is None:  # what a tuned artifact was trained with, else 512
            max_length = _artifact_config(str(model)).get("max_length", 512)
        if max_length < 8 or batch_size < 1:
            raise IrkitError(f"max_length must be >= 8 and batch_size >= 1, got {max_length} and {batch_size}")
        import torch

        from irkit.models.onednn import OneDNNLinears

        self.model_name, self.max_length, self.batch_size = str(model), max_length, batch_size
        self.model, self.tokenizer = _load(self.model_name)
        self.onednn = onednn
        self._fast = OneDNNLinears(enabled=onednn)
        self._torch = torch

    def params(self) -> dict[str, Any]:
        p = {"model": self.model_name, "max_length": self.max_length, "batch_size": self.batch_size}
        return p if self.onednn else {**p, "onednn": False}

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
        with torch.inference_mode(), self._fast(self.model):
            for idx, inputs, mask in batches:
                logits = self.model(**inputs, attention_mask=mask.long()).logits.float()
                scores = logits[:, 0] if logits.shape[-1] == 1 else torch.log_softmax(logits, -1)[:, -1]
                out[idx] = scores.numpy()
        return out

    def rank(
        self, query: str, docs: Sequence[str], top_k: int | None = None, return_documents: bool = False
    ) -> list[dict[str, Any]]:
        """``[{"corpus_id": i, "score": s}, ...]`` for ``docs``, best first (sentence-transformers' form)."""
        scores = self.predict([(query, d) for d in docs])
        order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else len(docs)]
        hits: list[dict[str, Any]] = []
        for i in order:
            hit: dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                hit["text"] = docs[i]
            hits.append(hit)
        return hits

    def transform(self, inp: StageInput) -> Ranking:
        """Rescore every candidate with the query text and the document's ``Doc.contents``."""
        run, queries, docstore = candidate_texts(inp, self)
        pairs: list[tuple[str, str]] = []
        spans: list[tuple[str, list[str], int]] = []
        for qid, (docids, _) in run.items():
            texts = [d.contents for d in docstore.get_many(docids)]
            spans.append((qid, docids, len(pairs)))
            query = queries[qid]
            pairs.extend((query, t) for t in texts)
        scores = self.predict(pairs)
        results = {qid: (docids, scores[start : start + len(docids)]) for qid, docids, start in spans}
        return Ranking.from_lists(results, run.queries, run.docstore)


def _artifact_config(model: str) -> dict[str, Any]:
    """The ``irkit_adapter.json`` of a tuned artifact, or ``{}`` for a plain model."""
    from irkit.tune.artifacts import is_artifact, read_config

    path = registry.resolve(model)
    return read_config(path) if is_artifact(path) else {}


def _load(model: str) -> tuple[Any, Any]:
    """Model and tokenizer for a name, directory or hub id; irkit adapter dirs load through irkit.tune."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from irkit.tune.artifacts import is_artifact, load_cross_encoder

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
