"""Mechanics of irkit.tune on tiny random BERT models (real transformers, real trainer) and real SciFact text."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from irkit.errors import IrkitError
from irkit.models import tuned
from irkit.models.registry import resolve
from irkit.rerank.cross_encoder import CrossEncoder
from irkit.tune import artifacts
from irkit.tune.adapters import (
    TuneConfig,
    TunedCrossEncoder,
    TunedEncoder,
    count_params,
    expected_trainable,
)
from irkit.tune.trainer import (
    Example,
    TrainConfig,
    Trainer,
    as_reranker,
    build_examples,
    interpolation_weight,
    split_dev,
)


def ce_scores(model: torch.nn.Module, tok, queries: list[str], docs: list[str], max_length: int = 192) -> np.ndarray:
    """Scores of ``(queries[i], docs[i])`` through the CrossEncoder users run."""
    return CrossEncoder.from_model(model, tok, max_length).predict(list(zip(queries, docs, strict=True)))


TINY = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}


def tiny_backbone(layers: int = 4, seed: int = 0, dropout: float = 0.1) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=30522,
        num_hidden_layers=layers,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **TINY,
    )
    return BertModel(cfg, add_pooling_layer=False)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT saved with the real MiniLM tokenizer: a backbone directory like any other."""
    out = tmp_path_factory.mktemp("tiny-bert")
    tiny_backbone(layers=2).save_pretrained(out)
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(out)
    return out


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[2:, 9:] = 0
    return ids, mask


# every method with its in-block/aside/side modules: the tune section of an artifact
CONFIGS = {
    "connected": {"method": "connected"},
    "connected-ffn": {"method": "connected", "placement": "ffn"},
    "connected-sublayers": {"method": "connected", "placement": "sublayers"},
    "in-block": {"method": "connected", "pathway": False},
    "side": {"method": "side"},
    "houlsby": {"method": "houlsby"},
    "lora": {"method": "lora"},
}


@pytest.mark.parametrize("name", CONFIGS)
def test_zero_initialised_adapters_reproduce_frozen_outputs_exactly(name: str) -> None:
    backbone = tiny_backbone().eval()
    ids, mask = _batch()
    with torch.no_grad():
        frozen = backbone(input_ids=ids, attention_mask=mask).last_hidden_state.clone()
        tuned = TunedEncoder(backbone, TuneConfig(**CONFIGS[name], rank=8)).eval()
        out = tuned(ids, mask).last_hidden_state
    assert torch.equal(out, frozen)


