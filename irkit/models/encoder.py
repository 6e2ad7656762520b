"""BiEncoder: texts to L2-normalised vectors with a BERT-style encoder and mean pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irkit.models.registry import resolve


class BiEncoder:
    """Encode queries and documents into one vector space (sentence-transformers style).

    Inputs are tokenised once, sorted by length and batched with dynamic padding,
    so short texts do not pay for long ones.
    """

    def __init__(self, model: str = "minilm", max_length: int = 256, normalize: bool = True) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = str(model)
        path = resolve(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length
        self.normalize = normalize
        self.dim: int = int(self.model.config.hidden_size)
        self._torch = torch

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors, in input order."""
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True)[
            "input_ids"
        ]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        bar: Any = batches
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(batches, desc="encode", unit="batch")
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for idx in bar:
                longest = max(len(ids[i]) for i in idx)
                input_ids = torch.full((len(idx), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), longest), dtype=torch.long)
                for row, i in enumerate(idx):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                if self.normalize:
                    vec = torch.nn.functional.normalize(vec, dim=-1)
                out[idx] = vec.float().numpy()
        return out
