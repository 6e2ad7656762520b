"""irkit.tune: parameter-efficient tuning (connected adapters, the side network, baselines) and saving what
it trained (loading a tuned artifact for inference: :mod:`irkit.models.tuned`).

Imports torch on first use of a name, not on ``import irkit.tune``.
"""

from __future__ import annotations

from irkit._lazy import lazy_exports

_LAZY = {
    "TuneConfig": "irkit.tune.adapters",
    "TunedEncoder": "irkit.tune.adapters",
    "TunedCrossEncoder": "irkit.tune.adapters",
    "Trainer": "irkit.tune.trainer",
    "TrainConfig": "irkit.tune.trainer",
    "Example": "irkit.tune.trainer",
    "build_examples": "irkit.tune.trainer",
    "split_dev": "irkit.tune.trainer",
    "build": "irkit.tune.artifacts",
    "save": "irkit.tune.artifacts",
}

#: tuning methods (irkit.tune.adapters); here so that the CLI lists them without importing torch
METHODS = ("connected", "side", "houlsby", "lora", "bitfit", "full")
#: where connected adapters sit inside a block (the paper's variants, see irkit.tune.adapters)
PLACEMENTS = ("layer", "ffn", "sublayers")

__all__ = sorted([*_LAZY, "METHODS", "PLACEMENTS"])


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
