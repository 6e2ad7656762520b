"""Distillation (irkit.tune.distil and the trainer's soft targets): LLM-written queries, teacher targets, round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from irkit.data.types import Queries, Ranking
from irkit.errors import IrkitError
from irkit.tune import distil
from irkit.tune.trainer import Example, TrainConfig, Trainer


@pytest.mark.parametrize(
    ("reply", "query"),
    [
        ("BC1 RNA primes its own reverse transcription. It also ...", "BC1 RNA primes its own reverse transcription"),
        ('"What causes myelodysplasia in MDS patients?"\n\nAnswer: ...', "What causes myelodysplasia in MDS patients?"),
        (
            " alterations of white matter affect cortical development",
            "Alterations of white matter affect cortical development",
        ),
        ("What is the purpose of this study?", None),  # about the prompt, not the passage
        ("What is the answer to the question: What is", None),
        ("Yes.", None),  # too short
        (" ".join(["word"] * 50), None),  # too long
    ],
)
def test_clean_query_keeps_the_first_sentence_and_drops_unusable_replies(reply: str, query: str | None) -> None:
    assert distil.clean_query(reply) == query


def test_combine_teachers_averages_standardised_scores_whatever_their_scale() -> None:
    queries = Queries.from_pairs([("q", "x")])
    splade = Ranking.from_lists({"q": (["a", "b", "c"], [30.0, 20.0, 10.0])}, queries)
    cosine = Ranking.from_lists({"q": (["c", "a", "b"], [0.9, 0.5, 0.1])}, queries)
    combined = distil.combine_teachers([splade, cosine])["q"]
    z = np.sqrt(1.5)  # std of (1, 0, -1)
    assert combined == pytest.approx({"a": (z + 0) / 2, "b": (0 - z) / 2, "c": (-z + z) / 2})
    with pytest.raises(IrkitError, match="did not score query 'q'"):
        distil.combine_teachers([splade, Ranking.from_lists({"r": (["a"], [1.0])}, Queries.from_pairs([("r", "y")]))])


def test_distillation_examples_round_trip_filter_and_soft_targets() -> None:
    teacher = {
        "gen-a": {"a": 2.0, "b": 1.0, "c": 0.0, "d": -1.0},  # its passage is the teachers' best: kept
        "gen-b": {"a": 2.0, "c": 1.0, "d": 0.0, "b": -1.0},  # its passage is last: dropped
    }
    texts = {d: f"text {d}" for d in "abcd"}
    queries = {"gen-a": "query a", "gen-b": "query b"}
    out = distil.distillation_examples(
        teacher, queries, texts, source={"gen-a": "a", "gen-b": "b"}, list_size=3, keep_top=2, temperature=0.5
    )
    assert len(out) == 1
    ex = out[0]
    assert ex.query == "query a" and ex.positive == "text a" and len(ex.negatives) == 2
    scores = dict(zip([ex.positive, *ex.negatives], ex.teacher or [], strict=True))
    assert scores["text a"] == 4.0 and all(
        scores[f"text {d}"] == teacher["gen-a"][d] / 0.5 for d in "bcd" if f"text {d}" in scores
    )
    # without a source every query is kept; a list shorter than list_size is skipped
    assert len(distil.distillation_examples(teacher, queries, texts, list_size=4)) == 2
    assert distil.distillation_examples(teacher, queries, texts, list_size=5) == []
    with pytest.raises(IrkitError, match="temperature > 0"):
        distil.distillation_examples(teacher, queries, texts, temperature=0)


def _tiny_cross_encoder():
    from transformers import AutoTokenizer, BertConfig, BertModel

    from irkit.models.registry import resolve
    from irkit.tune.adapters import TuneConfig, TunedCrossEncoder, TunedEncoder

    torch.manual_seed(0)
    backbone = BertModel(
        BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64),
        add_pooling_layer=False,
    )
    model = TunedCrossEncoder(TunedEncoder(backbone, TuneConfig(method="full")))
    return model, AutoTokenizer.from_pretrained(resolve("minilm"))


def test_teacher_scores_make_the_loss_a_soft_target_cross_entropy() -> None:
    model, tok = _tiny_cross_encoder()
    model.eval()
    trainer = Trainer(model, tok, TrainConfig(n_negatives=2, max_length=32))
    hard = Example("a query", "relevant text", ["other text", "third text"])
    soft = Example("a query", "relevant text", ["other text", "third text"], teacher=[1.0, 3.0, -2.0])
    with torch.no_grad():
        enc = tok(["a query"] * 3, ["relevant text", "other text", "third text"], return_tensors="pt", padding=True)
        log_q = torch.log_softmax(model(**enc).logits.float().view(3), 0)
        p = torch.softmax(torch.tensor([1.0, 3.0, -2.0]), 0)
        assert trainer._loss([hard]).item() == pytest.approx(-log_q[0].item(), abs=1e-6)
        assert trainer._loss([soft]).item() == pytest.approx(-(p * log_q).sum().item(), abs=1e-6)
        both = trainer._loss([hard, soft]).item()
        assert both == pytest.approx((-log_q[0] - (p * log_q).sum()).item() / 2, abs=1e-6)
    with pytest.raises(IrkitError, match="2 teacher scores for 3 texts"):
        trainer._loss([Example("q", "a", ["b", "c"], teacher=[1.0, 2.0])])


def test_training_on_teacher_targets_moves_the_students_distribution_to_the_teachers() -> None:
    model, tok = _tiny_cross_encoder()
    teacher = [0.0, 4.0, -4.0]  # the second text is best: the opposite of a hard label
    train = [Example("a query", "relevant text", ["other text", "third text"], teacher=teacher)] * 4
    cfg = TrainConfig(epochs=60, batch_size=4, n_negatives=2, max_length=32, lr=3e-3, warmup=0.0)
    Trainer(model, tok, cfg).fit(train, show_progress=False)
    with torch.no_grad():
        enc = tok(["a query"] * 3, ["relevant text", "other text", "third text"], return_tensors="pt", padding=True)
        student = torch.softmax(model(**enc).logits.float().view(3), 0)
    assert int(student.argmax()) == 1 and student[1] > 0.8


def test_generate_queries_asks_the_llm_once_per_passage_and_then_reads_the_cache(tmp_path: Path) -> None:
    from llm_models import smollm2_tokenizer, tiny_llm

    llm = tiny_llm(smollm2_tokenizer())
    passages = {f"d{i}": f"Passage number {i} about protein folding and cells." for i in range(5)}
    cache = str(tmp_path / "replies.sqlite")
    first = distil.generate_queries(passages, llm, cache=cache, max_new_tokens=8, batch_size=2)
    calls = llm.forward_passes
    assert 0 < calls <= 3 * 8  # three batches of at most 8 generation steps
    again = distil.generate_queries(passages, llm, cache=cache, max_new_tokens=8, batch_size=2)
    assert again == first and llm.forward_passes == calls  # every reply came from the cache
    assert set(first) <= set(passages)
    kinds = {distil.prompt_kind(d, ("question", "claim")) for d in passages}
    assert kinds == {"question", "claim"}  # both prompts are used, each passage always the same one
    with pytest.raises(IrkitError, match="unknown prompt kind"):
        distil.generate_queries(passages, llm, kinds=("poem",), cache=cache)


def test_cli_tune_distils_splade_on_queries_smollm2_writes(
    tmp_path: Path, scifact_slice: Path, slice_indexes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`irkit tune --teacher splade --generate N`: the real bundled LLM writes queries for slice passages,
    BM25 retrieves their candidates, SPLADE-tiny labels them, and the kept lists join the training set."""
    from irkit.cli import main

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text((scifact_slice / "corpus.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    (beir / "queries.jsonl").write_text((scifact_slice / "queries.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    # the slice's test judgments become a training split here; no other split exists to exclude
    (beir / "qrels" / "train.tsv").write_text((scifact_slice / "qrels" / "test.tsv").read_text(encoding="utf-8"))
    index = slice_indexes / "indexes" / "scifact-bm25"
    run = tmp_path / "cands.trec"
    assert main(["search", "--index", str(index), "--dataset", str(beir), "--split", "train", "--out", str(run)]) == 0
    out = tmp_path / "art"
    args = ["tune", "--dataset", str(beir), "--candidates", str(run), "--out", str(out), "--index", str(index)]
    args += ["--method", "full", "--epochs", "1", "--max-length", "64", "--dev-depth", "5", "--negatives", "3"]
    args += ["--teacher", "splade", "--generate", "12", "--llm-cache", str(tmp_path / "replies.sqlite")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    counts = [line for line in printed.splitlines() if line.startswith("distillation:")]
    assert counts and counts[0].startswith("distillation: 12 passages")
    n_queries, n_kept = (int(x) for x in counts[0].replace(",", "").split()[3::3][:2])
    assert 0 < n_kept <= n_queries <= 12
    log = [json.loads(x) for x in Path(f"{out}.loss.jsonl").read_text().splitlines()]
    n_train = next(r["n_train"] for r in log if "n_train" in r)
    n_labelled = int(printed.split(" examples,")[0].split()[-1]) - n_kept
    assert n_train == n_labelled + n_kept and n_labelled > 0
    assert main([*args[:-6], "--generate", "2"]) == 2  # no teacher
    assert "needs --teacher and --generate N" in capsys.readouterr().err
    assert main([*args[:-6], "--teacher", f"{{bm25: {{index: {index}}}}}", "--generate", "2"]) == 2
    assert "is not a reranking stage (it turns queries into ranking)" in capsys.readouterr().err


def test_passages_judged_by_other_splits_are_found_by_path_or_by_name_under_irkit_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exclusion reads the BEIR directory that load_dataset would read, also for a name under $IRKIT_DATA."""
    from irkit.cli.tune import judged_elsewhere

    beir = tmp_path / "beir" / "tiny"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(f'{{"_id": "d{i}", "text": "t"}}\n' for i in range(5)))
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n')
    header = "query-id\tcorpus-id\tscore\n"
    (beir / "qrels" / "train.tsv").write_text(header + "q1\td0\t1\n")
    (beir / "qrels" / "test.tsv").write_text(header + "q2\td3\t1\nq2\td4\t1\n")
    monkeypatch.setenv("IRKIT_DATA", str(tmp_path))
    assert judged_elsewhere("beir/tiny", "train") == {"d3", "d4"}
    assert judged_elsewhere(str(beir), "train") == {"d3", "d4"}
    assert judged_elsewhere(str(beir), "test") == {"d0"}
    with pytest.raises(IrkitError, match="needs a BEIR directory"):
        judged_elsewhere("msmarco-passage/trec-dl-2019", "test")
