"""BiEncoder: texts to L2-normalised vectors with a BERT-style encoder and mean pooling.

Asymmetric models put a task prefix before queries and another before documents (nomic-embed:
``search_query: `` / ``search_document: ``; EmbeddingGemma: the ``query`` and ``document``
prompts of its sentence-transformers config). ``encode_queries`` and ``encode_documents`` add
them; plain ``encode`` is for symmetric models and refuses an asymmetric one, so a query is
never encoded without its prefix by mistake. Besides transformers folders, a nomic-bert GGUF
(``irkit.models.nomic``) and a sentence-transformers folder with ``Dense`` layers after the
pooling (EmbeddingGemma) load too.

Speed on CPU comes from four things (gains measured on 2-core AMD EPYCs with the piece
toggled; end-to-end numbers against sentence-transformers: ``eval/results/encode.md``):

* texts are tokenised once, sorted by token length and batched with dynamic padding,
  so short texts do not pay for long ones, with at most 2,048 tokens per forward pass;
* batches run side by side, one per core on one torch thread each
  (``irkit.models.batching.run_batches``), rather than every matrix product of one batch
  split over the cores, which pays a thread hand-off per product;
* fp32 linear layers run on oneDNN's kernels with weights packed once and a BERT
  feed-forward layer's GELU fused into its first matmul (``irkit.models.onednn``, shared
  with the cross-encoder). On AVX-512 CPUs this is the big gain (about 1.8x on a Zen 5,
  where PyTorch's default MKL matmul takes its AVX2 path on AMD). On AVX2-only CPUs both
  libraries run AVX2 kernels at the same speed (40-65 GFLOP/s per core on MiniLM's shapes
  on the Zen 3) and the fused GELU leaves oneDNN a few percent ahead, so the same path
  serves both kinds of CPU and nothing is chosen per CPU flag;
* attention runs through PyTorch's fused scaled-dot-product kernel (the transformers
  default for BERT): about 1.8x faster than the eager implementation.

``backend="int8"`` (opt-in) quantises the linear layers to int8 (``irkit.models.quantize``):
faster again, vectors slightly different; its quality cost is measured in eval/regressions.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irkit.errors import IrkitError
from irkit.models.batching import evaluating, run_batches, text_batches
from irkit.models.onednn import OneDNNLinears
from irkit.models.quantize import apply_backend, check_backend
from irkit.models.registry import resolve


class BiEncoder:
    """Encode queries and documents into one vector space (sentence-transformers style).

    ``onednn=False`` runs the model exactly as PyTorch ships it (same results up to fp32
    rounding; slower on CPUs where MKL does not use AVX-512). ``backend="int8"`` runs the
    transformer's linear layers in int8 (faster, approximate, inference only; see
    ``irkit.models.quantize``). ``query_prefix`` and ``document_prefix`` override the
    model's own prefixes ("" for none).
    """

    def __init__(
        self,
        model: str = "minilm",
        max_length: int = 256,
        normalize: bool = True,
        onednn: bool = True,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        backend: str = "fp32",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        from irkit.models import nomic
        from irkit.models.tuned import is_artifact, load_bi_encoder

        check_backend(backend)  # before loading the model
        path = resolve(model)
        dense_layers: list[Any] = []  # sentence-transformers ``Dense`` layers after pooling
        prompts: dict[str, str] = {}
        try:
            if is_artifact(path):  # a bi-encoder tuned by irkit.tune (backbone + adapters)
                net, tokenizer = load_bi_encoder(path)
                prompts = net.prompts
            elif (gguf := nomic.find_gguf(path)) is not None:
                net, tokenizer = nomic.load_nomic(gguf)
                prompts = nomic.PROMPTS
            else:
                tokenizer = AutoTokenizer.from_pretrained(path)
                net = AutoModel.from_pretrained(path).eval()
                prompts, dense_layers = _sentence_transformers_modules(Path(path))
        except (OSError, ValueError) as e:
            raise IrkitError(
                f"cannot load encoder {model!r} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "pass a local model directory, a registered name or a cached hub id"
            ) from None
        self._setup(str(model), net, tokenizer, max_length, normalize, onednn, dense_layers, backend)
        self.query_prefix = prompts.get("query", "") if query_prefix is None else query_prefix
        self.document_prefix = prompts.get("document", "") if document_prefix is None else document_prefix

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, max_length: int = 256, normalize: bool = True) -> BiEncoder:
        """Wrap a model already in memory (e.g. one being tuned); it encodes as it is, in eval mode,
        with the prefixes of a tuned encoder's backbone (``TunedEncoder.prompts``) and none otherwise."""
        self = cls.__new__(cls)
        self._setup("in-memory", model, tokenizer, max_length, normalize, True, [])
        prompts = getattr(model, "prompts", {})
        self.query_prefix, self.document_prefix = prompts.get("query", ""), prompts.get("document", "")
        return self

    def _setup(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        max_length: int,
        normalize: bool,
        onednn: bool,
        dense: list[Any],
        backend: str = "fp32",
    ) -> None:
        import torch

        self.name, self.model, self.tokenizer = name, apply_backend(model, backend), tokenizer
        #: ``fp32`` or ``int8`` (``irkit.models.quantize``); int8 changes the vectors
        self.backend = backend
        #: sentence-transformers ``Dense`` layers applied to the pooled vector, in order
        self.dense_layers = dense
        self.query_prefix: str = ""
        self.document_prefix: str = ""
        self.max_length = max_length
        self.normalize = normalize
        self._fast = OneDNNLinears(enabled=onednn)
        last = dense[-1].out_features if dense else model.config.hidden_size
        self.dim: int = int(last)
        self._torch = torch

    @property
    def symmetric(self) -> bool:
        """True when queries and documents are encoded alike (no prefixes)."""
        return not (self.query_prefix or self.document_prefix)

    @property
    def onednn(self) -> bool:
        """Whether ``encode`` runs the linear layers on oneDNN (settable, e.g. for A/B checks)."""
        return self._fast.enabled

    @onednn.setter
    def onednn(self, value: bool) -> None:
        self._fast.enabled = value and bool(self._torch.backends.mkldnn.is_available())

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors of ``texts`` as given, in input order (symmetric models)."""
        if not self.symmetric:
            raise IrkitError(
                f"encoder {self.name!r} prefixes queries with {self.query_prefix!r} and documents with "
                f"{self.document_prefix!r}: use encode_queries or encode_documents"
            )
        return self._encode(texts, batch_size, show_progress)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """Vectors of queries, each with the model's query prefix."""
        return self._encode([self.query_prefix + t for t in texts], batch_size, show_progress)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """Vectors of documents, each with the model's document prefix."""
        return self._encode([self.document_prefix + t for t in texts], batch_size, show_progress)

    def _encode(self, texts: Sequence[str], batch_size: int, show_progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        batches = text_batches(self.tokenizer, texts, self.max_length, batch_size, "encode", show_progress)

        def step(batch: tuple[np.ndarray, dict[str, Any], Any]) -> None:
            idx, inputs, mask = batch
            out[idx] = self.vectors(inputs["input_ids"], mask).numpy()

        with evaluating(self.model), self._fast(self.model):
            run_batches(batches, step)
        return out

    def embed(self, texts: Sequence[str]) -> Any:
        """Vectors of ``texts`` as one padded batch, as a torch tensor on the autograd graph (for training)."""
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        return self.vectors(enc["input_ids"], enc["attention_mask"])

    def vectors(self, input_ids: Any, mask: Any) -> Any:
        """The model's vectors of a padded batch: mean-pooled token states, the Dense layers, L2-normalised."""
        hidden = self.model(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state.float()
        vec = pool(hidden, mask)
        for layer in self.dense_layers:
            vec = layer(vec)
        return self._torch.nn.functional.normalize(vec, dim=-1) if self.normalize else vec


def pool(hidden: Any, mask: Any, pooling: str = "mean") -> Any:
    """One vector per row of ``hidden`` (batch, tokens, dim): ``mean`` of the unmasked tokens, or the ``cls`` token."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


_ST_PLAIN = {"Transformer", "Normalize"}  # modules BiEncoder's own steps already cover


def _sentence_transformers_modules(path: Path) -> tuple[dict[str, str], list[Any]]:
    """The ``query``/``document`` prompts and ``Dense`` layers of a sentence-transformers folder.

    BiEncoder runs the transformer, mean-pools, applies the Dense layers and normalises; a
    folder asking for anything else (another pooling, an activation, other modules) is refused
    rather than encoded differently from its authors' intent. Plain transformers folders give
    no prompts and no layers.
    """
    import torch
    from safetensors.torch import load_file

    from irkit.data.io import read_json_object

    prompts: dict[str, str] = {}
    config = path / "config_sentence_transformers.json"
    if config.is_file():
        found = read_json_object(config, "sentence-transformers config").get("prompts") or {}
        prompts = {k: str(found[k]) for k in ("query", "document") if k in found}
    layers: list[Any] = []
    modules = path / "modules.json"
    if not modules.is_file():
        return prompts, layers
    for module in json.loads(modules.read_text(encoding="utf-8")):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = path / module.get("path", "")
        if kind == "Pooling":
            pooling = read_json_object(folder / "config.json", "pooling config")
            modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
            if modes != ["pooling_mode_mean_tokens"]:
                raise IrkitError(f"BiEncoder pools by the mean of tokens; this model asks for {modes}", path=folder)
        elif kind == "Dense":
            cfg = read_json_object(folder / "config.json", "Dense layer config")
            activation = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity"))
            if not activation.endswith("Identity"):
                raise IrkitError(f"Dense layer activation {activation!r} is not supported", path=folder)
            linear = torch.nn.Linear(int(cfg["in_features"]), int(cfg["out_features"]), bias=bool(cfg.get("bias")))
            weights = load_file(str(folder / "model.safetensors"))
            linear.load_state_dict({k.removeprefix("linear."): v for k, v in weights.items()})
            layers.append(linear.eval())
        elif kind not in _ST_PLAIN:
            raise IrkitError(f"sentence-transformers module {module.get('type')!r} is not supported", path=modules)
    return prompts, layers
