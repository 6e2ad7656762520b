"""``irkit tune``: train a bi-encoder or cross-encoder with connected adapters (or another method) into an artifact;
``irkit tune filter``: train a relevance filter (irkit/cli/filter.py)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from irkit.data.datasets import Dataset
    from irkit.tune.trainer import Example


def add_method_args(p: argparse.ArgumentParser, extra_methods: tuple[str, ...] = ()) -> None:
    """The tuning method and its shape (``--method``, ``--rank``, ...), read by :func:`tune_section`."""
    from irkit.tune import METHODS, PLACEMENTS

    p.add_argument("--method", choices=[*METHODS, *extra_methods], default="connected")
    p.add_argument("--rank", type=int, default=None, help="adapter/LoRA rank (default 16, side 32)")
    p.add_argument("--placement", choices=PLACEMENTS, default="layer", help="connected: in-block adapter sites")
    p.add_argument("--aside-rank", type=int, default=None, help="connected: aside-module rank (default: --rank)")
    p.add_argument("--no-pathway", action="store_true", help="connected: drop the aside pathway (ablation)")


def tune_section(args: argparse.Namespace) -> dict:
    """The ``tune`` section of an artifact (``irkit.tune.artifacts.build``) from :func:`add_method_args` options."""
    return {
        "method": args.method,
        "rank": args.rank,
        "placement": args.placement,
        "aside_rank": args.aside_rank,
        "pathway": not args.no_pathway,
    }


#: the settings that trained the bundled cross-encoder (irkit/resources/cross-encoder-minilm, whose format-1
#: method "connected" is today's "side"; eval/results/cross_encoder_minilm.json "config"), for --reproduce-default
DEFAULT_RECIPE = {
    "kind": "cross-encoder",
    "backbone": "minilm",
    "method": "side",
    "rank": 32,
    "epochs": 6,
    "lr": None,
    "batch_size": 8,
    "negatives": 3,
    "neg_depth": 30,
    "max_length": 128,
    "dev_fraction": 0.1,
    "dev_depth": 20,
    "patience": 2,
    "seed": 13,
    "bf16": False,
}
PIPELINE_NAME = "pipeline.yaml"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="parameter-efficient tuning of a bi-encoder or cross-encoder",
        description=(
            "Train a BERT-style backbone (default: the bundled MiniLM) with connected adapters (in-block adapters "
            "joined by an aside pathway, Ma et al. CIKM 2022), the faster side network, or a baseline "
            "(houlsby, lora, bitfit, full) on a BEIR training split. Negatives come from a first-stage BM25 run "
            "(`irkit search`); a dev slice carved from the training queries selects the best "
            "epoch (nDCG@10 of reranking its candidates with the model as CrossEncoder / BiEncoderReranker run it) "
            "and stops early. Writes a small adapter artifact (safetensors + irkit_adapter.json) that "
            "CrossEncoder / BiEncoder / Dense load by path. For a cross-encoder it also picks the min-max "
            "interpolation weight with BM25 on the dev slice (0.0..1.0, step 0.1), stores it in the artifact "
            f"and writes OUT/{PIPELINE_NAME}: BM25 (--index) -> this cross-encoder -> interpolate at that weight, "
            "for `irkit run`. --reproduce-default retrains the bundled cross-encoder's recipe. "
            "`irkit tune filter --help`: train a Cosine Adapter relevance filter instead."
        ),
    )
    from irkit.cli import filter as filter_cli

    filter_cli.add_parser(p.add_subparsers(dest="tune_command", metavar="[filter]"))
    p.add_argument("--dataset", help="BEIR directory (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="train", help="training split (qrels/<split>.tsv); default train")
    p.add_argument("--candidates", help="TREC run with BM25 candidates for the split")
    p.add_argument("--out", help=f"artifact directory to write (a cross-encoder's gets {PIPELINE_NAME} too)")
    p.add_argument(
        "--index", help=f"BM25 index that OUT/{PIPELINE_NAME} retrieves from (default: indexes/<dataset name>-bm25)"
    )
    p.add_argument(
        "--reproduce-default",
        action="store_true",
        help="the recipe of the bundled cross-encoder-minilm: side network, rank 32, 6 epochs, max length 128, "
        "3 BM25 negatives from the top 30, batch 8, seed 13 (--seed may change it), dev slice 10 %% (give the "
        "SciFact train split, a BM25 top-100 run of it, --out)",
    )
    p.add_argument("--kind", choices=["cross-encoder", "bi-encoder"], default="cross-encoder")
    add_method_args(p)
    p.add_argument("--backbone", default="minilm", help="registry name or path of the backbone (default minilm)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default depends on the method)")
    p.add_argument("--batch-size", type=int, default=8, help="queries per step")
    p.add_argument("--negatives", type=int, default=3, help="hard negatives per positive")
    p.add_argument("--neg-depth", type=int, default=30, help="sample negatives from this many top candidates")
    p.add_argument("--max-length", type=int, default=192, help="token cap of a pair (cross) or document (bi)")
    p.add_argument("--dev-fraction", type=float, default=0.1, help="share of training queries held out as dev")
    p.add_argument("--dev-depth", type=int, default=20, help="candidates reranked per dev query (and in the pipeline)")
    p.add_argument("--patience", type=int, default=2, help="dev checks without improvement before stopping")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on CPUs with AVX512-BF16)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--log", default=None, help="loss curve as jsonl (default OUT.loss.jsonl)")
    p.add_argument("--no-cache", action="store_true", help="side: do not cache the frozen backbone's outputs")
    d = p.add_argument_group(
        "distillation (cross-encoder)",
        "LLM-written queries for sampled corpus passages, BM25 candidates from --index, targets from the teachers' "
        "combined scores; the split's own queries keep their judged positives (irkit.tune.distil)",
    )
    d.add_argument(
        "--teacher",
        action="append",
        default=[],
        help="a reranking stage as a pipeline step, e.g. splade or '{bi_encoder: {model: nomic-embed-text-v1.5}}' "
        "(repeat for several: their standardised scores are averaged)",
    )
    d.add_argument("--generate", type=int, default=0, metavar="N", help="passages to write a query for (0: none)")
    d.add_argument("--llm", default="smollm2", help="the LLM that writes the queries (default smollm2)")
    d.add_argument("--llm-cache", default=None, help="reply cache (default $IRKIT_CACHE/llm/replies.sqlite)")
    d.add_argument("--keep-top", type=int, default=3, help="keep a query if its passage is in the teachers' top K")
    d.add_argument("--teacher-temperature", type=float, default=1.0, help="softmax temperature of the targets")
    p.set_defaults(func=run, parser=p)


def apply_recipe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Set :data:`DEFAULT_RECIPE` on ``args``; an option given with another value is an error, not overridden,
    except ``--seed``: the recipe under other seeds measures how far a retrain lands from the shipped model."""
    for key, value in DEFAULT_RECIPE.items():
        if key == "seed":
            continue
        given = getattr(args, key)
        if given != parser.get_default(key) and given != value:
            parser.error(f"--reproduce-default trains with --{key.replace('_', '-')} {value}, not {given}")
        setattr(args, key, value)


