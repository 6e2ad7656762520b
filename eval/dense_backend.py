"""Exact dense retrieval run with a chosen encoder backend (fp32 or int8), for the quantisation-cost rows.

Encodes the corpus (title + text) and the split's queries with ``BiEncoder(model, backend=...)``,
searches all documents by inner product (exact, as FAISS Flat) and writes the top ``depth`` of
each query as a TREC run. No index is written: it measures what int8 encoding costs in quality
(row ``scifact-dense-int8`` of eval/regressions.yaml, against the fp32 ``scifact-dense``).

    python eval/dense_backend.py --backend int8 --run runs/dense-int8.trec
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from irkit.data.datasets import load_dataset
from irkit.data.io import write_run
from irkit.data.types import Ranking
from irkit.models.encoder import BiEncoder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="beir/scifact", help="a dataset name under $IRKIT_DATA or a directory")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--backend", choices=["fp32", "int8"], default="fp32")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--run", type=Path, required=True, help="output TREC run")
    args = ap.parse_args()

    data = load_dataset(args.dataset, args.split)
    docs = list(data.docs())
    encoder = BiEncoder(args.model, max_length=args.max_length, backend=args.backend)
    doc_vecs = encoder.encode_documents([d.contents for d in docs], show_progress=True)
    qids = list(data.queries)
    query_vecs = encoder.encode_queries([data.queries[q] for q in qids])
    scores = query_vecs @ doc_vecs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, : args.depth]
    run = Ranking(
        {q: ([docs[i].docid for i in row], scores[n, row]) for n, (q, row) in enumerate(zip(qids, top, strict=True))}
    )
    args.run.parent.mkdir(parents=True, exist_ok=True)
    write_run(run, args.run, tag=f"dense-{args.backend}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
