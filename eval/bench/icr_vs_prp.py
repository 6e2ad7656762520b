"""Latency: ICR against PRP-Sliding-10 reranking the same BM25 top-N of DL19 with the same LLM.

Both run end to end (prompt building, tokenisation, all forward passes); the paper reports
ICR more than 60 % faster than generative listwise reranking.

    nice -n 10 python eval/bench/icr_vs_prp.py --n 10 --queries 2
"""

from __future__ import annotations

import argparse
import os
import time

from irkit.data.io import read_corpus, read_run, read_topics_tsv
from irkit.models.llm import load_llm
from irkit.paths import eval_data_root
from irkit.rerank.icr import ICR
from irkit.rerank.prp import PRP

DATA = eval_data_root() / "trec-dl-2019"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10, help="rerank BM25 top-N")
    p.add_argument("--queries", type=int, default=2, help="first Q topics in file order")
    p.add_argument("--model", default="smollm2")
    args = p.parse_args()

    import torch

    llm = load_llm(args.model)
    icr = ICR(llm)
    prp = PRP(llm, mode="scoring", variant="sliding", passes=10, batch_size=2)
    topics = read_topics_tsv(DATA / "topics.tsv")
    run = read_run(DATA / "bm25-top100.run", topics).top_k(args.n)
    docs = {d.docid: d for d in read_corpus(DATA / "passages.jsonl")}
    qids = list(run)[: args.queries]
    print(f"model={args.model} N={args.n} torch_threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    print("| qid | ICR s | ICR forwards | PRP-Sliding-10 s | PRP LLM calls | PRP forwards | ICR/PRP |")
    print("|---|---|---|---|---|---|---|")
    tot_icr = tot_prp = 0.0
    for qid in qids:
        passages = [docs[d] for d in run[qid][0]]
        f0, t = icr.forward_passes, time.perf_counter()
        icr.score(topics[qid], passages)
        t_icr = time.perf_counter() - t
        c0, p0, t = prp.llm_calls, llm.forward_passes, time.perf_counter()
        prp.score(topics[qid], passages)
        t_prp = time.perf_counter() - t
        tot_icr, tot_prp = tot_icr + t_icr, tot_prp + t_prp
        print(
            f"| {qid} | {t_icr:.1f} | {icr.forward_passes - f0} | {t_prp:.1f} | {prp.llm_calls - c0} "
            f"| {llm.forward_passes - p0} | {t_icr / t_prp:.3f} |"
        )
    print(
        f"mean ICR {tot_icr / len(qids):.1f} s, PRP-Sliding-10 {tot_prp / len(qids):.1f} s per query; "
        f"ICR latency is {100 * (1 - tot_icr / tot_prp):.0f} % lower"
    )


if __name__ == "__main__":
    main()