def run(args: argparse.Namespace) -> int:
    missing = [f"--{k}" for k in ("dataset", "candidates", "out") if getattr(args, k) is None]
    if missing:  # not argparse-required: `irkit tune filter` does without them
        args.parser.error(f"the following arguments are required: {', '.join(missing)}")
    if args.reproduce_default:
        apply_recipe(args, args.parser)
    import tempfile

    import torch

    from irkit.data.datasets import load_dataset
    from irkit.data.docstore import DocStore, DocTexts
    from irkit.data.io import read_run
    from irkit.errors import IrkitError
    from irkit.evaluation import evaluate
    from irkit.tune import artifacts, trainer
    from irkit.tune.adapters import count_params

    ds = load_dataset(args.dataset, args.split)
    assert ds.qrels is not None
    run_ = read_run(args.candidates, ds.queries)
    candidates = {q: run_[q][0] for q in run_}
    if not any(q in candidates for q in ds.qrels):
        raise IrkitError(f"no query of split {args.split!r} has candidates in the run", path=args.candidates)
    # texts are read on demand from a scratch DocStore (removed with `scratch`): no corpus-sized dict
    scratch = tempfile.TemporaryDirectory(prefix="irkit-tune-")
    store = DocStore.build(Path(scratch.name) / "docs.sqlite", ds.docs())
    train_q, dev_q = trainer.split_dev(list(ds.qrels), args.dev_fraction, args.seed)
    queries = dict(ds.queries.items())
    texts = DocTexts(store)
    examples = trainer.build_examples(
        {q: ds.qrels[q] for q in train_q}, queries, candidates, texts, args.negatives, args.neg_depth, args.seed
    )
    if args.teacher or args.generate:
        examples += synthetic(args, ds, set(dev_q), texts)
    trainer.set_seed(args.seed)  # the fresh head and adapters too, not only the training order
    model, tok = artifacts.build(args.kind, args.backbone, tune_section(args))
    if args.method == "side" and not args.no_cache:
        model_encoder = model.encoder if args.kind == "cross-encoder" else model
        model_encoder.enable_tap_cache()
    dev_run = run_.subset(q for q in dev_q if q in candidates).top_k(args.dev_depth)
    dev_run.docstore = store
    dev_qrels = ds.qrels.subset(dev_run)

    def dev(m: torch.nn.Module) -> float:
        reranked = trainer.as_reranker(m, tok, args.max_length).transform(dev_run)
        return evaluate(reranked, dev_qrels, ["nDCG@10"])["nDCG@10"]

    cfg = trainer.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        n_negatives=args.negatives,
        lr=args.lr or trainer.DEFAULT_LR[args.method],
        max_length=args.max_length,
        seed=args.seed,
        patience=args.patience,
        bf16=args.bf16,
        log_path=args.log or f"{args.out.rstrip('/')}.loss.jsonl",
    )
    trainable, total = count_params(model)
    print(f"{len(examples)} examples, {len(dev_run)} dev queries; trainable {trainable:,} of {total:,}")
    result = trainer.Trainer(model, tok, cfg).fit(examples, dev=dev if len(dev_run) else None)
    extra = {}
    if args.kind == "cross-encoder" and len(dev_run):
        with torch.inference_mode():
            weight, by_w = trainer.interpolation_weight(
                trainer.as_reranker(model, tok, args.max_length).transform(dev_run), dev_qrels
            )
        extra["interpolation"] = {"first_stage": "bm25", "weight": weight, "normalisation": "minmax"}
        extra["dev_interp"] = {str(w): v for w, v in by_w.items()}
    out = artifacts.save(
        model,
        args.out,
        kind=args.kind,
        backbone=args.backbone,
        max_length=args.max_length,
        dev_ndcg10=result.best_dev,
        trained_on=f"{args.dataset} {args.split}",
        **extra,
    )
    print(f"best dev nDCG@10 {result.best_dev} at step {result.best_step}; wrote {out}")
    if "interpolation" in extra:
        index = args.index or f"indexes/{Path(args.dataset).name}-bm25"
        path = write_pipeline(out, index, args.dev_depth, weight, args.dataset)
        print(f"interpolation weight {weight} (dev nDCG@10 {by_w[weight]:.4f}); pipeline: {path}")
    return 0


