"""ANNCUR and adaptive ANNCUR vs retrieve-then-rerank on SciFact, at equal cross-encoder budgets.

Setup (all seeded with ``--seed``):

* items: a sub-corpus of ``--items`` SciFact documents, every document judged relevant for any
  test query plus a uniform sample of the others, in corpus order (``WORK/items.jsonl``);
* anchor queries: the first ``--anchors`` SciFact train queries in a seeded order (smaller k_q
  use a prefix). The k_i/k_r split (and the adaptive variant's rounds) for each budget is
  picked on train queries only, by cross-fitting: each fifth of the anchor queries in turn is
  the dev slice, searched with R built from the other four fifths (no test query is involved,
  and no extra cross-encoder calls);
* test queries: a seeded sample of the SciFact test queries, scored in chunks of
  ``--chunk`` so that a partial run is still a seeded prefix.

Every cross-encoder score matrix is computed once by irkit's resumable runner and cached
(the index's R and ``WORK/test-XXX.npy``): the curves are then a
simulation that runs the retriever's own search code (:mod:`irkit.models.cur`) with a
scorer that reads the exact scores, and the CURRetriever is run end to end on a slice to show
that it returns the same lists.

The index is built by ``irkit index build --type cur`` (the command is printed); its anchor
queries are written to ``WORK/anchor-queries.jsonl`` first.

    nice -n 10 python eval/anncur.py            # compute (resumable), then report
    nice -n 10 python eval/anncur.py --results figures.json   # also the regression table's figures
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irkit.data.datasets import load_dataset  # noqa: E402
from irkit.data.io import read_corpus  # noqa: E402
from irkit.data.types import Queries  # noqa: E402
from irkit.paths import eval_data_root  # noqa: E402

DATA = eval_data_root() / "beir" / "scifact"


class Timer:
    """Wall and CPU seconds (all threads of this process) of a block, added to a JSON file (runs resumed add up)."""

    def __init__(self, path: Path, **facts: object) -> None:
        self.path, self.facts = path, facts

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        old = json.loads(self.path.read_text()) if self.path.is_file() else {"wall_s": 0.0, "cpu_s": 0.0, "runs": 0}
        old["wall_s"] += time.perf_counter() - self.wall
        old["cpu_s"] += time.process_time() - self.cpu
        old["runs"] += 1
        old["complete"] = exc[0] is None
        self.path.write_text(json.dumps({**old, **self.facts}, indent=1))


def prepare(args: argparse.Namespace) -> dict:
    """Write the item sub-corpus and choose the anchor, dev and test queries (seeded)."""
    rng = np.random.default_rng(args.seed)
    test = load_dataset(DATA, "test")
    train = load_dataset(DATA, "train")
    relevant = {d for q in test.qrels for d, g in test.qrels[q].items() if g > 0}
    docs = list(read_corpus(DATA / "corpus.jsonl"))
    others = [i for i, d in enumerate(docs) if d.docid not in relevant]
    n_extra = args.items - (len(docs) - len(others))
    keep = set(rng.choice(others, size=n_extra, replace=False).tolist()) if n_extra > 0 else set()
    items = [d for i, d in enumerate(docs) if d.docid in relevant or i in keep]
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "items.jsonl"
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for d in items:
                f.write(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n")
        os.replace(tmp, path)
    train_order = [list(train.queries)[i] for i in rng.permutation(len(train.queries))]
    test_order = [list(test.queries)[i] for i in rng.permutation(len(test.queries))][: args.test]
    return {
        "items": path,
        "n_items": len(items),
        "n_relevant": len(relevant),
        "anchors": train.queries.subset(train_order[: args.anchors]),
        "test": test.queries.subset(test_order),
        "qrels": test.qrels,
        "train_qrels": train.qrels,
    }


def cached_matrix(name: str, queries: Queries, store, ce, work: Path) -> np.ndarray:
    """Exact CE scores of ``queries`` over every item, computed once (resumable) into ``WORK/name.npy``."""
    from irkit.index.cur import score_matrix

    path = work / f"{name}.npy"
    if path.is_file():
        return np.load(path)
    with Timer(work / f"{name}.json", queries=list(queries)):
        scores = score_matrix(queries, store, ce, checkpoint=work / f"{name}.ckpt")
    np.save(path, scores)
    return scores


def compute(args: argparse.Namespace, setup: dict) -> dict:
    """The CUR index (R over the anchor queries) and the test score matrices, chunk by chunk.

    ``--part index`` or ``--part test`` computes one of them only, so two processes can share the work;
    the test side scores the same items file with the same default cross-encoder the index uses.
    """
    from irkit.cli import main as cli
    from irkit.data.docstore import DocStore
    from irkit.data.io import atomic_path
    from irkit.index.cur import CURIndex
    from irkit.rerank.cross_encoder import CrossEncoder

    out = {}
    index_dir = args.work / "index"
    if args.part in ("all", "index"):
        if not index_dir.is_dir():
            anchors = args.work / "anchor-queries.jsonl"
            with atomic_path(anchors) as tmp:
                tmp.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in setup["anchors"].items()))
            argv = ["index", "build", "--type", "cur", "--corpus", str(setup["items"]), "--out", str(index_dir)]
            argv += ["--anchor-queries", str(anchors), "--k-i", str(args.k_i), "--seed", str(args.seed)]
            print("irkit " + " ".join(argv), file=sys.stderr)
            with Timer(args.work / "index-build.json"):
                if cli(argv) != 0:
                    raise SystemExit("the cur index build failed")
        out["index"] = CURIndex.load(index_dir)
    if args.part in ("all", "test"):
        store, ce = DocStore.for_corpus(setup["items"]), CrossEncoder()
        qids = list(setup["test"])
        parts = []
        for start in range(0, len(qids), args.chunk):
            chunk = setup["test"].subset(qids[start : start + args.chunk])
            parts.append(cached_matrix(f"test-{start:03d}", chunk, store, ce, args.work))
        out["test"] = np.concatenate(parts)
        if "index" in out:  # the reference must come from the model, max_length and item order of R
            index = out["index"]
            assert index.docids == store.docids() and (index.model, index.manifest["max_length"]) == (
                ce.model_name,
                ce.max_length,
            )
    return out


K_VALUES = (1, 10, 50)
BUDGETS = (20, 30, 50, 75, 100, 150, 200, 300, 500)
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # k_i / budget candidates
ROUNDS = (2, 3, 5, 10)  # adaptive rounds candidates
SEEDS = (0, 1, 2)  # anchor-item draws averaged over
FOLDS = 5


def recall_at(pools: list, exact: np.ndarray, k: int) -> np.ndarray:
    """Per query: the share of the exact top ``k`` that the ``k`` best scored items recover."""
    out = np.zeros(len(pools))
    for j, (rows, scores) in enumerate(pools):
        found = rows[np.argsort(-scores, kind="stable")[:k]]
        out[j] = len(np.intersect1d(found, np.argsort(-exact[j], kind="stable")[:k])) / k
    return out


def anncur_pools(r: np.ndarray, exact: np.ndarray, k_i: int, seed: int, budget: int) -> list:
    """ANNCUR with ``k_i`` anchor items (drawn with ``seed``) and ``k_r = budget - k_i``, as the retriever runs it."""
    from irkit.models import cur

    anchors = cur.sample_items(r.shape[1], k_i, seed)
    e = cur.item_embeddings(r, anchors)
    return cur.anncur(cur.matrix_scorer(exact), len(exact), e, anchors, budget - k_i)


def adaptive_pools(r: np.ndarray, exact: np.ndarray, rounds: int, seed: int, budget: int) -> list:
    """Adaptive ANNCUR spending ``budget`` calls in ``rounds`` rounds, as the retriever runs it."""
    from irkit.models import cur

    return cur.adaptive(cur.matrix_scorer(exact), len(exact), r, budget, rounds, seed)


def splits(budget: int) -> list[int]:
    return sorted({max(1, round(f * budget)) for f in FRACTIONS})


def choose_on_dev(r: np.ndarray, search, options: list[int]) -> dict[int, int]:
    """Per k: the option with the best mean Top-k-Recall on the anchor queries, cross-fitted over FOLDS folds.

    Each fold of anchor queries is searched as if it were new queries, with R made of the other folds.
    """
    folds = np.array_split(np.arange(len(r)), FOLDS)
    means = {k: [] for k in K_VALUES}
    for option in options:
        got = {k: [] for k in K_VALUES}
        for fold in folds:
            rest = np.setdiff1d(np.arange(len(r)), fold)
            for seed in SEEDS:
                pools = search(r[rest], r[fold], option, seed)
                for k in K_VALUES:
                    got[k].extend(recall_at(pools, r[fold], k))
        for k in K_VALUES:
            means[k].append(np.mean(got[k]))
    return {k: options[int(np.argmax(means[k]))] for k in K_VALUES}


def ndcg(pools: list, index, qids: list[str], qrels) -> float:
    from irkit.data.types import Ranking
    from irkit.evaluation import evaluate

    results = {}
    for q, (rows, scores) in zip(qids, pools, strict=True):
        order = np.argsort(-scores, kind="stable")[:100]
        results[q] = ([index.docids[i] for i in rows[order]], scores[order])
    return evaluate(Ranking(results), qrels.subset(qids), ["nDCG@10"])["nDCG@10"]


def first_stages(args: argparse.Namespace, setup: dict, index) -> dict:
    """BM25 and dense MiniLM rankings of every item for each test query, and what indexing the items cost."""
    from irkit.index.bm25 import build_bm25_index
    from irkit.index.dense import build_dense_index
    from irkit.retrieve.bm25 import BM25
    from irkit.retrieve.dense import Dense

    out = {}
    for name, build, stage in (
        ("bm25", lambda d: build_bm25_index(setup["items"], d, show_progress=False), BM25),
        ("dense", lambda d: build_dense_index(setup["items"], d, model="minilm", show_progress=False), Dense),
    ):
        where = args.work / name
        if not where.is_dir():
            with Timer(args.work / f"{name}-build.json"):
                build(where)
        run = (stage(where) % len(index))(setup["test"])
        row = {d: i for i, d in enumerate(index.docids)}
        out[name] = [np.array([row[d] for d in run[q][0]], dtype=np.int64) for q in setup["test"]]
    return out


def tuned(search, options: list[int], r: np.ndarray, exact: np.ndarray, ndcg_of) -> tuple[dict, float, dict]:
    """Pick the option per k on dev (cross-fitted on R's anchor queries), then measure it on the test queries.

    Returns the Top-k-Recall per k and the nDCG@10 of the k = 10 choice, both averaged over SEEDS, and the choices.
    """
    pick = choose_on_dev(r, search, options)
    per_k, nd = {}, 0.0
    for k in K_VALUES:
        runs = [search(r, exact, pick[k], seed) for seed in SEEDS]
        per_k[k] = float(np.mean([recall_at(p, exact, k).mean() for p in runs]))
        if k == 10:
            nd = float(np.mean([ndcg_of(p) for p in runs]))
    return per_k, nd, {str(k): pick[k] for k in K_VALUES}


def evaluate_all(args: argparse.Namespace, setup: dict, data: dict) -> dict:
    """Top-k-Recall and nDCG@10 of every method at every budget (simulated over the cached exact scores)."""
    index, exact = data["index"], data["test"]
    qids = list(setup["test"])
    r_all = index.scores.astype(np.float64)
    kqs = sorted({len(r_all) // 4, len(r_all) // 2, len(r_all)})
    stages = first_stages(args, setup, index)
    res: dict = {"budgets": list(BUDGETS), "k_q": kqs, "methods": {}, "chosen": {}}

    def ndcg_of(pools: list) -> float:
        return ndcg(pools, index, qids, setup["qrels"])

    def record(name: str, per_k: dict, nd: float, chosen: dict | None = None) -> None:
        m = res["methods"].setdefault(name, {"recall": {str(k): [] for k in K_VALUES}, "ndcg10": []})
        for k in K_VALUES:
            m["recall"][str(k)].append(per_k[k])
        m["ndcg10"].append(nd)
        if chosen is not None:
            res["chosen"].setdefault(name, []).append(chosen)

    for budget in BUDGETS:
        for name, ranked in stages.items():
            pools = [(rows[:budget], exact[j, rows[:budget]]) for j, rows in enumerate(ranked)]
            record(f"{name} -> CE", {k: float(recall_at(pools, exact, k).mean()) for k in K_VALUES}, ndcg_of(pools))
        for kq in kqs:
            search = functools.partial(anncur_pools, budget=budget)
            record(f"ANNCUR k_q={kq}", *tuned(search, splits(budget), r_all[:kq], exact, ndcg_of))
        search = functools.partial(adaptive_pools, budget=budget)
        rounds = [x for x in ROUNDS if x <= budget]
        record(f"adaptive k_q={len(r_all)}", *tuned(search, rounds, r_all, exact, ndcg_of))
        print(f"budget {budget} done", file=sys.stderr)
    everything = [(np.arange(len(index)), exact[j]) for j in range(len(exact))]
    res["exact_ce_ndcg10"] = ndcg(everything, index, qids, setup["qrels"])
    res["first_stage_ndcg10"] = {
        name: ndcg(
            [(rows[:100], -np.arange(min(100, len(rows)), dtype=np.float64)) for rows in ranked],
            index,
            qids,
            setup["qrels"],
        )
        for name, ranked in stages.items()
    }
    return res


def end_to_end(args: argparse.Namespace, setup: dict, data: dict, res: dict, budget: int = 100) -> dict:
    """Run CURRetriever itself (the cross-encoder live) on the first test queries; compare with the simulation."""
    from irkit.retrieve.cur import CURRetriever

    index, exact = data["index"], data["test"]
    qids = list(setup["test"])[: args.e2e]
    at = BUDGETS.index(budget)
    k_i = res["chosen"][f"ANNCUR k_q={len(index.scores)}"][at]["10"]
    rounds = res["chosen"][f"adaptive k_q={len(index.scores)}"][at]["10"]
    r, seed, sub = index.scores.astype(np.float64), int(index.manifest["seed"]), exact[: len(qids)]
    half = budget // 2  # the adaptive variant only uses the sum k_i + k_r
    configs = (
        ("anncur", {"k_i": k_i, "k_r": budget - k_i}, anncur_pools(r, sub, k_i, seed, budget)),
        (
            "adaptive",
            {"k_i": half, "k_r": budget - half, "adaptive_rounds": rounds},
            adaptive_pools(r, sub, rounds, seed, budget),
        ),
    )
    out = {}
    for name, params, pools in configs:
        retriever = CURRetriever(index.path, depth=50, **params)
        wall, cpu = time.perf_counter(), time.process_time()
        run = retriever(setup["test"].subset(qids))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        same = 0
        for q, (rows, scores) in zip(qids, pools, strict=True):
            order = np.argsort(-scores, kind="stable")[:50]
            same += list(run[q][0]) == [index.docids[i] for i in rows[order]]
        out[name] = {
            "params": params,
            "queries": len(qids),
            "identical_top50": same,
            "ce_calls": sorted({m["ce_calls"] for m in run.meta.values()}),
            "wall_s_per_query": wall / len(qids),
            "cpu_s_per_query": cpu / len(qids),
        }
    return out


def unit_costs(setup: dict, index, dense_dir: Path, n: int = 200) -> dict:
    """CPU seconds per cross-encoder call and per bi-encoder encoding on the same ``n`` items, back to back.

    Measured in one process so that the ratio holds on shared cores where wall times of the
    long runs do not; each model as this run configures it (the index's CE, the dense index's encoder).
    """
    from irkit.index import read_manifest
    from irkit.models.encoder import BiEncoder

    docs = index.docstore.get_many(index.docids[:n])
    query = setup["anchors"][next(iter(setup["anchors"]))]
    ce = index.cross_encoder()
    dense = read_manifest(dense_dir)
    bi = BiEncoder(dense["model"], max_length=int(dense["build"]["max_length"]))
    ce.score_batch([(query, docs[:8])]), bi.encode([d.contents for d in docs[:8]])  # warm-up
    cpu = time.process_time()
    ce.score_batch([(query, docs)])
    ce_s = (time.process_time() - cpu) / n
    cpu = time.process_time()
    bi.encode([d.contents for d in docs])
    bi_s = (time.process_time() - cpu) / n
    return {"items": n, "ce_cpu_s_per_call": ce_s, "bi_cpu_s_per_item": bi_s, "ratio": ce_s / bi_s}


def figures(res: dict) -> dict:
    """The regression table's figures: per method and budget, Top-k-Recall (k = 1, 10, 50) and nDCG@10."""
    short = {f"ANNCUR k_q={res['k_q'][-1]}": "anncur", f"adaptive k_q={res['k_q'][-1]}": "adaptive"}
    short.update({"bm25 -> CE": "bm25_ce", "dense -> CE": "dense_ce"})
    out = {}
    for name, key in short.items():
        m = res["methods"][name]
        out[key] = {
            str(b): {**{f"R{k}": m["recall"][str(k)][i] for k in K_VALUES}, "nDCG@10": m["ndcg10"][i]}
            for i, b in enumerate(res["budgets"])
        }
    return out


def _budget_axis(ax, budgets: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("cross-encoder calls per query")


def tables(res: dict) -> str:
    """Markdown tables of every figure in ``res`` (pasted into eval/results/anncur.md)."""
    names = list(res["methods"])
    lines = []
    for k in K_VALUES:
        lines += [
            f"\nTop-{k}-Recall vs exact CE\n",
            "| calls | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for i, b in enumerate(res["budgets"]):
            cells = [f"{res['methods'][n]['recall'][str(k)][i]:.3f}" if b >= k else "–" for n in names]
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += [
        "\nnDCG@10 (SciFact test qrels)\n",
        "| calls | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for i, b in enumerate(res["budgets"]):
        lines.append(f"| {b} | " + " | ".join(f"{res['methods'][n]['ndcg10'][i]:.4f}" for n in names) + " |")
    chosen = list(res["chosen"])
    lines += ["\nChosen on dev (k_i for ANNCUR, rounds for adaptive), per k = 1 / 10 / 50\n"]
    lines += ["| calls | " + " | ".join(chosen) + " |", "|---" * (len(chosen) + 1) + "|"]
    for i, b in enumerate(res["budgets"]):
        cells = ["/".join(str(res["chosen"][n][i][str(k)]) for k in K_VALUES) for n in chosen]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = res["budgets"]
    fig, axes = plt.subplots(1, len(K_VALUES), figsize=(15, 4.5))
    for ax, k in zip(axes, K_VALUES, strict=True):
        shown = [i for i, b in enumerate(budgets) if b >= k]  # a pool smaller than k cannot hold the top k
        for name, m in res["methods"].items():
            style = "--" if "->" in name else "-"
            ax.plot(
                [budgets[i] for i in shown],
                [m["recall"][str(k)][i] for i in shown],
                style,
                marker="o",
                ms=3,
                label=name,
            )
        _budget_axis(ax, [budgets[i] for i in shown])
        ax.set_ylabel(f"Top-{k}-Recall vs exact CE")
        ax.set_title(f"k = {k}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "anncur_recall.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, m in res["methods"].items():
        ax.plot(budgets, m["ndcg10"], "--" if "->" in name else "-", marker="o", ms=3, label=name)
    ax.axhline(res["exact_ce_ndcg10"], color="k", lw=0.8, label="exact CE over all items")
    for name, v in res["first_stage_ndcg10"].items():
        ax.axhline(v, color="grey", lw=0.8, ls=":", label=f"{name} alone")
    _budget_axis(ax, budgets)
    ax.set_ylabel("nDCG@10 (SciFact qrels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "anncur_ndcg.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "anncur", help="cache directory (git-ignored)")
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--anchors", type=int, default=17, help="anchor queries of the index (largest k_q)")
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--chunk", type=int, default=20)
    p.add_argument("--k-i", type=int, default=50, help="anchor items whose E the index stores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--e2e", type=int, default=5, help="test queries the CURRetriever itself runs on")
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results", help="where anncur.json and PNGs go")
    p.add_argument("--compute-only", action="store_true")
    p.add_argument("--part", choices=("all", "index", "test"), default="all", help="with --compute-only")
    p.add_argument("--results", type=Path, default=None, help="also write the regression figures (JSON) here")
    args = p.parse_args(argv)
    setup = prepare(args)
    data = compute(args, setup)
    if args.compute_only or args.part != "all":
        return 0
    res = evaluate_all(args, setup, data)
    res["end_to_end"] = end_to_end(args, setup, data, res)
    res["unit_costs"] = unit_costs(setup, data["index"], args.work / "dense")
    res["setup"] = {
        "items": setup["n_items"],
        "relevant_items": setup["n_relevant"],
        "anchor_queries": len(setup["anchors"]),
        "test_queries": len(setup["test"]),
        "seed": args.seed,
        "costs": {p.stem: json.loads(p.read_text()) for p in sorted(args.work.glob("*.json")) if "build" in p.stem},
    }
    res["setup"]["costs"]["test_matrix"] = [
        json.loads((args.work / f"test-{s:03d}.json").read_text()) for s in range(0, args.test, args.chunk)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "anncur.json").write_text(json.dumps(res, indent=1))
    if args.results is not None:
        args.results.write_text(json.dumps(figures(res), indent=1))
    plot(res, args.out)
    print(tables(res))
    print(json.dumps({k: res[k] for k in ("end_to_end", "unit_costs", "setup")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
