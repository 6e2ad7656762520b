"""Train the MiniLM bi-encoder with one tuning method on SciFact train; dense retrieval on SciFact test.

InfoNCE over in-batch + BM25 hard negatives. The dev slice (carved from train) selects the
epoch (when ``--epochs`` > 1) by nDCG@10 of reranking each dev query's BM25 top-``dev-depth`` by cosine; the test
numbers are exact (brute-force) cosine search over the whole corpus, i.e. FAISS flat.
``--method zero-shot`` evaluates the untuned MiniLM.

    nice -n 10 python eval/tune_bi_encoder.py --method connected --seed 13 \
        --results eval/results/tune_bi_connected_s13.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from tune_common import RUNS, load_scifact

from irkit.data.types import Ranking
from irkit.evaluation import evaluate
from irkit.tune import artifacts
from irkit.tune.adapters import count_params
from irkit.tune.trainer import DEFAULT_LR, TrainConfig, Trainer, autocast, build_examples, embed, rerank_candidates


def encode(
    model: torch.nn.Module, tok, texts: list[str], max_length: int, bf16: bool, batch_size: int = 32
) -> np.ndarray:
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
    with torch.inference_mode(), autocast(bf16):
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            out[idx] = embed(model, tok, [texts[j] for j in idx], max_length).numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="connected", help="a tuning method, or zero-shot")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-negatives", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--dev-depth", type=int, default=30)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for training and encoding")
    ap.add_argument("--out", default=None, help="save the selected encoder as an adapter artifact here")
    ap.add_argument("--results", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)

    data = load_scifact(seed=args.seed)
    method = "connected" if args.method == "zero-shot" else args.method
    model, tok = artifacts.build("bi-encoder", "minilm", {"method": method, "rank": args.rank})
    queries = dict(data.queries.items())
    candidates = {q: data.bm25[q][0] for q in data.bm25}
    trainable, total = count_params(model)
    report: dict = {"method": args.method, "rank": args.rank, "seed": args.seed, "config": vars(args)}
    if args.method != "zero-shot":  # zero-init adapters: the untuned model is exactly MiniLM
        if method == "connected":
            model.enable_tap_cache()
        examples = build_examples(
            {q: data.train_qrels[q] for q in data.train_qrels},
            queries,
            candidates,
            data.doc_text,
            n_negatives=args.n_negatives,
            seed=args.seed,
        )
        dev_q = {q: queries[q] for q in data.dev_qrels if q in candidates}

        def dev(m: torch.nn.Module) -> float:
            scores = rerank_candidates(m, tok, dev_q, candidates, data.doc_text, args.dev_depth, args.max_length)
            return evaluate(Ranking.from_scores(scores), data.dev_qrels, ["nDCG@10"])["nDCG@10"]

        log = RUNS / f"bi-{args.method}-s{args.seed}.loss.jsonl"
        log.unlink(missing_ok=True)
        cfg = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            n_negatives=args.n_negatives,
            lr=args.lr or DEFAULT_LR[method],
            max_length=args.max_length,
            seed=args.seed,
            patience=args.patience,
            log_path=str(log),
            bf16=args.bf16,
        )
        result = Trainer(model, tok, cfg).fit(examples, dev=dev if args.epochs > 1 else None)
        if method == "connected":
            model.enable_tap_cache(False)
        report |= {
            "trainable_params": trainable,
            "total_params": total,
            "trainable_pct": 100.0 * trainable / total,
            "train_wall_s": result.wall_s,
            "best_step": result.best_step,
            "dev_history": result.dev_history,
        }
        if args.out:
            artifacts.save(model, args.out, kind="bi-encoder", backbone="minilm", max_length=args.max_length)
    docids = sorted(data.doc_text)
    doc_vecs = encode(model, tok, [data.doc_text[d] for d in docids], args.max_length, args.bf16)
    test_q = sorted(data.test_qrels)
    q_vecs = encode(model, tok, [queries[q] for q in test_q], 64, args.bf16)
    sims = q_vecs @ doc_vecs.T
    top = np.argsort(-sims, axis=1)[:, :100]
    run = Ranking.from_scores(
        {q: {docids[j]: float(sims[i, j]) for j in top[i]} for i, q in enumerate(test_q)}, data.queries.subset(test_q)
    )
    report["test"] = evaluate(run, data.test_qrels, ["nDCG@10", "R@100"]).aggregate
    with open(args.results, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report["test"]))


if __name__ == "__main__":
    main()
