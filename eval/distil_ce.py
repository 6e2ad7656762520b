"""Distil teacher rerankers into the MiniLM cross-encoder and score it in and out of domain (issue #11 item 4).

Trains with ``irkit tune --teacher ... --generate N`` on SciFact train (SmolLM2 writes a query
for each of N sampled SciFact passages; BM25 candidates; the teachers' standardised scores as
soft targets; SciFact's judged train queries beside them), then reranks with the artifact alone
and fused with BM25 at its dev-chosen weight: SciFact test BM25 top 20 and TREC DL 2019 BM25 top
100, with paired t-tests against BM25 (eval/tune_dl19.py's scoring; a SciFact top 100 would be
30,000 pairs). The LLM's replies are cached: only the first run of a passage sample pays for them.

    python eval/distil_ce.py --method full --out runs/distil/full --results runs/distil/full.json
    python eval/distil_ce.py --method connected --out runs/distil/connected --results runs/distil/connected.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from regress import machine
from tune_common import INDEX, SCIFACT, load_scifact, set_threads, train_candidates
from tune_dl19 import rerank_report

from irkit.cli import main as irkit_main
from irkit.data.io import atomic_path
from irkit.models.tuned import read_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="full", help="irkit tune --method")
    ap.add_argument("--lr", type=float, default=None, help="default: the method's (irkit.tune.trainer.DEFAULT_LR)")
    ap.add_argument("--teacher", action="append", default=None, help="irkit tune --teacher (default: splade)")
    ap.add_argument("--generate", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--negatives", type=int, default=7)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--out", type=Path, required=True, help="artifact directory")
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()
    set_threads()

    tune = ["tune", "--dataset", str(SCIFACT), "--candidates", str(train_candidates(load_scifact()))]
    tune += ["--index", str(INDEX), "--out", str(args.out), "--method", args.method, "--seed", str(args.seed)]
    tune += ["--epochs", str(args.epochs), "--negatives", str(args.negatives), "--max-length", str(args.max_length)]
    tune += ["--generate", str(args.generate)] + [x for t in args.teacher or ["splade"] for x in ("--teacher", t)]
    tune += ["--lr", str(args.lr)] if args.lr else []
    tune += ["--bf16"] if args.bf16 else []
    t0 = time.perf_counter()
    if rc := irkit_main(tune):
        raise SystemExit(rc)
    report = {
        "command": "irkit " + " ".join(tune),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "tune_wall_s": time.perf_counter() - t0,
        "dev_ndcg10": read_config(args.out)["dev_ndcg10"],
        "scifact_top20": rerank_report(str(args.out), "scifact", 20),
        "dl19_top100": rerank_report(str(args.out), "dl19", 100),
    }
    with atomic_path(args.results) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
