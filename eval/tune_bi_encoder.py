"""Train a bi-encoder (MiniLM, or ``--backbone nomic-embed-text-v1.5``) with one tuning method on SciFact train;
dense retrieval on SciFact test.

InfoNCE over in-batch + BM25 hard negatives. The dev slice (carved from train) selects the
checkpoint by nDCG@10 of reranking each dev query's BM25 top-``dev-depth`` by cosine; the test
numbers are exact (brute-force) cosine search over the whole corpus, i.e. FAISS flat.
``--method zero-shot`` evaluates the untuned backbone. ``--eval-every`` records a dev learning
curve (eval/tune_convergence.py reads it); ``--no-test`` skips the test search, which
``--load ARTIFACT`` runs later for a saved model (``--out``) and adds to the results file.

    nice -n 10 python eval/tune_bi_encoder.py --method connected --seed 13 \
        --results eval/results/tune_bi_connected_s13.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tune_common import (
    RUNS,
    SciFact,
    add_tuning_args,
    full_step_cost,
    load_scifact,
    sample,
    set_threads,
    training_report,
)

from irkit.cli.tune import tune_section
from irkit.data.types import Ranking
from irkit.evaluation import evaluate
from irkit.models import tuned
from irkit.models.encoder import BiEncoder
from irkit.tune import artifacts
from irkit.tune.adapters import count_params
from irkit.tune.trainer import DEFAULT_LR, TrainConfig, Trainer, as_reranker, autocast, build_examples


def dev_slice(data: SciFact, n: int, seed: int) -> list[str]:
    """The dev queries a run checks: a seeded subset of ``n`` of the dev slice (all when 0) with BM25 candidates."""
    return sample(sorted(q for q in data.dev_qrels if q in data.bm25), n, seed)


def dev_run(model: torch.nn.Module, tok, data: SciFact, qids: list[str], args: argparse.Namespace) -> Ranking:
    """Each dev query's BM25 top ``dev_depth`` reranked by cosine (``BiEncoderReranker``): what a dev check scores."""
    reranker = as_reranker(model, tok, args.max_length, args.query_max_length)
    return reranker.transform(data.bm25.subset(qids).top_k(args.dev_depth))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tuning_args(ap, extra_methods=("zero-shot",))
    ap.add_argument("--backbone", default="minilm", help="a registered model name or path (default minilm)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-negatives", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=256, help="document tokens")
    ap.add_argument("--query-max-length", type=int, default=64)
    ap.add_argument("--dev-depth", type=int, default=30)
    ap.add_argument("--no-test", action="store_true", help="train (and save) only; test later with --load")
    ap.add_argument("--load", type=Path, default=None, help="test a saved artifact; adds 'test' to --results")
    ap.add_argument("--out", default=None, help="save the selected encoder as an adapter artifact here")
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()
    set_threads()

    data = load_scifact(seed=args.seed)
    queries = dict(data.queries.items())
    report: dict = {}
    if args.load is not None:
        model, tok = tuned.load_bi_encoder(args.load)
        report = json.loads(args.results.read_text(encoding="utf-8")) if args.results.is_file() else {}
    else:
        method = "connected" if args.method == "zero-shot" else args.method
        model, tok = artifacts.build("bi-encoder", args.backbone, tune_section(args) | {"method": method})
        trainable, total = count_params(model)
        report = {
            "method": args.method,
            "tune": model.tune_config.to_dict(),
            "rank": model.tune_config.rank,
            "seed": args.seed,
            "config": vars(args) | {"results": str(args.results), "load": None},
        }
    if args.load is None and args.method != "zero-shot":  # zero-init adapters: untuned, the model is the backbone
        if method == "side":
            model.enable_tap_cache()
        candidates = {q: data.bm25[q][0] for q in data.bm25}
        examples = build_examples(
            {q: data.train_qrels[q] for q in data.train_qrels},
            queries,
            candidates,
            data.doc_text,
            n_negatives=args.n_negatives,
            seed=args.seed,
        )
        examples = sample(examples, args.train_examples, args.seed)
        dev_qids = dev_slice(data, args.dev_queries, args.seed)
        dev_qrels = data.dev_qrels.subset(dev_qids)
        curve = args.eval_every > 0
        # the untuned model is the same for every method (zero-initialised modules), so its dev score, the
        # first check of every run, is computed once per dev protocol and reused
        lengths = f"{args.dev_depth}-{args.max_length}-{args.query_max_length}"
        protocol = f"{Path(args.backbone).name}-{args.seed}-{len(dev_qids)}-{lengths}"
        untuned = RUNS / f"bi-untuned-dev-{protocol}.json"
        checks = [0]

        def dev(m: torch.nn.Module) -> float:
            checks[0] += 1
            if checks[0] == 1 and untuned.is_file():
                return float(json.loads(untuned.read_text(encoding="utf-8"))["dev"])
            score = evaluate(dev_run(m, tok, data, dev_qids, args), dev_qrels, ["nDCG@10"])["nDCG@10"]
            if checks[0] == 1:
                untuned.write_text(json.dumps({"dev": score}), encoding="utf-8")
            return score

        log = RUNS / f"bi-{args.results.stem}.loss.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        cfg = TrainConfig(
            epochs=args.epochs,
            steps=args.steps,
            batch_size=args.batch_size,
            n_negatives=args.n_negatives,
            lr=args.lr or DEFAULT_LR[method],
            max_length=args.max_length,
            query_max_length=args.query_max_length,
            seed=args.seed,
            patience=args.patience,
            eval_every=args.eval_every,
            log_path=str(log),
            bf16=args.bf16,
        )
        result = Trainer(model, tok, cfg).fit(examples, dev=dev if args.epochs > 1 or args.steps or curve else None)
        if method == "side":
            model.enable_tap_cache(False)
        report |= {
            "lr": cfg.lr,
            "trainable_params": trainable,
            "total_params": total,
            "trainable_pct": 100.0 * trainable / total,
            "n_train_examples": len(examples),
            "n_dev_queries": len(dev_qids),
            **training_report(result),
            "losses": result.losses,
            **full_step_cost(
                lambda: artifacts.build("bi-encoder", args.backbone, tune_section(args) | {"method": "full"}),
                cfg,
                examples,
            ),
        }
        if args.out:
            artifacts.save(model, args.out, kind="bi-encoder", backbone=args.backbone, max_length=args.max_length)
    if not args.no_test:
        docids = sorted(data.doc_text)
        test_q = sorted(data.test_qrels)
        with autocast(args.bf16):  # the exact-search test through the BiEncoder users run
            docs = BiEncoder.from_model(model, tok, args.max_length)  # with the backbone's prefixes, if any
            doc_vecs = docs.encode_documents([data.doc_text[d] for d in docids], show_progress=True)
            short = BiEncoder.from_model(model, tok, args.query_max_length)
            q_vecs = short.encode_queries([queries[q] for q in test_q])
        sims = q_vecs @ doc_vecs.T
        top = np.argsort(-sims, axis=1)[:, :100]
        run = Ranking.from_scores(
            {q: {docids[j]: float(sims[i, j]) for j in top[i]} for i, q in enumerate(test_q)},
            data.queries.subset(test_q),
        )
        report["test"] = evaluate(run, data.test_qrels, ["nDCG@10", "R@100"]).aggregate
        report["test_max_length"] = args.max_length
        print(json.dumps(report["test"]))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.results.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.results)


if __name__ == "__main__":
    main()
