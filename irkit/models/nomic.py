"""nomic-embed-text-v1.5 in plain PyTorch, its weights read from the f16 GGUF file.

transformers has no nomic-bert architecture for GGUF files, so this module implements it:
a BERT encoder (post-LayerNorm blocks, token-type embeddings, the bert-base-uncased
vocabulary) with three changes: rotary position embeddings (GPT-NeoX layout, base from the
file) instead of learned positions, one fused bias-free QKV projection, and a SwiGLU
feed-forward block (``down(up(x) * silu(gate(x)))``, no biases). The text vector is the mean
of the token states, L2-normalised (by :class:`irkit.models.encoder.BiEncoder`).

The model is asymmetric: queries and documents carry the task prefixes below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from irkit.errors import IrkitError

ARCHITECTURE = "nomic-bert"
QUERY_PREFIX = "search_query: "
DOCUMENT_PREFIX = "search_document: "
PROMPTS = {"query": QUERY_PREFIX, "document": DOCUMENT_PREFIX}


@dataclass
class NomicConfig:
    """Hyper-parameters, read from the GGUF metadata (``nomic-bert.*`` keys)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    layer_norm_eps: float
    rope_base: float
    max_position_embeddings: int


class NomicBlock(nn.Module):
    """Self-attention with rotary positions, then a SwiGLU feed-forward; each adds and LayerNorms."""

    def __init__(self, cfg: NomicConfig) -> None:
        super().__init__()
        h, f = cfg.hidden_size, cfg.intermediate_size
        self.heads = cfg.num_attention_heads
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.out = nn.Linear(h, h, bias=False)
        self.norm1 = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.up_gate = nn.Linear(h, 2 * f, bias=False)  # up and gate projections in one matmul
        self.down = nn.Linear(f, h, bias=False)
        self.norm2 = nn.LayerNorm(h, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = self.norm1(x + self.out(attended.transpose(1, 2).reshape(b, n, h)))
        up, gate = self.up_gate(x).chunk(2, dim=-1)
        return self.norm2(x + self.down(up * F.silu(gate)))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, GPT-NeoX layout: the two halves of each head are the rotated pairs."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class NomicBert(nn.Module):
    """The nomic-bert encoder: ``model(input_ids, attention_mask).last_hidden_state`` as for a
    transformers model, so :class:`~irkit.models.encoder.BiEncoder` pools it the same way."""

    def __init__(self, cfg: NomicConfig) -> None:
        super().__init__()
        self.config = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type = nn.Parameter(torch.zeros(cfg.hidden_size))  # type 0: every token of one text
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(NomicBlock(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> Any:
        """``token_type_ids`` is accepted and ignored (every token has type 0, also in pairs);
        ``output_hidden_states`` adds the embeddings and each block's output, as transformers does."""
        from transformers.modeling_outputs import BaseModelOutput

        n = input_ids.shape[1]
        if n > self.config.max_position_embeddings:
            raise IrkitError(f"nomic-bert takes at most {self.config.max_position_embeddings} tokens, got {n}")
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        inv_freq = self.config.rope_base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(n, dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, keys): padding is never attended
        x = self.norm(self.word_embeddings(input_ids) + self.token_type)
        states = [x]
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
            states.append(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states) if output_hidden_states else None)

    @classmethod
    def from_gguf(cls, path: str | Path) -> NomicBert:
        """Build the model from a nomic-bert GGUF file (f16 or f32 tensors, computed in fp32)."""
        from gguf import GGUFReader

        path = Path(path)
        try:
            reader = GGUFReader(path)
        except (OSError, ValueError) as e:
            raise IrkitError(f"cannot read GGUF file ({e})", path=path) from None
        arch = _field(reader, "general.architecture", path)
        if arch != ARCHITECTURE:
            raise IrkitError(f"GGUF architecture is {arch!r}, expected {ARCHITECTURE!r}", path=path)

        def meta(key: str) -> Any:
            return _field(reader, f"{ARCHITECTURE}.{key}", path)

        tensors = {t.name: t.data for t in reader.tensors}
        cfg = NomicConfig(
            vocab_size=int(tensors["token_embd.weight"].shape[0]) if "token_embd.weight" in tensors else 0,
            hidden_size=int(meta("embedding_length")),
            num_hidden_layers=int(meta("block_count")),
            num_attention_heads=int(meta("attention.head_count")),
            intermediate_size=int(meta("feed_forward_length")),
            layer_norm_eps=float(meta("attention.layer_norm_epsilon")),
            rope_base=float(meta("rope.freq_base")),
            max_position_embeddings=int(meta("context_length")),
        )
        state = _state_dict(tensors, cfg, path)
        with torch.device("meta"):  # no random initialisation of weights about to be replaced
            model = cls(cfg)
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()


def _field(reader: Any, key: str, path: Path) -> Any:
    field = reader.fields.get(key)
    if field is None:
        raise IrkitError(f"GGUF metadata has no {key!r}", path=path)
    return field.contents()


def _state_dict(tensors: dict[str, np.ndarray], cfg: NomicConfig, path: Path) -> dict[str, torch.Tensor]:
    """Our parameter names from the GGUF tensor names (llama.cpp's nomic-bert naming), as fp32."""

    def get(name: str) -> torch.Tensor:
        if name not in tensors:
            raise IrkitError(f"GGUF file has no tensor {name!r} (not a nomic-bert model?)", path=path)
        return torch.from_numpy(np.array(tensors.pop(name))).float()  # a copy: the reader's arrays are read-only

    state = {
        "word_embeddings.weight": get("token_embd.weight"),
        "token_type": get("token_types.weight")[0],
        "norm.weight": get("token_embd_norm.weight"),
        "norm.bias": get("token_embd_norm.bias"),
    }
    for i in range(cfg.num_hidden_layers):
        blk, ours = f"blk.{i}.", f"layers.{i}."
        state[ours + "qkv.weight"] = get(blk + "attn_qkv.weight")
        state[ours + "out.weight"] = get(blk + "attn_output.weight")
        state[ours + "up_gate.weight"] = torch.cat((get(blk + "ffn_up.weight"), get(blk + "ffn_gate.weight")))
        state[ours + "down.weight"] = get(blk + "ffn_down.weight")
        for norm, theirs in (("norm1", "attn_output_norm"), ("norm2", "layer_output_norm")):
            state[f"{ours}{norm}.weight"] = get(f"{blk}{theirs}.weight")
            state[f"{ours}{norm}.bias"] = get(f"{blk}{theirs}.bias")
    if tensors:
        raise IrkitError(f"GGUF file has tensors this nomic-bert does not use: {sorted(tensors)[:5]}", path=path)
    return state


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file of a model path: the path itself if it is a ``.gguf`` file, else the single
    ``.gguf`` file in the folder; None when there is none."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix == ".gguf" else None
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) > 1:
        raise IrkitError(f"more than one GGUF file in the model folder: {[p.name for p in found]}", path=path)
    return found[0] if found else None


def load_nomic(gguf: Path) -> tuple[NomicBert, Any]:
    """The model and its tokenizer: nomic-embed's vocabulary is bert-base-uncased's, which the
    bundled MiniLM tokenizer uses (``tests/test_nomic.py`` checks the two vocabularies match)."""
    from transformers import AutoTokenizer

    from irkit.models.registry import resolve

    return NomicBert.from_gguf(gguf), AutoTokenizer.from_pretrained(resolve("minilm"))
