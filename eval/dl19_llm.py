"""TREC DL 2019: rerank BM25 top-N with ICR and PRP (Allpair, Sorting, Sliding-10) on a small LLM.

Each run checkpoints one JSON line per query, so an interrupted run resumes where it stopped.

PRP's three variants share one pair judge: for each query the script asks the LLM every
ordered pair once (N·(N-1) prompts, batched — exactly Allpair's work) and then runs
Allpair, Sorting and Sliding over those recorded answers through PRP's ``comparator``
hook. The judge is deterministic, so each variant gets the ranking it would get asking
the LLM itself; its LLM-call count is what it would have asked, and its latency is
estimated as calls × the measured time per prompt (eval/bench/icr_vs_prp.py measures
Sliding end to end).

    nice -n 10 python eval/dl19_llm.py icr --n 20
    nice -n 10 python eval/dl19_llm.py prp --n 10 --max-queries 10
    python eval/dl19_llm.py report --n 20 --prp-n 10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from irkit.data.docstore import DocStore
from irkit.data.io import read_corpus, read_qrels, read_run, read_topics_tsv
from irkit.data.types import Qrels, Ranking
from irkit.models.llm import cache_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("IRKIT_DATA", ROOT.parent / "shared" / "data")) / "trec-dl-2019"
WORK = cache_dir().parent / "eval" / "dl19_llm"


def candidates(n: int) -> Ranking:
    """BM25 top-``n`` with topics and a DocStore of the passages (built once in the cache)."""
    store_path = WORK / "passages.sqlite"
    if not store_path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        DocStore.build(store_path, read_corpus(DATA / "passages.jsonl"))
    topics = read_topics_tsv(DATA / "topics.tsv")
    run = read_run(DATA / "bm25-top100.run", topics).top_k(n)
    return Ranking(run.results, topics, DocStore(store_path))


def done(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {r["qid"]: r for r in rows}


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_icr(args: argparse.Namespace) -> None:
    from irkit.rerank.icr import ICR

    cands = candidates(args.n)
    icr = ICR(args.model, max_doc_tokens=args.max_doc_tokens)
    out = WORK / f"icr-{args.model}-n{args.n}.jsonl"
    have = done(out)
    for qid in list(cands)[: args.max_queries]:
        if qid in have:
            continue
        before, t = icr.forward_passes, time.perf_counter()
        ranked = icr(cands.subset([qid]))
        docids, scores = ranked[qid]
        append(
            out,
            {
                "qid": qid,
                "docids": docids,
                "scores": scores.tolist(),
                "seconds": time.perf_counter() - t,
                "forwards": icr.forward_passes - before,
            },
        )
        print(qid, f"{time.perf_counter() - t:.1f}s", flush=True)


def run_prp(args: argparse.Namespace) -> None:
    from irkit.rerank.icr import passage_text
    from irkit.rerank.prp import PROMPT, PRP

    cands = candidates(args.n)
    prp = PRP(
        args.model, mode="scoring", variant="allpair", max_doc_tokens=args.max_doc_tokens, batch_size=args.batch_size
    )
    assert prp.llm is not None
    out = WORK / f"prp-{args.model}-n{args.n}.jsonl"
    have = done(out)
    for qid in list(cands)[: args.max_queries]:
        if qid in have:
            continue
        docids = cands[qid][0]
        query = cands.queries[qid]
        texts = [prp.llm.truncate(passage_text(d), prp.max_doc_tokens) for d in cands.docstore.get_many(docids)]
        pairs = [(i, j) for i in range(len(texts)) for j in range(len(texts)) if i != j]
        t, f0 = time.perf_counter(), prp.forward_passes
        answers = prp.ask([PROMPT.format(query=query, a=texts[i], b=texts[j]) for i, j in pairs])
        append(
            out,
            {
                "qid": qid,
                "docids": docids,
                "pairs": pairs,
                "answers": answers,
                "seconds": time.perf_counter() - t,
                "forwards": prp.forward_passes - f0,
            },
        )
        print(qid, f"{time.perf_counter() - t:.1f}s", flush=True)


def replay(row: dict, variant: str) -> tuple[list[str], np.ndarray, int]:
    """A PRP variant's ranking and LLM-call count over the recorded answers of one query."""
    from irkit.rerank.prp import PRP

    index = {d: i for i, d in enumerate(row["docids"])}
    answer = {tuple(p): a for p, a in zip(row["pairs"], row["answers"], strict=True)}
    prp = PRP(variant=variant, k=10, comparator=lambda q, a, b: answer[(index[a], index[b])])
    scores = prp.score("", row["docids"])  # texts are the docids: the comparator looks answers up by them
    return row["docids"], scores, prp.llm_calls


