"""Small real cross-encoder model directories for tests (saved to tmp, seeded)."""

from __future__ import annotations

from pathlib import Path


def save_random_bert(out: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A tiny randomly initialised BertForSequenceClassification (1 label) with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from irkit.models.registry import resolve

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).eval().save_pretrained(out)
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(out)
    return out


def save_minilm_head(out: Path, seed: int = 0) -> Path:
    """The MiniLM backbone with an untrained one-label head: real weights, meaningless scores."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from irkit.models.registry import resolve

    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_pretrained(resolve("minilm"), num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(out)
    return out