@pytest.mark.parametrize(
    ("method", "prefixes"),
    [
        ("connected", ("encoder.adapters.", "encoder.aside.")),
        ("side", ("encoder.side.",)),
        ("houlsby", ("encoder.adapters.",)),
        ("lora", ("encoder.backbone.",)),
        ("bitfit", ("",)),
    ],
)
def test_only_adapter_parameters_require_grad(method: str, prefixes: tuple[str, ...]) -> None:
    model = TunedCrossEncoder(TunedEncoder(tiny_backbone(), TuneConfig(method=method, rank=8)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen, "the backbone must stay frozen"
    for prefix in prefixes:  # each kind of module is there
        assert any(n.startswith(prefix) for n in trainable), prefix
    for name in trainable:
        if name.startswith("head."):
            continue
        assert name.startswith(prefixes), name
        if method == "lora":
            assert ".lora_A." in name or ".lora_B." in name, name
        if method == "bitfit":
            assert name.endswith(".bias"), name
    assert {"head.weight", "head.bias"} <= set(trainable)


def test_full_fine_tuning_trains_everything() -> None:
    model = TunedEncoder(tiny_backbone(), TuneConfig(method="full"))
    trainable, total = count_params(model)
    assert trainable == total


def test_unknown_method_or_placement_is_a_clear_error() -> None:
    with pytest.raises(IrkitError, match="unknown tuning method 'prefix'"):
        TuneConfig(method="prefix")
    with pytest.raises(IrkitError, match="unknown adapter placement 'attn'"):
        TuneConfig(placement="attn")


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_count_formula(name: str) -> None:
    cfg = TuneConfig(**CONFIGS[name], rank=5, aside_rank=3)
    model = TunedEncoder(tiny_backbone(layers=3), cfg)
    trainable, _ = count_params(model)
    assert trainable == expected_trainable(cfg, hidden=32, layers=3)


def test_default_ranks_give_every_adapter_method_the_same_budget_on_minilm_shape() -> None:
    """MiniLM-L6 (d=384, 6 layers), default ranks: connected 16 + 16 -> 6 * 2 * (2*384*16 + 16 + 384) = 152,256
    parameters; Houlsby r=16 the same; side r=32 149,952; LoRA r=16 147,456: all 0.65-0.67 % of the model."""
    cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    shares = {}
    for method in ("connected", "side", "houlsby", "lora"):
        model = TunedEncoder(BertModel(cfg, add_pooling_layer=False), TuneConfig(method=method))
        trainable, total = count_params(model)
        shares[method] = trainable / total
        if method == "connected":
            assert trainable == 152_256
    assert all(0.0064 < share < 0.0068 for share in shares.values()), shares


class _AdaptedBlock(torch.nn.Module):
    """Reference for plain in-block adapters, written independently of the hooks: block, then ``h + A(h)``."""

    def __init__(self, block: torch.nn.Module, adapter: torch.nn.Module) -> None:
        super().__init__()
        self.block, self.adapter = block, adapter

    def forward(self, *args, **kwargs):
        h = self.block(*args, **kwargs)
        return h + self.adapter(h)


def test_without_the_pathway_connected_reduces_exactly_to_plain_in_block_adapters() -> None:
    ids, mask = _batch()
    # layer placement: the same adapters wrapped around each block of a copy of the backbone
    tuned = TunedEncoder(tiny_backbone(dropout=0.0), TuneConfig(method="connected", rank=4, pathway=False))
    _perturb(tuned)
    reference = tiny_backbone(dropout=0.0)
    blocks = reference.encoder.layer
    for i, adapter in enumerate(tuned.adapters):
        blocks[i] = _AdaptedBlock(blocks[i], adapter)
    with torch.no_grad():
        assert torch.equal(tuned(ids, mask).last_hidden_state, reference(input_ids=ids, attention_mask=mask)[0])
    # sublayer placement without the pathway is Houlsby: same parameters, same outputs
    plain = TunedEncoder(tiny_backbone(), TuneConfig(method="connected", placement="sublayers", rank=4, pathway=False))
    houlsby = TunedEncoder(tiny_backbone(), TuneConfig(method="houlsby", rank=4))
    _perturb(plain)
    state = {n: p for n, p in plain.named_parameters() if p.requires_grad}
    assert set(state) == {n for n, p in houlsby.named_parameters() if p.requires_grad}
    houlsby.load_state_dict(state, strict=False)
    plain.eval()
    houlsby.eval()
    with torch.no_grad():
        assert torch.equal(plain(ids, mask).last_hidden_state, houlsby(ids, mask).last_hidden_state)
        # with the pathway the adapters' outputs also reach the output directly: a different model
        connected = TunedEncoder(tiny_backbone(), TuneConfig(method="connected", placement="sublayers", rank=4))
        connected.load_state_dict(state, strict=False)
        assert not torch.equal(connected.eval()(ids, mask).last_hidden_state, plain(ids, mask).last_hidden_state)


def test_frozen_backbone_gets_no_updates_but_passes_gradients(tiny_dir: Path, scifact_dir: Path) -> None:
    examples = _scifact_examples(scifact_dir, n_queries=8, n_negatives=3)
    model, tok = artifacts.build("cross-encoder", str(tiny_dir), {"method": "connected", "rank": 8})
    backbone = {n: p.detach().clone() for n, p in model.encoder.backbone.named_parameters()}
    adapters = {n: p.detach().clone() for n, p in model.encoder.named_parameters() if p.requires_grad}
    cfg = TrainConfig(epochs=1, batch_size=4, n_negatives=3, lr=1e-2, max_length=64, warmup=0)
    Trainer(model, tok, cfg).fit(examples, show_progress=False)
    for name, p in model.encoder.backbone.named_parameters():
        assert not p.requires_grad and p.grad is None and torch.equal(p, backbone[name]), name
    changed = [n for n, p in model.encoder.named_parameters() if p.requires_grad and not torch.equal(p, adapters[n])]
    assert any(n.startswith("adapters.0.") for n in changed) and any(n.startswith("aside.") for n in changed)
    # with the pathway removed, the bottom adapter is reached only through the frozen blocks above it
    plain = TunedEncoder(tiny_backbone(dropout=0.0), TuneConfig(method="connected", rank=4, pathway=False))
    _perturb(plain)
    ids, mask = _batch()
    plain(ids, mask).last_hidden_state.square().mean().backward()
    assert float(plain.adapters[0].up.weight.grad.norm()) > 0
    assert all(p.grad is None for p in plain.backbone.parameters())


def _bottom_adapter_grad(pathway: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_up`` gradient of the bottom adapter at initialisation, and the part a direct route from the output gives:
    ``sum over tokens of d loss / d output (x) GELU(W_down y_1)``."""
    backbone = tiny_backbone(layers=4, seed=seed, dropout=0.0)
    torch.manual_seed(100 + seed)
    encoder = TunedEncoder(backbone, TuneConfig(method="connected", rank=4, pathway=pathway))
    torch.manual_seed(200 + seed)  # the same head with and without the pathway
    model = TunedCrossEncoder(encoder)
    seen: dict[str, torch.Tensor] = {}
    encoder.adapters[0].act.register_forward_hook(lambda _m, _i, out: seen.setdefault("act", out))

    def keep_output(_m, _i, out) -> None:
        out.last_hidden_state.retain_grad()
        seen["out"] = out.last_hidden_state

    encoder.register_forward_hook(keep_output)
    ids, mask = _batch(seed)
    logits = model(input_ids=ids, attention_mask=mask).logits.view(1, 4)
    torch.nn.functional.cross_entropy(logits, torch.zeros(1, dtype=torch.long)).backward()
    direct = torch.einsum("btd,btr->dr", seen["out"].grad, seen["act"].detach())
    return encoder.adapters[0].up.weight.grad, direct


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_pathway_gives_the_bottom_adapter_the_output_gradient_directly(seed: int) -> None:
    """Plain in-block adapters: the bottom adapter's gradient arrives only through the 3 frozen blocks above it.
    Connected: exactly that gradient plus the output's own gradient, carried down by the pathway."""
    connected, direct = _bottom_adapter_grad(True, seed)
    scattered, _ = _bottom_adapter_grad(False, seed)
    assert float(scattered.norm()) > 0 and float(direct.norm()) > 0
    torch.testing.assert_close(connected, scattered + direct, rtol=1e-4, atol=1e-7)


def _perturb(model: torch.nn.Module) -> None:
    """Give every trainable parameter a non-trivial value, as training would."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name", [*CONFIGS, "bitfit", "full"])
def test_cross_encoder_save_load_round_trip_gives_identical_scores(name: str, tiny_dir: Path, tmp_path: Path) -> None:
    tune = CONFIGS.get(name, {"method": name}) | {"rank": 4}
    model, tok = artifacts.build("cross-encoder", str(tiny_dir), tune)
    _perturb(model)
    model.eval()
    queries = ["do statins lower ldl?", "vitamin d and bone density"] * 2
    docs = ["Statins reduce LDL cholesterol in adults.", "Bone density rose.", "Unrelated text.", "More text here."]
    before = ce_scores(model, tok, queries, docs)
    out = artifacts.save(model, tmp_path / "ce", kind="cross-encoder", backbone=str(tiny_dir))
    cfg = json.loads((out / tuned.CONFIG_NAME).read_text())
    assert cfg["tune"] == TuneConfig(**tune).to_dict() and cfg["kind"] == "cross-encoder" and cfg["format"] == 2
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt")) and not list(out.glob("*.pkl"))
    loaded, tok2 = tuned.load_cross_encoder(out)
    after = ce_scores(loaded, tok2, queries, docs)
    assert after.shape == (4,)
    assert (before == after).all()
    # the same call contract as AutoModelForSequenceClassification
    enc = tok2(queries, docs, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert loaded(**enc).logits.shape == (4, 1)


def test_bi_encoder_round_trip_identical_hidden_states(tiny_dir: Path, tmp_path: Path) -> None:
    model, tok = artifacts.build("bi-encoder", str(tiny_dir), {"method": "connected", "rank": 4})
    _perturb(model)
    model.eval()
    enc = tok(["a query about proteins", "a document"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(enc["input_ids"], enc["attention_mask"]).last_hidden_state
    artifacts.save(model, tmp_path / "bi", kind="bi-encoder", backbone=str(tiny_dir))
    loaded, _ = tuned.load_bi_encoder(tmp_path / "bi")
    with torch.no_grad():
        after = loaded(enc["input_ids"], enc["attention_mask"]).last_hidden_state
    assert torch.equal(before, after)
    with pytest.raises(IrkitError, match="not a cross-encoder"):
        tuned.load_cross_encoder(tmp_path / "bi")


def test_adapter_artifact_is_small(tiny_dir: Path, tmp_path: Path) -> None:
    model, _ = artifacts.build("cross-encoder", str(tiny_dir), {"method": "connected", "rank": 4})
    out = artifacts.save(model, tmp_path / "ce", kind="cross-encoder", backbone=str(tiny_dir))
    trainable, _ = count_params(model)
    size = (out / tuned.WEIGHTS_NAME).stat().st_size
    assert size < 4 * trainable + 4096  # fp32 trainable parameters + header, no backbone


def test_bad_artifacts_name_the_file(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(IrkitError, match=r"no irkit_adapter\.json"):
        tuned.load(tmp_path)
    model, _ = artifacts.build("cross-encoder", str(tiny_dir), {"method": "connected", "rank": 4})
    out = artifacts.save(model, tmp_path / "ce", kind="cross-encoder", backbone=str(tiny_dir))
    cfg_path = out / tuned.CONFIG_NAME
    good = cfg_path.read_text()
    cfg_path.write_text("{not json")
    with pytest.raises(IrkitError, match="malformed JSON") as e:
        tuned.load(out)
    assert str(cfg_path) in str(e.value)
    cfg = json.loads(good)
    cfg["tune"]["rank"] = 8  # weights were saved for rank 4
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(IrkitError, match="shape") as e:
        tuned.load(out)
    assert tuned.WEIGHTS_NAME in str(e.value)
    cfg["tune"] = {"method": "houlsby", "rank": 4}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(IrkitError, match="do not match"):
        tuned.load(out)


@pytest.mark.parametrize(("method", "then", "now"), [("side", "connected", "side"), ("houlsby", "houlsby", "adapters")])
def test_format_1_artifacts_load_under_todays_names(
    method: str, then: str, now: str, tiny_dir: Path, tmp_path: Path
) -> None:
    """Before issue #16, "connected" named the side network (modules `aside`) and Houlsby's modules were `houlsby`."""
    from safetensors.torch import load_file, save_file

    model, tok = artifacts.build("cross-encoder", str(tiny_dir), {"method": method, "rank": 4})
    _perturb(model)
    out = artifacts.save(model, tmp_path / "v1", kind="cross-encoder", backbone=str(tiny_dir))
    weights = out / tuned.WEIGHTS_NAME
    old_name = "aside" if method == "side" else "houlsby"
    save_file({k.replace(f".{now}.", f".{old_name}."): v for k, v in load_file(str(weights)).items()}, str(weights))
    cfg = json.loads((out / tuned.CONFIG_NAME).read_text())
    cfg["format"], cfg["tune"] = 1, {"method": then, "rank": 4, "lora_alpha": 16}
    (out / tuned.CONFIG_NAME).write_text(json.dumps(cfg))
    loaded, _ = tuned.load_cross_encoder(out)
    assert loaded.encoder.tune_config.method == method
    queries, docs = ["statins and ldl", "bone density"], ["Statins reduce LDL.", "Unrelated text."]
    assert (ce_scores(loaded, tok, queries, docs) == ce_scores(model.eval(), tok, queries, docs)).all()


@pytest.fixture(scope="module")
def nomic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random nomic-bert GGUF: the architecture of nomic-embed-text-v1.5, 2 blocks."""
    from nomic_reference import write_tiny_nomic

    folder = tmp_path_factory.mktemp("tiny-nomic")
    write_tiny_nomic(folder / "model.gguf")
    return folder


@pytest.mark.parametrize("name", [*CONFIGS, "bitfit", "full"])
def test_every_method_tunes_nomic_bert(name: str, nomic_dir: Path, tmp_path: Path) -> None:
    """On nomic-bert (fused QKV, SwiGLU, no linear biases): zero-initialised adapters leave the
    outputs unchanged, LoRA adapts the fused QKV, the artifact round-trips, and every path that
    encodes with it (training, dev reranking, BiEncoder) applies nomic's task prefixes."""
    from irkit.models.encoder import BiEncoder
    from irkit.models.nomic import NomicBert

    tune = CONFIGS.get(name, {"method": name}) | {"rank": 4}
    model, tok = artifacts.build("bi-encoder", str(nomic_dir), tune)
    plain = NomicBert.from_gguf(nomic_dir / "model.gguf").eval()
    enc = tok(
        ["search_query: statins and ldl", "search_document: Statins lower LDL."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        frozen = plain(enc["input_ids"], enc["attention_mask"]).last_hidden_state
        assert torch.equal(model.eval()(enc["input_ids"], enc["attention_mask"]).last_hidden_state, frozen)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    if name == "lora":
        assert all(".qkv.lora_" in n for n in trainable), trainable
    _perturb(model)
    model.eval()
    with torch.no_grad():
        before = model(enc["input_ids"], enc["attention_mask"]).last_hidden_state
    assert not torch.equal(before, frozen)
    artifacts.save(model, tmp_path / "bi", kind="bi-encoder", backbone=str(nomic_dir))
    loaded = BiEncoder(str(tmp_path / "bi"))
    with torch.no_grad():
        assert torch.equal(loaded.model(enc["input_ids"], enc["attention_mask"]).last_hidden_state, before)
    assert (loaded.query_prefix, loaded.document_prefix) == ("search_query: ", "search_document: ")
    trainer = Trainer(model, tok, TrainConfig(max_length=32))
    assert (trainer._queries.query_prefix, trainer._documents.document_prefix) == (
        "search_query: ",
        "search_document: ",
    )
    docs = ["Statins lower LDL.", "Bone density rose."]
    np.testing.assert_allclose(
        as_reranker(model, tok, 32).score("statins and ldl", docs),
        loaded.encode_documents(docs) @ loaded.encode_queries(["statins and ldl"])[0],
        atol=1e-5,
    )


def test_split_dev_is_deterministic_and_disjoint() -> None:
    qids = [str(i) for i in range(100)]
    train, dev = split_dev(qids, 0.1, seed=3)
    assert (train, dev) == split_dev(list(reversed(qids)), 0.1, seed=3)
    assert len(dev) == 10 and not set(train) & set(dev) and set(train) | set(dev) == set(qids)


def _scifact_examples(scifact_dir: Path, n_queries: int, n_negatives: int) -> list[Example]:
    """Real SciFact train queries, their relevant abstracts and negatives from a small real pool."""
    from irkit.data.io import read_corpus, read_qrels, read_queries

    queries = read_queries(scifact_dir / "queries.jsonl")
    qrels = read_qrels(scifact_dir / "qrels" / "train.tsv", queries)
    qids = sorted(qrels)[:n_queries]
    wanted = {d for q in qids for d in qrels[q]}
    texts: dict[str, str] = {}
    for i, doc in enumerate(read_corpus(scifact_dir / "corpus.jsonl")):
        if doc.docid in wanted or i < 200:
            texts[doc.docid] = doc.contents
    return build_examples({q: qrels[q] for q in qids}, dict(queries.items()), {}, texts, n_negatives=n_negatives)


def test_build_examples_never_uses_a_positive_as_negative(scifact_dir: Path) -> None:
    examples = _scifact_examples(scifact_dir, n_queries=20, n_negatives=5)
    assert len(examples) >= 20
    for ex in examples:
        assert len(ex.negatives) == 5 and ex.positive not in ex.negatives


@pytest.mark.parametrize(("kind", "bf16"), [("cross-encoder", False), ("bi-encoder", False), ("cross-encoder", True)])
def test_training_a_two_layer_model_end_to_end_decreases_loss(
    kind: str, bf16: bool, tiny_dir: Path, tmp_path: Path, scifact_dir: Path
) -> None:
    """Real trainer, real SciFact texts, 2-layer random backbone with connected adapters (fp32 or bf16 autocast)."""
    examples = _scifact_examples(scifact_dir, n_queries=16, n_negatives=3)
    model, tok = artifacts.build(kind, str(tiny_dir), {"method": "connected", "rank": 16})
    log = tmp_path / "loss.jsonl"
    lr = 3e-2 if kind == "cross-encoder" else 5e-3
    cfg = TrainConfig(
        epochs=6, batch_size=4, n_negatives=3, lr=lr, max_length=64, warmup=0, patience=9, log_path=str(log), bf16=bf16
    )
    dtypes: set[torch.dtype] = set()
    # dtypes of the training steps (dev scoring runs in eval mode, through CrossEncoder, in fp32)
    first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda m, _i, out: dtypes.add(out.dtype) if m.training else None)
    dev_scores: list[float] = []

    def dev(m: torch.nn.Module) -> float:
        s = ce_scores(m, tok, [examples[0].query] * 2, [examples[0].positive, examples[0].negatives[0]])
        dev_scores.append(float(s[0] - s[1]) if kind == "cross-encoder" else float(len(dev_scores)))
        return dev_scores[-1]

    result = Trainer(model, tok, cfg).fit(examples, dev=dev if kind == "cross-encoder" else None, show_progress=False)
    per_epoch = len(result.losses) // cfg.epochs
    first = sum(result.losses[:per_epoch]) / per_epoch
    last = sum(result.losses[-per_epoch:]) / per_epoch
    assert last < 0.7 * first, (first, last)
    assert dtypes == ({torch.bfloat16} if bf16 else {torch.float32})
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert sum("loss" in r for r in records) == result.steps
    assert records[-1]["done"] is True
    if kind == "cross-encoder":  # dev checked before training and after each epoch; the best state is kept
        assert len(result.dev_history) == cfg.epochs + 1
        assert result.best_dev == max(dev_scores)
        # both clocks are read at every dev check and only grow (they exclude the checks themselves)
        for clock in (result.dev_train_s, result.dev_train_cpu_s):
            assert len(clock) == len(result.dev_history) and clock[0] == 0.0
            assert all(a < b for a, b in itertools.pairwise(clock))
        assert result.dev_train_cpu_s[-1] == result.train_cpu_s > 0


def test_a_step_budget_crosses_epochs_decays_to_zero_and_checks_the_final_state(
    tiny_dir: Path, tmp_path: Path, scifact_dir: Path
) -> None:
    """``steps`` (the equal-compute budget) runs exactly that many steps, passing over the data as often as needed,
    with the learning-rate schedule spread over them, and the last state gets a dev check."""
    examples = _scifact_examples(scifact_dir, n_queries=10, n_negatives=3)[:12]  # 3 steps per pass at batch 4
    assert len(examples) == 12
    model, tok = artifacts.build("cross-encoder", str(tiny_dir), {"method": "side"})
    log = tmp_path / "steps.jsonl"
    cfg = TrainConfig(steps=7, batch_size=4, n_negatives=3, max_length=32, eval_every=3, patience=9, log_path=str(log))
    result = Trainer(model, tok, cfg).fit(examples, dev=lambda m: 0.0, show_progress=False)
    steps = [json.loads(x) for x in log.read_text().splitlines() if '"loss"' in x]
    assert result.steps == len(steps) == 7
    assert [r["epoch"] for r in steps] == [0, 0, 0, 1, 1, 1, 2]
    assert steps[-1]["lr"] == 0.0 and steps[0]["lr"] > 0
    assert [s for s, _ in result.dev_history] == [0, 3, 6, 7]
    with pytest.raises(IrkitError, match="steps must be >= 0"):
        Trainer(model, tok, TrainConfig(steps=-1, batch_size=4, n_negatives=3, max_length=32)).fit(examples)


def test_tap_cache_runs_the_frozen_backbone_once_per_sequence() -> None:
    backbone = tiny_backbone(dropout=0.0)
    model = TunedCrossEncoder(TunedEncoder(backbone, TuneConfig(method="side", rank=4)))
    _perturb(model)
    model.eval()
    ids, mask = _batch()
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
    calls: list[int] = []
    backbone.register_forward_hook(lambda _m, _i, _o: calls.append(1))
    model.encoder.enable_tap_cache()
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask).logits
        again = model(input_ids=ids[[1, 0]], attention_mask=mask[[1, 0]]).logits
    assert len(calls) == 1  # the second call found both sequences cached
    assert torch.allclose(first, plain, atol=1e-3)  # taps are stored in fp16
    assert torch.equal(again, first[[1, 0]])
    model.train()  # training on cached taps: gradients reach the side modules
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()
    assert model.encoder.side[0].up.weight.grad is not None and len(calls) == 1
    with pytest.raises(IrkitError, match="side network"):
        TunedEncoder(tiny_backbone(), TuneConfig(method="connected")).enable_tap_cache()


def test_cli_tune_writes_a_loadable_artifact_and_its_pipeline(
    tiny_dir: Path, tmp_path: Path, scifact_dir: Path
) -> None:
    """`irkit tune` end to end on a small real BEIR directory (SciFact train queries on 300 docs); the
    pipeline.yaml it writes is valid and names the artifact and the dev-chosen weight."""
    import yaml

    from irkit.cli import main
    from irkit.pipeline.config import load_pipeline, plan_pipeline
    from irkit.pipeline.operators import Interpolate

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    lines = (scifact_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    (beir / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    docids = [json.loads(x)["_id"] for x in lines]
    rows = (scifact_dir / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines()
    kept = [rows[0]] + [r for r in rows[1:] if r.split("\t")[1] in set(docids)]
    (beir / "qrels" / "train.tsv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    (beir / "queries.jsonl").write_text((scifact_dir / "queries.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    relevant: dict[str, list[str]] = {}
    for r in kept[1:]:
        relevant.setdefault(r.split("\t")[0], []).append(r.split("\t")[1])
    # candidates: 2 others, the relevant documents, more others (so that the dev metric varies with the weight)
    cands = {q: list(dict.fromkeys([*docids[:2], *rel, *docids]))[:30] for q, rel in sorted(relevant.items())}
    run = tmp_path / "cands.trec"
    run.write_text("".join(f"{q} Q0 {d} {i + 1} {30 - i} x\n" for q, ds in cands.items() for i, d in enumerate(ds)))
    out, index = tmp_path / "art", "indexes/beir-bm25"
    args = ["tune", "--dataset", str(beir), "--candidates", str(run), "--out", str(out), "--backbone", str(tiny_dir)]
    assert main([*args, "--epochs", "1", "--max-length", "64", "--dev-depth", "5", "--index", index]) == 0
    model, _ = tuned.load_cross_encoder(out)
    assert isinstance(model, TunedCrossEncoder)
    cfg = json.loads((out / tuned.CONFIG_NAME).read_text())
    assert cfg["tune"] == TuneConfig().to_dict() and cfg["dev_ndcg10"] is not None
    assert cfg["tune"]["method"] == "connected" and cfg["tune"]["rank"] == 16 and cfg["tune"]["pathway"]
    assert any("loss" in json.loads(x) for x in Path(f"{out}.loss.jsonl").read_text().splitlines())
    weight = cfg["interpolation"]["weight"]
    assert cfg["interpolation"] == {"first_stage": "bm25", "weight": weight, "normalisation": "minmax"}
    assert cfg["dev_interp"][str(weight)] == max(cfg["dev_interp"].values())
    assert len(set(cfg["dev_interp"].values())) > 1  # the weight mattered on this dev slice
    assert yaml.safe_load((out / "pipeline.yaml").read_text()) == {
        "pipeline": [
            {"bm25": {"index": index}, "top_k": 5},
            {"cross_encoder": {"model": str(out)}},
            {"interpolate": {"weight": weight}},
        ]
    }
    assert plan_pipeline(out / "pipeline.yaml").produces == "ranking"  # valid, without opening the index
    tail = load_pipeline({"pipeline": yaml.safe_load((out / "pipeline.yaml").read_text())["pipeline"][1:]})
    ce, interpolate = tail.stages
    assert isinstance(ce, CrossEncoder) and isinstance(ce.model, TunedCrossEncoder) and ce.max_length == 64
    assert isinstance(interpolate, Interpolate) and interpolate.weight == weight
    assert main(["tune", "--dataset", str(beir), "--candidates", str(tmp_path / "none.trec"), "--out", "x"]) == 2


def test_reproduce_default_is_the_recipe_of_the_bundled_cross_encoder(capsys: pytest.CaptureFixture[str]) -> None:
    """`irkit tune --reproduce-default` trains what irkit/resources/cross-encoder-minilm was trained with."""
    from irkit.cli import build_parser
    from irkit.cli.tune import DEFAULT_RECIPE, apply_recipe

    shipped = tuned.read_config(resolve("cross-encoder-minilm"))
    assert DEFAULT_RECIPE["method"] == shipped["tune"]["method"] == "side"  # format 1 "connected" reads as "side"
    assert DEFAULT_RECIPE["rank"] == shipped["tune"]["rank"] and DEFAULT_RECIPE["max_length"] == shipped["max_length"]
    parser = build_parser()
    base = ["tune", "--dataset", "d", "--candidates", "c", "--out", "o", "--reproduce-default"]
    args = parser.parse_args(base)
    apply_recipe(args, args.parser)
    assert {k: getattr(args, k) for k in DEFAULT_RECIPE} == DEFAULT_RECIPE
    args = parser.parse_args([*base, "--seed", "14"])  # the recipe under another seed: its variance
    apply_recipe(args, args.parser)
    assert {k: getattr(args, k) for k in DEFAULT_RECIPE} == DEFAULT_RECIPE | {"seed": 14}
    args = parser.parse_args([*base, "--epochs", "2"])
    with pytest.raises(SystemExit):
        apply_recipe(args, args.parser)
    assert "--reproduce-default trains with --epochs 6, not 2" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
def test_dev_scoring_reranks_candidates_through_the_stages_users_run(
    kind: str, tiny_dir: Path, tmp_path: Path, scifact_slice: Path
) -> None:
    """A model being tuned scores dev candidates as CrossEncoder / BiEncoderReranker stages over a Ranking."""
    from irkit.data.docstore import DocStore
    from irkit.data.io import read_corpus
    from irkit.data.types import Qrels, Queries, Ranking
    from irkit.pipeline.stage import INPUT_SCORE

    model, tok = artifacts.build(kind, str(tiny_dir), {"method": "connected", "rank": 4})
    _perturb(model)
    model.eval()
    store = DocStore.build(tmp_path / "docs.sqlite", list(read_corpus(scifact_slice / "corpus.jsonl"))[:6])
    d = store.docids()
    queries = Queries({"q1": "do statins lower cholesterol", "q2": "vitamin d and bone density"})
    cands = Ranking.from_lists({"q1": (d[:4], np.arange(4.0, 0, -1)), "q2": (d[2:6], np.arange(8.0, 4, -1))}, queries)
    cands.docstore = store
    reranked = as_reranker(model, tok, max_length=64, query_max_length=16).transform(cands.top_k(3))
    assert {q: set(reranked[q][0]) for q in reranked} == {"q1": set(d[:3]), "q2": set(d[2:5])}
    assert sorted(reranked.column(INPUT_SCORE, "q1").tolist()) == [2.0, 3.0, 4.0]  # the first stage's, for fusion
    docid, score = reranked["q2"][0][1], reranked["q2"][1][1]
    text = store.get(docid).contents
    with torch.no_grad():  # one unpadded forward pass, independent of the batching code
        if kind == "cross-encoder":
            ref = float(model(**tok(queries["q2"], text, truncation=True, max_length=64, return_tensors="pt")).logits)
        else:  # cosine of mask-mean-pooled, normalised states; the query cut at 16 tokens
            vec = [
                torch.nn.functional.normalize(
                    model(**tok(t, truncation=True, max_length=n, return_tensors="pt")).last_hidden_state.mean(1),
                    dim=-1,
                )[0]
                for t, n in ((queries["q2"], 16), (text, 64))
            ]
            ref = float(vec[0] @ vec[1])
    assert score == pytest.approx(ref, abs=1e-5)
    # the interpolation weight is the dev-best of the grid, ties going to the weight nearest 0.5
    qrels = Qrels({"q1": {reranked["q1"][0][-1]: 1}, "q2": {reranked["q2"][0][0]: 1}})
    weight, by_w = interpolation_weight(reranked, qrels)
    assert list(by_w) == [round(0.1 * i, 1) for i in range(11)] and by_w[weight] == max(by_w.values())
    assert all(abs(w - 0.5) >= abs(weight - 0.5) for w, v in by_w.items() if v == by_w[weight])


def test_default_cross_encoder_is_a_small_registered_artifact_that_ranks(scifact_dir: Path) -> None:
    """The shipped `cross-encoder-minilm`: adapter + head only, and on held-out SciFact queries
    (the dev slice carved from train, never trained on) the relevant abstract outscores another query's."""
    from irkit.data.io import read_corpus, read_qrels, read_queries

    path = Path(resolve("cross-encoder-minilm"))
    assert tuned.is_artifact(path)
    assert sum(f.stat().st_size for f in path.iterdir()) < 1_000_000
    cfg = tuned.read_config(path)
    assert cfg["backbone"] == "minilm" and cfg["format"] == 1 and cfg["tune"]["method"] == "side"
    assert cfg["trainable_params"] / cfg["total_params"] < 0.01
    queries = read_queries(scifact_dir / "queries.jsonl")
    qrels = read_qrels(scifact_dir / "qrels" / "train.tsv", queries)
    _, dev = split_dev(list(qrels), 0.1, seed=13)
    dev = dev[:12]
    rel = {q: next(iter(qrels[q])) for q in dev}
    texts = {d.docid: d.contents for d in read_corpus(scifact_dir / "corpus.jsonl") if d.docid in set(rel.values())}
    model, tok = tuned.load_cross_encoder(path)
    qs = [queries[q] for q in dev]
    good = ce_scores(model, tok, qs, [texts[rel[q]] for q in dev], cfg["max_length"])
    other = ce_scores(model, tok, qs, [texts[rel[dev[(i + 1) % len(dev)]]] for i in range(len(dev))], cfg["max_length"])
    assert (good > other).sum() >= 10, (good, other)


@pytest.mark.parametrize("name", ["connected", "connected-sublayers", "side"])
def test_tuned_bi_encoder_artifact_serves_biencoder_and_dense_index(
    name: str, tiny_dir: Path, tmp_path: Path, scifact_slice: Path
) -> None:
    """BiEncoder (and so index building and the Dense stage, on oneDNN) loads a tuned artifact by its directory."""
    from irkit.index.dense import build_dense_index
    from irkit.models.encoder import BiEncoder
    from irkit.retrieve.dense import Dense

    model, tok = artifacts.build("bi-encoder", str(tiny_dir), CONFIGS[name] | {"rank": 4})
    _perturb(model)
    model.eval()
    out = artifacts.save(model, tmp_path / "bi", kind="bi-encoder", backbone=str(tiny_dir))
    texts = ["a query about proteins", "a much longer document about protein folding in yeast cells"]
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(enc["input_ids"], enc["attention_mask"]).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    tuned = BiEncoder(str(out))
    assert (tuned.encode(texts) * ref).sum(1).min() >= 0.9999
    plain = BiEncoder(str(tiny_dir)).encode(texts)
    assert (plain * ref).sum(1).max() < 0.9999  # the adapters are really applied
    docs = [line for line in (scifact_slice / "corpus.jsonl").read_text().splitlines()[:40]]
    (tmp_path / "corpus.jsonl").write_text("\n".join(docs) + "\n")
    build_dense_index(tmp_path / "corpus.jsonl", tmp_path / "idx", model=str(out), show_progress=False)
    hits = Dense(tmp_path / "idx").search("protein folding", k=3)
    assert len(hits) == 3
