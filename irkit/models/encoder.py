"""BiEncoder: texts to L2-normalised vectors with a BERT-style encoder and mean pooling.

Speed on CPU comes from three things (each one's gain, measured with the piece toggled, and
the end-to-end comparison with sentence-transformers are in ``eval/results/encode.md``):

* texts are tokenised once, sorted by token length and batched with dynamic padding,
  so short texts do not pay for long ones;
* fp32 linear layers run on oneDNN's kernels with weights packed once. PyTorch's default
  CPU matmul is MKL, which on AMD CPUs takes its AVX2 code path; oneDNN picks the widest
  instruction set the CPU has (AVX-512 where present) and stays in fp32; a BERT
  feed-forward layer's GELU is fused into its first matmul (``irkit.models.onednn``,
  shared with the cross-encoder);
* attention runs through PyTorch's fused scaled-dot-product kernel (the transformers
  default for BERT), faster than the eager implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irkit.errors import IrkitError
from irkit.models.batching import evaluating, sorted_batches
from irkit.models.onednn import OneDNNLinears
from irkit.models.registry import resolve


class BiEncoder:
    """Encode queries and documents into one vector space (sentence-transformers style).

    ``onednn=False`` runs the model exactly as PyTorch ships it (same results up to fp32
    rounding; slower on CPUs where MKL does not use AVX-512).
    """

    def __init__(
        self,
        model: str = "minilm",
        max_length: int = 256,
        normalize: bool = True,
        onednn: bool = True,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        from irkit.tune.artifacts import is_artifact, load_bi_encoder

        path = resolve(model)
        try:
            if is_artifact(path):  # a bi-encoder tuned by irkit.tune (backbone + adapters)
                net, tokenizer = load_bi_encoder(path)
            else:
                tokenizer = AutoTokenizer.from_pretrained(path)
                net = AutoModel.from_pretrained(path).eval()
        except (OSError, ValueError) as e:
            raise IrkitError(
                f"cannot load encoder {model!r} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "pass a local model directory, a registered name or a cached hub id"
            ) from None
        self._setup(str(model), net, tokenizer, max_length, normalize, onednn)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, max_length: int = 256, normalize: bool = True) -> BiEncoder:
        """Wrap a model already in memory (e.g. one being tuned); it encodes as it is, in eval mode."""
        self = cls.__new__(cls)
        self._setup("in-memory", model, tokenizer, max_length, normalize, True)
        return self

    def _setup(self, name: str, model: Any, tokenizer: Any, max_length: int, normalize: bool, onednn: bool) -> None:
        import torch

        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.max_length = max_length
        self.normalize = normalize
        self._fast = OneDNNLinears(enabled=onednn)
        self.dim: int = int(self.model.config.hidden_size)
        self._torch = torch

    @property
    def onednn(self) -> bool:
        """Whether ``encode`` runs the linear layers on oneDNN (settable, e.g. for A/B checks)."""
        return self._fast.enabled

    @onednn.setter
    def onednn(self, value: bool) -> None:
        self._fast.enabled = value and bool(self._torch.backends.mkldnn.is_available())

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors, in input order."""
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        batches = sorted_batches(
            {"input_ids": ids}, batch_size, self.tokenizer.pad_token_id or 0, "encode", show_progress
        )
        with evaluating(self.model), self._fast(self.model):
            for idx, inputs, mask in batches:
                hidden = self.model(**inputs, attention_mask=mask.long()).last_hidden_state
                vec = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
                if self.normalize:
                    vec = torch.nn.functional.normalize(vec, dim=-1)
                out[idx] = vec.numpy()
        return out