def synthetic(args: argparse.Namespace, ds: Dataset, dev_qids: set[str], texts: Mapping[str, str]) -> list[Example]:
    """Distillation examples for ``--teacher``/``--generate``: passages sampled from the corpus, never one
    judged in another split of the dataset or in the dev slice (those are evaluation data)."""
    import random

    import yaml

    from irkit.errors import IrkitError
    from irkit.pipeline.config import load_pipeline
    from irkit.retrieve.bm25 import BM25
    from irkit.tune import distil

    if args.kind != "cross-encoder" or not args.teacher or args.generate < 1:
        raise IrkitError("distillation trains a cross-encoder and needs --teacher and --generate N (N >= 1)")
    teachers = []
    for spec in args.teacher:
        step = yaml.safe_load(spec)
        stage = load_pipeline({"pipeline": [{step: {}} if isinstance(step, str) else step]})
        if (stage.consumes, stage.produces) != ("ranking", "ranking"):
            raise IrkitError(
                f"teacher {spec!r} is not a reranking stage (it turns {stage.consumes} into {stage.produces})"
            )
        teachers.append(stage)
    judged = judged_elsewhere(args.dataset, args.split) | {d for q in dev_qids for d in ds.qrels[q]}
    pool = sorted(d for d in texts if d not in judged)
    chosen = random.Random(args.seed).sample(pool, min(args.generate, len(pool)))
    index = args.index or f"indexes/{Path(args.dataset).name}-bm25"
    examples, counts = distil.synthetic_examples(
        {d: texts[d] for d in chosen},
        BM25(index, depth=args.neg_depth),
        teachers,
        llm=args.llm,
        list_size=args.negatives + 1,
        keep_top=args.keep_top,
        temperature=args.teacher_temperature,
        seed=args.seed,
        cache=args.llm_cache,
    )
    print(f"distillation: {counts['passages']} passages, {counts['queries']} usable queries, {counts['examples']} kept")
    return examples


def judged_elsewhere(dataset: str, split: str) -> set[str]:
    """Documents judged in any qrels file of the BEIR directory ``dataset`` (a path or a name under
    ``$IRKIT_DATA``, as ``load_dataset`` finds it) other than ``split``: evaluation data."""
    from irkit.data.datasets import beir_dir
    from irkit.data.io import read_qrels
    from irkit.errors import IrkitError

    root = beir_dir(dataset)
    if root is None:
        raise IrkitError(
            f"distillation needs a BEIR directory (corpus.jsonl, qrels/): it keeps evaluation passages out; "
            f"got {dataset!r}"
        )
    judged: set[str] = set()
    for other in sorted((root / "qrels").glob("*.tsv")):
        if other.stem != split:
            judged |= {d for _, docs in read_qrels(other).items() for d in docs}
    return judged


def write_pipeline(artifact: str | Path, index: str, depth: int, weight: float, dataset: str) -> Path:
    """``ARTIFACT/pipeline.yaml``: BM25 top ``depth`` -> the tuned cross-encoder -> interpolate at ``weight``."""
    from irkit.data.io import atomic_path
    from irkit.pipeline.config import dump_yaml

    path = Path(artifact) / PIPELINE_NAME
    steps = {
        "pipeline": [
            {"bm25": {"index": str(index)}, "top_k": depth},
            {"cross_encoder": {"model": str(artifact)}},
            {"interpolate": {"weight": weight}},
        ]
    }
    header = (
        f"# Written by `irkit tune`: BM25 top {depth} reranked by the cross-encoder in {artifact}, then min-max\n"
        f"# interpolated with BM25 at the weight chosen on the dev slice ({weight}).\n"
        f"# Run: irkit run {path} --dataset {dataset} --split test --out run.trec --eval nDCG@10\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(header + dump_yaml(steps), encoding="utf-8")
    return path