def ndcg(results: dict[str, tuple[list[str], np.ndarray]], qrels: Qrels) -> float:
    import ir_measures

    run = Ranking.from_lists(results).to_dict()
    judged = {q: d for q, d in qrels.judgments.items() if q in run}
    return ir_measures.calc_aggregate([ir_measures.nDCG @ 10], judged, run)[ir_measures.nDCG @ 10]


def report(args: argparse.Namespace) -> None:
    qrels = read_qrels(DATA / "qrels.txt")
    rows = []
    for n in sorted({args.n, args.prp_n}):
        icr = done(WORK / f"icr-{args.model}-n{n}.jsonl")
        prp = done(WORK / f"prp-{args.model}-n{n}.jsonl")
        cands = candidates(n)
        for label, qids in ((f"{len(icr)} (ICR run)", list(icr)), (f"{len(prp)} (PRP run)", list(prp))):
            if not qids:
                continue
            bm25 = {q: cands[q] for q in qids}
            rows.append((n, label, "BM25", ndcg(bm25, qrels), "-", "-"))
            if all(q in icr for q in qids):
                res = {q: (icr[q]["docids"], np.array(icr[q]["scores"])) for q in qids}
                sec = np.mean([icr[q]["seconds"] for q in qids])
                fw = np.mean([icr[q]["forwards"] for q in qids])
                rows.append((n, label, "ICR", ndcg(res, qrels), f"{sec:.1f}", f"{fw:.0f}"))
            if qids and all(q in prp for q in qids):
                per_prompt = sum(prp[q]["seconds"] for q in qids) / sum(len(prp[q]["pairs"]) for q in qids)
                for variant, name in (
                    ("allpair", "PRP-Allpair"),
                    ("sorting", "PRP-Sorting@10"),
                    ("sliding", "PRP-Sliding-10"),
                ):
                    out = {q: replay(prp[q], variant) for q in qids}
                    res = {q: (d, s) for q, (d, s, _) in out.items()}
                    calls = np.mean([c for _, _, c in out.values()])
                    rows.append((n, label, name, ndcg(res, qrels), f"~{calls * per_prompt:.0f}", f"{calls:.0f}"))
    for n in sorted({args.n, args.prp_n}):
        prp = done(WORK / f"prp-{args.model}-n{n}.jsonl")
        answers = [a for r in prp.values() for a in r["answers"]]
        if answers:
            decided = sum(
                a != dict(zip(map(tuple, r["pairs"]), r["answers"], strict=True))[(j, i)]
                for r in prp.values()
                for (i, j), a in zip(r["pairs"], r["answers"], strict=True)
            )
            print(
                f"PRP judge at N={n}: {100 * answers.count('A') / len(answers):.1f} % of answers are 'A'; "
                f"{100 * decided / len(answers):.1f} % of pairs agree across both orders (the rest are ties)\n"
            )
    print("| N | queries | method | nDCG@10 | s/query | LLM calls/query |")
    print("|---|---|---|---|---|---|")
    for n, label, name, score, sec, calls in rows:
        print(f"| {n} | {label} | {name} | {score:.4f} | {sec} | {calls} |")


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
    {"icr": run_icr, "prp": run_prp, "report": report}[args.what](args)


if __name__ == "__main__":
    main()
