"""Tuning methods for a frozen BERT-style encoder: connected (aside) adapters and the baselines.

Connected adapters follow Ma et al., "Scattered or Connected? An Optimized Parameter-efficient
Tuning Approach for Information Retrieval" (CIKM 2022, arXiv 2208.09847). Their diagnosis:
scattered modules (Houlsby adapters, LoRA, prefix...) sit *inside* frozen blocks, so the
gradient of every module but the last crosses frozen layers, which makes training slow and
unstable below 1 % trainable parameters; their fix injects bottleneck modules *alongside* the
pre-trained model and chains them into one trainable pathway.

What we confirmed from the paper's public text (abstract and introduction, found through the
search corpora) is that design: modules beside the PTM, connected so that all trainable
modules form one pathway. The method section's equations were not retrievable offline; a
public review of the paper reports three variants that differ in where the aside modules tap
the backbone and that the layer-level variant works best. We therefore implement the
layer-level variant, exactly the sketch of issue #4:

    s_0 = 0,   s_l = s_{l-1} + B_l(h_l + s_{l-1}),   output = h_L + s_L

with ``h_l`` the output of transformer layer ``l`` and ``B_l(x) = W_up act(W_down x)``
(d -> r -> d, GELU, ``W_up`` and its bias zero-initialised so training starts from the frozen
model). The backbone never sees ``s``: no adapter's gradient crosses a frozen block, and with
all backbone weights frozen the backbone runs without autograd (a forward pass only), so a
training step costs little more than inference.

Baselines under the same wrapper: ``houlsby`` (bottleneck after the attention-output and the
FFN-output projections of every layer, before the residual + LayerNorm; adapters only are
trained), ``lora`` (``peft`` LoRA on query/value, injected in place), ``bitfit`` (bias terms
only) and ``full`` (everything).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from irkit.errors import IrkitError

METHODS = ("connected", "houlsby", "lora", "bitfit", "full")


@dataclass
class TuneConfig:
    """How a backbone is tuned; stored verbatim in the artifact's ``irkit_adapter.json``."""

    method: str = "connected"
    rank: int = 32  # MiniLM-L6: 149,952 parameters, 0.66 % of the model
    lora_alpha: int = 16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise IrkitError(f"unknown tuning method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.rank < 1:
            raise IrkitError(f"adapter rank must be >= 1, got {self.rank}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bottleneck(nn.Module):
    """``W_up act(W_down x)``, d -> r -> d; ``W_up`` starts at zero so the module starts as the zero map."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.act = nn.GELU()
        self.up = nn.Linear(rank, dim)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


def bottleneck_params(dim: int, rank: int) -> int:
    """Parameters of one :class:`Bottleneck` (two weight matrices and two bias vectors)."""
    return 2 * dim * rank + rank + dim


def expected_trainable(config: TuneConfig, hidden: int, layers: int) -> int:
    """Trainable-parameter count of the adapter methods, in closed form (the head is not included)."""
    if config.method == "connected":
        return layers * bottleneck_params(hidden, config.rank)
    if config.method == "houlsby":
        return 2 * layers * bottleneck_params(hidden, config.rank)
    if config.method == "lora":  # A: r x d and B: d x r, on query and value
        return layers * 2 * 2 * hidden * config.rank
    raise IrkitError(f"no closed form for method {config.method!r}")


def _layers(backbone: nn.Module) -> nn.ModuleList:
    encoder = getattr(backbone, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise IrkitError(f"{type(backbone).__name__} is not a BERT-style encoder (no .encoder.layer)")
    return layers


class TunedEncoder(nn.Module):
    """A BERT-style encoder with one tuning method applied; call contract of ``AutoModel``.

    ``forward(input_ids, attention_mask, token_type_ids).last_hidden_state`` is what
    :class:`irkit.models.encoder.BiEncoder` pools, so a tuned encoder drops in for the backbone.
    """

    def __init__(self, backbone: nn.Module, config: TuneConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.tune_config = config
        self.config = backbone.config
        hidden = int(backbone.config.hidden_size)
        layers = _layers(backbone)
        self.aside: nn.ModuleList | None = None
        self.houlsby: nn.ModuleList | None = None
        method = config.method
        for p in backbone.parameters():
            p.requires_grad_(method == "full")
        if method == "connected":
            self.aside = nn.ModuleList(Bottleneck(hidden, config.rank) for _ in layers)
        elif method == "houlsby":
            self.houlsby = nn.ModuleList(Bottleneck(hidden, config.rank) for _ in range(2 * len(layers)))
            for i, layer in enumerate(layers):
                for j, dense in enumerate((layer.attention.output.dense, layer.output.dense)):
                    dense.register_forward_hook(_residual_hook(self.houlsby[2 * i + j]))
        elif method == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(
                r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=["query", "value"]
            )
            inject_adapter_in_model(lora, backbone)  # marks only lora_* trainable
        elif method == "bitfit":
            for name, p in backbone.named_parameters():
                p.requires_grad_(name.endswith(".bias"))
        # only the connected pathway lives outside the backbone: then the backbone needs no autograd
        self._backbone_grad = method != "connected"
        self._tap_cache: dict[bytes, torch.Tensor] | None = None

    def enable_tap_cache(self, enabled: bool = True) -> None:
        """Connected only: remember the frozen backbone's layer outputs per input sequence.

        The backbone is never on the gradient path, so its outputs for a given (query, doc)
        pair never change: with the cache on, each distinct sequence runs through the backbone
        once (in eval mode, stored in fp16) and later epochs and dev evaluations only run the
        small aside pathway. Memory grows with the number of distinct sequences; turn it off
        (``enabled=False``) to free it.
        """
        if self.aside is None:
            raise IrkitError(f"the tap cache needs connected adapters, not {self.tune_config.method!r}")
        self._tap_cache = {} if enabled else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> BaseModelOutput:
        if self.aside is not None and self._tap_cache is not None:
            return BaseModelOutput(
                last_hidden_state=self.aside_output(self._cached_taps(input_ids, attention_mask, token_type_ids))
            )
        want_hidden = self.aside is not None
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._backbone_grad):
            out = self.backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                output_hidden_states=want_hidden,
            )
        if self.aside is None:
            return BaseModelOutput(last_hidden_state=out.last_hidden_state)
        return BaseModelOutput(last_hidden_state=self.aside_output(out.hidden_states[1:]))

    def aside_output(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        """``h_L + s_L`` from the layer outputs ``h_1..h_L`` (the connected pathway)."""
        assert self.aside is not None
        s = torch.zeros_like(taps[0])
        for module, h in zip(self.aside, taps, strict=True):
            s = s + module(h + s)
        return taps[-1] + s

    def _cached_taps(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
    ) -> list[torch.Tensor]:
        cache: dict[bytes, torch.Tensor] = self._tap_cache  # type: ignore[assignment]
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        lengths = mask.sum(1).tolist()
        keys = [
            input_ids[i, :n].numpy().tobytes() + b"|" + types[i, :n].numpy().tobytes() for i, n in enumerate(lengths)
        ]
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            width = max(lengths[i] for i in missing)
            was_training = self.backbone.training
            self.backbone.eval()
            with torch.no_grad():
                out = self.backbone(
                    input_ids=input_ids[missing, :width],
                    attention_mask=mask[missing, :width],
                    token_type_ids=types[missing, :width],
                    output_hidden_states=True,
                )
            self.backbone.train(was_training)
            stacked = torch.stack(out.hidden_states[1:], dim=1).half()  # (b, L, T, d)
            for row, i in enumerate(missing):
                cache[keys[i]] = stacked[row, :, : lengths[i]].clone()
        layers, dim = len(self.aside), int(self.config.hidden_size)
        taps = torch.zeros(layers, input_ids.shape[0], input_ids.shape[1], dim)
        for i, k in enumerate(keys):
            taps[:, i, : lengths[i]] = cache[k].float()
        return list(taps.unbind(0))


def _residual_hook(adapter: Bottleneck):
    """Houlsby placement: a projection's output ``y`` becomes ``y + B(y)`` before residual + LayerNorm."""

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + adapter(output)

    return hook


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``cls`` (first token) or ``mean`` (mask-weighted mean over tokens)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class TunedCrossEncoder(nn.Module):
    """A tuned encoder plus a linear score head; call contract of ``AutoModelForSequenceClassification``.

    ``model(input_ids=, attention_mask=, token_type_ids=).logits`` has shape ``(B, 1)``.
    """

    def __init__(self, encoder: TunedEncoder, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise IrkitError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.encoder = encoder
        self.config = encoder.config
        self.pooling = pooling
        self.head = nn.Linear(int(encoder.config.hidden_size), 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state
        return SequenceClassifierOutput(logits=self.head(pool(hidden, attention_mask, self.pooling)))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (``requires_grad``), by name: what an artifact stores."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
