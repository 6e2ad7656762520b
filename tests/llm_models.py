"""Tiny random causal LMs for the LLM-reranker tests: real transformers Llama code, seeded weights."""

from __future__ import annotations

from typing import Any


def smollm2_tokenizer() -> Any:
    """The real SmolLM2 tokenizer (with its chat template), from the converted bundled model."""
    from transformers import AutoTokenizer

    from irkit.models.registry import resolve

    return AutoTokenizer.from_pretrained(resolve("smollm2"))


def tiny_llama(tokenizer: Any, seed: int = 0, context: int = 4096, attn: str = "sdpa", **overrides: Any) -> Any:
    """A 2-layer LlamaForCausalLM with grouped-query attention (4 query heads share 2 kv heads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        attn_implementation=attn,
        **overrides,
    )
    return LlamaForCausalLM(config).eval()


def tiny_llm(tokenizer: Any, **kwargs: Any) -> Any:
    """A CausalLM wrapper around :func:`tiny_llama`."""
    from irkit.models.llm import CausalLM

    return CausalLM.from_model(tiny_llama(tokenizer, **kwargs), tokenizer, name="tiny-llama")
