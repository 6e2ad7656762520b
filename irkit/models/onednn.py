"""Run a BERT-style model's fp32 linear layers on oneDNN, for CPU inference.

PyTorch's default CPU matmul is MKL, which on AMD CPUs takes its AVX2 code path;
oneDNN picks the widest instruction set present (AVX-512 where the CPU has it) and
stays in fp32. Weights are packed once per layer; a BERT feed-forward block
(``dense`` then exact GELU) runs as one call with the GELU fused in. Results equal
PyTorch's up to fp32 rounding (~1e-7).

On AVX2-only CPUs both libraries run AVX2 kernels at about the same speed (measured on
MiniLM's shapes on a Zen 3 EPYC), and the fused GELU keeps oneDNN a few percent ahead, so
this path is used on every x86 CPU rather than chosen per instruction set.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any


class OneDNNLinears:
    """``with fast(model):`` swaps the model's plain ``nn.Linear`` forwards for packed oneDNN calls.

    Packed weights are cached per layer and repacked when a weight changes (new storage or
    an in-place update), so a model tuned between calls stays exact. Layers keep their hooks;
    a feed-forward block with hooks is left unfused.
    """

    def __init__(self, enabled: bool = True) -> None:
        import torch

        self.enabled = enabled and bool(torch.backends.mkldnn.is_available())
        self._packed: weakref.WeakKeyDictionary[Any, tuple[tuple[int, int], Any]] = weakref.WeakKeyDictionary()

    @contextlib.contextmanager
    def __call__(self, model: Any) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        swapped = []
        for module in model.modules():
            dense = _gelu_block(module)
            if dense is not None:
                module.forward = self._forward(dense, gelu=True)
            elif _plain_linear(module):
                module.forward = self._forward(module, gelu=False)
            else:
                continue
            swapped.append(module)
        try:
            yield
        finally:
            for module in swapped:
                del module.forward

    def _forward(self, linear: Any, gelu: bool) -> Any:
        """``linear`` (then exact GELU if ``gelu``) as one oneDNN call on its packed weight."""
        import torch

        weight, bias = linear.weight, linear.bias
        key = (weight.data_ptr(), weight._version)
        cached = self._packed.get(linear)
        if cached is None or cached[0] != key:
            cached = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
            self._packed[linear] = cached
        packed = cached[1]
        attr, algorithm = ("gelu", "none") if gelu else ("none", "")  # "none": erf GELU, not tanh

        def forward(x: Any) -> Any:
            if x.dtype != torch.float32:
                y = torch.nn.functional.linear(x, weight, bias)
                return torch.nn.functional.gelu(y) if gelu else y
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, attr, [], algorithm)

        return forward


def _plain_linear(module: Any) -> bool:
    """An ``nn.Linear`` (not a subclass) with fp32 CPU weights and the class's own forward."""
    import torch

    return (
        type(module) is torch.nn.Linear
        and "forward" not in module.__dict__
        and module.weight.dtype == torch.float32
        and module.weight.device.type == "cpu"
    )


def _gelu_block(module: Any) -> Any:
    """The ``dense`` layer of a hook-free ``dense -> exact GELU`` block (``BertIntermediate``), else None."""
    from transformers.activations import GELUActivation

    dense = getattr(module, "dense", None)
    if type(getattr(module, "intermediate_act_fn", None)) is not GELUActivation or not _plain_linear(dense):
        return None
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in (module, dense))
    return None if hooked or "forward" in module.__dict__ else dense
