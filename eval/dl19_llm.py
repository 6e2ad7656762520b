"""TREC DL 2019: rerank BM25 top-N with ICR and PRP (Allpair, Sorting, Sliding-10) on a small LLM.

Both run through irkit's runner (``RunFile % N >> ICR()`` / ``>> PRP()``), checkpointed per
query in the irkit cache, so an interrupted run resumes where it stopped and ``report`` reads
the finished queries without loading the model.

PRP's three variants share one pair judge: the script runs PRP-Allpair, which asks every pair
in both orders (exactly Allpair's work) and records each pair's outcome in the ranking's
``meta``; ``report`` then runs Sorting and Sliding over those recorded outcomes with PRP's own
``heap_top_k`` and ``sliding``. The judge is deterministic, so each variant gets the ranking it
would get asking the LLM itself, and its LLM-call count is what it would have asked
(eval/bench/icr_vs_prp.py measures Sliding end to end).

    nice -n 10 python eval/dl19_llm.py icr --n 20
    nice -n 10 python eval/dl19_llm.py prp --n 10 --max-queries 10
    python eval/dl19_llm.py report --n 20 --prp-n 10
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.datasets import Dataset, load_dataset
from irkit.data.types import Qrels, Ranking
from irkit.evaluation import evaluate
from irkit.paths import cache_dir, eval_data_root
from irkit.pipeline.runner import RESULTS, Runner, load_results

DATA = eval_data_root()
WORK = cache_dir("eval") / "dl19_llm"


def dl19() -> Dataset:
    """TREC DL 2019 (its 43 judged topics, NIST qrels, bundled BM25 top 100) as the regression driver loads it."""
    return load_dataset(DATA / "trec-dl-2019")


def checkpoint(method: str, model: str, n: int) -> Path:
    return WORK / f"{method}-{model}-n{n}"


def run(args: argparse.Namespace) -> None:
    from irkit.rerank.icr import ICR
    from irkit.rerank.prp import PRP
    from irkit.retrieve.run_file import RunFile

    ds = dl19()
    first = RunFile(ds.run_path, corpus=ds.corpus_path) % args.n  # type: ignore[arg-type]
    if args.what == "icr":
        stage = first >> ICR(args.model, max_doc_tokens=args.max_doc_tokens)
    else:
        stage = first >> PRP(
            args.model, variant="allpair", max_doc_tokens=args.max_doc_tokens, batch_size=args.batch_size
        )
    topics = ds.queries.subset(list(ds.queries)[: args.max_queries])
    Runner(stage, checkpoint=checkpoint(args.what, args.model, args.n), shard_size=1).run(topics)


def done(method: str, model: str, n: int) -> dict[str, dict[str, Any]]:
    return load_results(checkpoint(method, model, n) / RESULTS)


def replay(rec: dict[str, Any], variant: str) -> tuple[list[str], np.ndarray, int]:
    """A PRP variant's ranking and LLM-call count over the recorded Allpair outcomes of one query."""
    from irkit.rerank.prp import heap_top_k, sliding

    docids = first_stage(rec)[0]  # the order PRP saw them in: outcomes index into it
    outcome = {}
    for i, j, o in rec["meta"]["outcomes"]:
        outcome[(i, j)], outcome[(j, i)] = o, 1.0 - o
    asked: set[frozenset[int]] = set()

    def judge(pairs: list[tuple[int, int]]) -> list[float]:
        asked.update(frozenset(p) for p in pairs)
        return [outcome[p] for p in pairs]

    n = len(docids)
    if variant == "allpair":
        wins = np.zeros(n)
        for (i, _j), o in outcome.items():
            wins[i] += o
        return docids, wins, n * (n - 1)
    order = heap_top_k(n, 10, judge) if variant == "sorting" else sliding(n, 10, judge)
    scores = np.zeros(n)
    scores[order] = np.arange(n, 0, -1, dtype=np.float64)
    return docids, scores, 2 * len(asked)


def first_stage(rec: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """A reranked record's candidates and scores in the order the first stage ranked them."""
    order = np.argsort(rec["columns"]["input_rank"])
    return [rec["docids"][i] for i in order], np.asarray(rec["columns"]["input_score"])[order]


def ndcg(results: dict[str, tuple[list[str], np.ndarray]], qrels: Qrels) -> float:
    return evaluate(Ranking.from_lists(results), qrels.subset(results), ["nDCG@10"])["nDCG@10"]


def report(args: argparse.Namespace) -> None:
    qrels = dl19().qrels
    assert qrels is not None
    rows = []
    for n in sorted({args.n, args.prp_n}):
        icr, prp = done("icr", args.model, n), done("prp", args.model, n)
        for label, recs in ((f"{len(icr)} (ICR run)", icr), (f"{len(prp)} (PRP run)", prp)):
            if not recs:
                continue
            rows.append((n, label, "BM25", ndcg({q: first_stage(r) for q, r in recs.items()}, qrels), "-"))
            if recs is icr:
                res = {q: (r["docids"], np.asarray(r["scores"])) for q, r in recs.items()}
                passes = np.mean([r["meta"]["forward_passes"] for r in recs.values()])
                rows.append((n, label, "ICR", ndcg(res, qrels), f"1 / {passes:.0f}"))
                continue
            for variant, name in (
                ("allpair", "PRP-Allpair"),
                ("sorting", "PRP-Sorting@10"),
                ("sliding", "PRP-Sliding-10"),
            ):
                out = {q: replay(r, variant) for q, r in recs.items()}
                calls = np.mean([c for _, _, c in out.values()])
                score = ndcg({q: (d, s) for q, (d, s, _) in out.items()}, qrels)
                rows.append((n, label, name, score, f"{calls:.0f}"))
        outcomes = [o for r in prp.values() for _, _, o in r["meta"]["outcomes"]]
        if outcomes:
            ties = sum(o == 0.5 for o in outcomes)
            print(f"PRP judge at N={n}: {100 * ties / len(outcomes):.1f} % of pairs are ties (the two orders disagree)")
    print("| N | queries | method | nDCG@10 | LLM prompts (/ forward passes) per query |")
    print("|---|---|---|---|---|")
    for n, label, name, score, calls in rows:
        print(f"| {n} | {label} | {name} | {score:.4f} | {calls} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["icr", "prp", "report"])
    p.add_argument("--n", type=int, default=20, help="rerank BM25 top-N")
    p.add_argument("--prp-n", type=int, default=10, help="(report) the N the PRP runs used")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--max-doc-tokens", type=int, default=None, help="default: 256 for ICR, 128 for PRP")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-queries", type=int, default=None, help="first Q topics in file order")
    args = p.parse_args()
    if args.max_doc_tokens is None:
        args.max_doc_tokens = 256 if args.what == "icr" else 128
    report(args) if args.what == "report" else run(args)


if __name__ == "__main__":
    main()
