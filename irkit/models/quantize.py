"""Inference backends of the encoders: ``fp32`` (exact) or ``int8`` (dynamically quantised linear layers).

``int8`` replaces every ``nn.Linear`` of a transformer with PyTorch's dynamic int8 linear
layer: weights are stored as int8 with one scale per output row, and each input batch is
quantised on the fly with its own range, so no calibration data is needed. Matrix products
run on FBGEMM's int8 kernels, which on an AVX2-only CPU do twice the multiply-adds per
instruction of fp32 FMA (measured in ``eval/results/encode.md`` and ``rerank.md``). The
price is rounding, measured as the change in SciFact test nDCG@10 (``eval/regressions.yaml``,
rows ``*-int8``): -0.0086 for MiniLM dense retrieval and -0.027 for the bundled
cross-encoder, both beyond 0.005, so fp32 stays the default. Vectors differ from fp32
(MiniLM: cosine 0.98 on average, 0.92 at worst on short passages) and depend a little on
which texts share a batch (the activation range is per batch), so an index must record the
backend it was encoded with.

PyTorch marks ``torch.ao.quantization`` deprecated in favour of torchao, but 2.13 still ships
and runs it; its deprecation warnings are silenced here, at the one place that calls it.
"""

from __future__ import annotations

import warnings
from typing import Any

from irkit.errors import IrkitError

#: backend names accepted by BiEncoder and CrossEncoder (Python, YAML ``backend:``, CLI ``--backend``)
BACKENDS = ("fp32", "int8")


def check_backend(backend: str) -> str:
    """``backend`` if it is one of ``BACKENDS``, else an IrkitError listing them."""
    if backend not in BACKENDS:
        raise IrkitError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return backend


def apply_backend(model: Any, backend: str) -> Any:
    """``model`` ready to run on ``backend``: unchanged for fp32, its linear layers int8 (in place) for int8."""
    if check_backend(backend) == "fp32":
        return model
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
        return quantize_dynamic(model.eval(), {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
