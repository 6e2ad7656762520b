"""Tuning methods for a frozen BERT-style encoder: connected adapters, a fast side network, and the baselines.

**Connected adapters** follow Ma et al., "Scattered or Connected? An Optimized
Parameter-efficient Tuning Approach for Information Retrieval" (CIKM 2022, arXiv 2208.09847).

The problem they diagnose. Parameter-efficient methods put small trainable modules
*inside* every block of a frozen transformer (Houlsby adapters, LoRA, prefixes, BitFit's
biases). Below 1 % trainable parameters these fall short of full fine-tuning for retrieval
and re-ranking, and they learn slowly and unstably: the modules are *scattered*, so the
loss reaches the module of block ``l`` only through the frozen blocks ``l+1..L`` above it.

Their remedy. Keep the in-block modules, and add modules *alongside* the pre-trained model
that connect the scattered ones into one trainable pathway from the bottom to the output,
which smooths the loss surface and stabilises training. What we could read of the paper
offline is its abstract and introduction (the statements above) and secondary accounts: a
reading note describes the addition as skip connections that improve gradient flow (an
"aside" module with a bottleneck architecture) and three variants that differ in where the
bottlenecks are inserted, the one labelled "L" working best (we read: layer-level). The
method section's equations were not retrievable, so the exact form below is ours; every
choice is named (eval/results/tune.md lists them with the reasons).

The model, for blocks ``l = 1..L`` of the frozen backbone::

    in-block:  y_l  <- y_l + a_l,         a_l = A_l(y_l)          (the adapted state flows on)
    pathway:   s_0 = 0,  u_l = s_{l-1} + a_l,  s_l = u_l + G_l(u_l)
    output:    h_L + s_L

``A_l`` and ``G_l`` are bottlenecks ``W_up GELU(W_down x)`` (d -> r -> d). ``y_l`` is the
tensor the in-block adapter rewrites; ``placement`` picks it (the variants):

- ``layer`` (default): the block's output. The adapted state is what block ``l+1`` reads.
- ``ffn``: the feed-forward output projection, before the block's residual + LayerNorm.
- ``sublayers``: the attention-output and the feed-forward-output projections (Houlsby's
  two sites); the pathway takes the sum of a block's two adapter outputs.

Choices, and why:

- The pathway carries each in-block adapter's *output* ``a_l`` upward by identity skips.
  Then ``d loss / d a_l`` contains ``d loss / d output`` directly, for every ``l``: the bottom
  adapter is as close to the loss as the top one (the "connection"), while its in-block
  effect still changes what every later block and its attention sees, and that gradient
  still flows back through the frozen blocks.
- One aside bottleneck ``G_l`` per block transforms the running pathway (the "aside
  module"), so the pathway is more than a sum of adapter outputs.
- ``W_up`` of every bottleneck starts at zero: ``a_l = 0`` and ``G_l(0) = 0``, so training
  starts from the untuned model exactly.
- Budget: at MiniLM-L6 (d = 384) ranks 16 (in-block) + 16 (aside) give 152,256 trainable
  parameters, 0.67 % of the model, the same as Houlsby (two adapters per block) at r = 16.
- ``pathway=False`` removes ``G`` and the skips: what is left is plain in-block adapters
  (``sublayers`` is then exactly Houlsby).

**Side** (``side``) is irkit's faster design, shipped before the above: bottlenecks beside
the *frozen* layer outputs only, ``s_l = s_{l-1} + B_l(h_l + s_{l-1})``, output ``h_L + s_L``.
No module sits inside the backbone, so no gradient crosses it and the backbone runs once per
distinct input (:meth:`TunedEncoder.enable_tap_cache`); a step costs little more than a
forward pass, but attention never sees an adapted state.

Baselines: ``houlsby`` (bottleneck after the attention-output and FFN-output projections of
every block, before the residual + LayerNorm), ``lora`` (``peft`` LoRA on query and value),
``bitfit`` (bias terms only) and ``full`` (everything).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from irkit.errors import IrkitError
from irkit.models.encoder import pool
from irkit.tune import METHODS, PLACEMENTS

# ranks for ~0.66 % trainable parameters on MiniLM-L6 (bitfit and full have no rank)
DEFAULT_RANK = {"connected": 16, "side": 32, "houlsby": 16, "lora": 16}


@dataclass
class TuneConfig:
    """How a backbone is tuned; stored verbatim in the artifact's ``irkit_adapter.json``."""

    method: str = "connected"
    rank: int | None = None  # None: DEFAULT_RANK of the method
    lora_alpha: int = 16
    placement: str = "layer"  # connected: where the in-block adapters sit (PLACEMENTS)
    aside_rank: int | None = None  # connected: rank of the aside modules; None: same as rank
    pathway: bool = True  # connected: False leaves plain in-block adapters

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise IrkitError(f"unknown tuning method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.placement not in PLACEMENTS:
            raise IrkitError(f"unknown adapter placement {self.placement!r} (choose from {', '.join(PLACEMENTS)})")
        if self.rank is None:
            self.rank = DEFAULT_RANK.get(self.method, 16)
        if self.aside_rank is None:
            self.aside_rank = self.rank
        if self.rank < 1 or self.aside_rank < 1:
            raise IrkitError(f"adapter ranks must be >= 1, got {self.rank} and {self.aside_rank}")

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
    rank = int(config.rank)  # type: ignore[arg-type]
    if config.method == "connected":
        sites = 2 * layers if config.placement == "sublayers" else layers
        pathway = layers * bottleneck_params(hidden, int(config.aside_rank)) if config.pathway else 0  # type: ignore[arg-type]
        return sites * bottleneck_params(hidden, rank) + pathway
    if config.method == "side":
        return layers * bottleneck_params(hidden, rank)
    if config.method == "houlsby":
        return 2 * layers * bottleneck_params(hidden, rank)
    if config.method == "lora":  # A: r x d and B: d x r, on query and value
        return layers * 2 * 2 * hidden * rank
    raise IrkitError(f"no closed form for method {config.method!r}")


def _layers(backbone: nn.Module) -> nn.ModuleList:
    """The transformer blocks: ``.encoder.layer`` of a transformers BERT, ``.layers`` of nomic-bert."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if layers is None and _is_nomic(backbone):
        layers = backbone.layers
    if not isinstance(layers, nn.ModuleList):
        raise IrkitError(f"{type(backbone).__name__} is not a BERT-style encoder (no .encoder.layer)")
    return layers


def _is_nomic(backbone: nn.Module) -> bool:
    from irkit.models.nomic import NomicBert

    return isinstance(backbone, NomicBert)


def _sublayer_outputs(layer: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A block's attention and feed-forward output projections (before each residual add and LayerNorm)."""
    if hasattr(layer, "attention"):
        return layer.attention.output.dense, layer.output.dense
    return layer.out, layer.down  # nomic-bert's NomicBlock


def _sites(layers: nn.ModuleList, placement: str) -> list[tuple[int, nn.Module]]:
    """``(block index, module)`` whose output an in-block adapter rewrites, bottom to top."""
    if placement == "layer":
        return list(enumerate(layers))
    if placement == "ffn":
        return [(i, _sublayer_outputs(layer)[1]) for i, layer in enumerate(layers)]
    return [(i, m) for i, layer in enumerate(layers) for m in _sublayer_outputs(layer)]


class TunedEncoder(nn.Module):
    """A BERT-style encoder with one tuning method applied; call contract of ``AutoModel``.

    ``forward(input_ids, attention_mask, token_type_ids).last_hidden_state`` is what
    :class:`irkit.models.encoder.BiEncoder` pools, so a tuned encoder drops in for the backbone.
    Trainable modules: ``adapters`` (in-block: connected, houlsby), ``aside`` (connected's
    pathway), ``side`` (the side network); LoRA and BitFit live inside ``backbone``.
    """

    def __init__(self, backbone: nn.Module, config: TuneConfig, prompts: dict[str, str] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.tune_config = config
        self.config = backbone.config
        #: the backbone's ``query``/``document`` prefixes: training and every later use apply them
        self.prompts = dict(prompts or {})
        hidden = int(backbone.config.hidden_size)
        layers = _layers(backbone)
        rank = int(config.rank)  # type: ignore[arg-type]
        self.adapters: nn.ModuleList | None = None
        self.aside: nn.ModuleList | None = None
        self.side: nn.ModuleList | None = None
        method = config.method
        for p in backbone.parameters():
            p.requires_grad_(method == "full")
        if method in ("connected", "houlsby"):
            sites = _sites(layers, "sublayers" if method == "houlsby" else config.placement)
            self.adapters = nn.ModuleList(Bottleneck(hidden, rank) for _ in sites)
            for (block, module), adapter in zip(sites, self.adapters, strict=True):
                module.register_forward_hook(_InBlock(self, adapter, block))
            if method == "connected" and config.pathway:
                self.aside = nn.ModuleList(Bottleneck(hidden, int(config.aside_rank)) for _ in layers)  # type: ignore[arg-type]
        elif method == "side":
            self.side = nn.ModuleList(Bottleneck(hidden, rank) for _ in layers)
        elif method == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            # query and value projections; nomic-bert fuses q, k and v into one (the same 4·d·r per block)
            targets = ["qkv"] if _is_nomic(backbone) else ["query", "value"]
            lora = LoraConfig(r=rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=targets)
            inject_adapter_in_model(lora, backbone)  # marks only lora_* trainable
        elif method == "bitfit":
            for name, p in backbone.named_parameters():
                p.requires_grad_(name.endswith(".bias"))
        # only the side network keeps every trainable module out of the backbone: it alone needs no autograd there
        self._backbone_grad = method != "side"
        # in-block adapter outputs of the forward running in each thread (threads may share the model:
        # irkit.models.batching.run_batches runs batches side by side)
        self._deltas_by_thread: dict[int, list[torch.Tensor | None]] = {}
        self._tap_cache: dict[bytes, torch.Tensor] | None = None

    @property
    def _deltas(self) -> list[torch.Tensor | None] | None:
        """The in-block adapter outputs of this thread's current forward (None outside one)."""
        return self._deltas_by_thread.get(threading.get_ident())

    @_deltas.setter
    def _deltas(self, value: list[torch.Tensor | None] | None) -> None:
        if value is None:
            self._deltas_by_thread.pop(threading.get_ident(), None)
        else:
            self._deltas_by_thread[threading.get_ident()] = value

    def enable_tap_cache(self, enabled: bool = True) -> None:
        """Side network only: remember the frozen backbone's layer outputs per input sequence.

        The backbone is never on the gradient path, so its outputs for a given (query, doc)
        pair never change: with the cache on, each distinct sequence runs through the backbone
        once (in eval mode, stored in fp16) and later epochs and dev evaluations only run the
        small side network. Memory grows with the number of distinct sequences; turn it off
        (``enabled=False``) to free it.
        """
        if self.side is None:
            raise IrkitError(f"the tap cache needs the side network, not {self.tune_config.method!r}")
        self._tap_cache = {} if enabled else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> BaseModelOutput:
        if self.side is not None and self._tap_cache is not None:
            return BaseModelOutput(
                last_hidden_state=self.side_output(self._cached_taps(input_ids, attention_mask, token_type_ids))
            )
        if self.aside is not None:
            self._deltas = [None] * len(self.aside)
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self._backbone_grad):
                out = self.backbone(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                    output_hidden_states=self.side is not None,
                )
        finally:
            deltas, self._deltas = self._deltas, None
        if self.side is not None:
            return BaseModelOutput(last_hidden_state=self.side_output(out.hidden_states[1:]))
        hidden = out.last_hidden_state
        if self.aside is not None:
            hidden = hidden + self.pathway(deltas)  # type: ignore[arg-type]
        return BaseModelOutput(last_hidden_state=hidden)

    def pathway(self, deltas: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """``s_L`` from the in-block adapter outputs ``a_1..a_L`` (connected): ``u = s + a``, ``s = u + G(u)``."""
        assert self.aside is not None
        if any(a is None for a in deltas):
            raise IrkitError("the backbone skipped a block: the connected pathway needs every block's adapter")
        s = torch.zeros_like(deltas[0])  # type: ignore[arg-type]
        for module, a in zip(self.aside, deltas, strict=True):
            u = s + a
            s = u + module(u)
        return s

    def side_output(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        """``h_L + s_L`` from the frozen layer outputs ``h_1..h_L`` (the side network)."""
        assert self.side is not None
        s = torch.zeros_like(taps[0])
        for module, h in zip(self.side, taps, strict=True):
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
        layers, dim = len(self.side), int(self.config.hidden_size)  # type: ignore[arg-type]
        taps = torch.zeros(layers, input_ids.shape[0], input_ids.shape[1], dim)
        for i, k in enumerate(keys):
            taps[:, i, : lengths[i]] = cache[k].float()
        return list(taps.unbind(0))


class _InBlock:
    """Forward hook of an in-block adapter: the module's output ``y`` becomes ``y + A(y)``.

    While the encoder runs its connected pathway it also records ``A(y)`` per block (the sum
    of a block's adapter outputs when it has two).
    """

    def __init__(self, encoder: TunedEncoder, adapter: Bottleneck, block: int) -> None:
        self.encoder, self.adapter, self.block = encoder, adapter, block

    def __call__(self, _module: nn.Module, _inputs: tuple, output: Any) -> Any:
        y = output[0] if isinstance(output, tuple) else output
        delta = self.adapter(y)
        deltas = self.encoder._deltas
        if deltas is not None:
            prev = deltas[self.block]
            deltas[self.block] = delta if prev is None else prev + delta
        y = y + delta
        return (y, *output[1:]) if isinstance(output, tuple) else y


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
