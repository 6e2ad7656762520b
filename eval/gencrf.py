"""GenCRF and the query-expansion baselines on SciFact (BM25 and dense MiniLM), with the bundled SmolLM2.

Phases (each resumable; LLM replies live in the reply cache, rankings in runner checkpoints):

    export OMP_NUM_THREADS=1
    nice -n 10 python eval/gencrf.py generate --queries 0 --train-queries 48   # --skip N splits the test queries
    nice -n 10 python eval/gencrf.py qerm --train-queries 48
    nice -n 10 python eval/gencrf.py run --queries 0 [--no-qerm] --results eval/results/gencrf-smollm2-300.json
    python eval/gencrf.py rerun --queries 0        # fresh stages over a warm cache: 100 % hits, 0 LLM calls
    python eval/gencrf.py report --queries 0 --results eval/results/gencrf-smollm2-300.json
    python eval/gencrf.py report --queries 64 --model qwen2.5-coder-0.5b \\
        --results eval/results/gencrf-qwen2.5-coder-0.5b-64.json --versus eval/results/gencrf-smollm2-64.json
    python eval/regress.py --only gencrf-bm25-raw ...   # regression rows: rankings recomputed, replies cached

``generate`` asks the LLM for everything the conditions without QERM need (GenCRF's six
generations, clustering and scores; the query2doc/HyDE passage), test queries first, then the
QERM training queries. The query subsets are the first ``--queries`` SciFact test queries and
the first ``--train-queries`` train queries in qrels order.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.datasets import load_dataset
from irkit.data.types import Queries, Ranking
from irkit.evaluation import compare, evaluate
from irkit.paths import cache_dir, eval_data_root
from irkit.pipeline.runner import Runner
from irkit.pipeline.stage import Stage

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = eval_data_root() / "beir" / "scifact"
INDEXES = ROOT / "indexes"
WORK = cache_dir("eval") / "gencrf"
RESULTS = ROOT / "eval" / "results"
WEIGHTINGS = ("sim", "score", "fixed", "concat")


def queries(split: str, n: int | None) -> Queries:
    q = load_dataset(SCIFACT, split).queries
    return q.subset(list(q)[:n]) if n else q


def generate(args: argparse.Namespace) -> None:
    """Fill the reply cache for every LLM condition without QERM (test first, then QERM's training queries)."""
    from irkit.reformulate.gencrf import GenCRF
    from irkit.reformulate.query2doc import Query2Doc

    gencrf, q2d = GenCRF(args.model, weighting="score"), Query2Doc(args.model)
    for split, n in (("test", args.queries), ("train", args.train_queries)):
        qs = queries(split, n)
        for start in range(args.skip if split == "test" else 0, len(qs), args.shard):
            shard = qs.subset(list(qs)[start : start + args.shard])
            t0 = time.time()
            gencrf(shard)
            if split == "test":
                q2d(shard)
            progress = {"split": split, "done": start + len(shard), "of": len(qs), "s": round(time.time() - t0, 1)}
            progress |= {"llm": dict(gencrf.llm.stats), "q2d": dict(q2d.llm.stats), "paths": dict(gencrf.stats)}
            print(json.dumps(progress), flush=True)


RETRIEVERS = ("bm25", "dense")
MEASURES = ("nDCG@10", "R@100")
TAU = 0.5  # QERM label: the reformulation's nDCG@10 >= TAU


def retriever(name: str) -> Stage:
    from irkit.retrieve.bm25 import BM25
    from irkit.retrieve.dense import Dense

    return BM25(INDEXES / "scifact-bm25") if name == "bm25" else Dense(INDEXES / "scifact-minilm")


def qerm_dir(model: str, name: str, weighting: str) -> Path:
    return WORK / "qerm" / f"{model}-{name}-{weighting}"


def conditions(args: argparse.Namespace, name: str, qerm: bool = True) -> dict[str, Stage | None]:
    """Every rewriter compared in front of retriever ``name`` (None: the raw query)."""
    from irkit.reformulate.gencrf import GenCRF
    from irkit.reformulate.hyde import HyDE
    from irkit.reformulate.multi_query import MultiQuery
    from irkit.reformulate.query2doc import Query2Doc

    m = args.model
    out: dict[str, Stage | None] = {"raw": None}
    if name == "bm25":
        out["rm3"] = None  # a BM25 parameter, not a rewriter
    out["query2doc"] = Query2Doc(m, repeats=5 if name == "bm25" else 1)
    out["hyde"] = HyDE(m)
    out["multi_query"] = MultiQuery(m)
    for w in WEIGHTINGS:
        out[f"gencrf-{w}"] = GenCRF(m, weighting=w)
    out["gencrf-score-unnormalised"] = GenCRF(m, weighting="score", score_scale=1.0)
    if qerm:
        for w in WEIGHTINGS:
            if (qerm_dir(m, name, w) / "qerm.json").is_file():
                out[f"gencrf-{w}+qerm"] = GenCRF(m, weighting=w, qerm=str(qerm_dir(m, name, w)))
    return out


def ranked(args: argparse.Namespace, name: str, cond: str, rewriter: Stage | None, qs: Queries, tag: str) -> Ranking:
    """The top 100 of ``cond`` in front of retriever ``name``, through the resumable runner."""
    from irkit.retrieve.bm25 import BM25

    first = BM25(INDEXES / "scifact-bm25", rm3=True) if cond == "rm3" else retriever(name)
    stage = first % 100 if rewriter is None else rewriter >> first % 100
    ckpt = Path(args.runs or WORK / "runs") / f"{args.model}-{tag}-{name}-{cond}"
    return Runner(stage, checkpoint=ckpt, shard_size=8, progress=False).run(qs)


def train_qerm(args: argparse.Namespace) -> None:
    """One QERM per (retriever, weighting), labelled by the training queries' GenCRF nDCG@10 >= TAU."""
    from irkit.reformulate.gencrf import FACTS, GenCRF
    from irkit.reformulate.qerm import QERM

    ds = load_dataset(SCIFACT, "train")
    qs = ds.queries.subset(list(ds.queries)[: args.train_queries])
    probe = GenCRF(args.model, weighting="sim")
    facts = probe(qs).fields[FACTS]
    vectors = probe._encode([qs[q] for q in qs], [facts[q]["clusters"] for q in qs])
    x = np.stack([QERM.features(*v) for v in vectors])
    for name in RETRIEVERS:
        for w in WEIGHTINGS:
            run = ranked(args, name, f"gencrf-{w}", GenCRF(args.model, weighting=w), qs, f"train{args.train_queries}")
            ndcg = evaluate(run, ds.qrels.subset(qs), ["nDCG@10"]).per_query["nDCG@10"]
            y = np.array([ndcg.get(q, 0.0) >= TAU for q in qs], dtype=int)
            try:
                model = QERM.fit(x, y, "minilm", tau=TAU, train_queries=len(qs), retriever=name, weighting=w)
            except Exception as e:  # one label only: no model, said so
                print(json.dumps({"retriever": name, "weighting": w, "skipped": str(e)}))
                continue
            model.save(qerm_dir(args.model, name, w))
            print(json.dumps({"retriever": name, "weighting": w, "threshold": model.threshold} | model.info))


def run_all(args: argparse.Namespace) -> None:
    """Rank the test queries with every condition and write the results JSON."""
    ds = load_dataset(SCIFACT, "test")
    qs = queries("test", args.queries)
    qrels = ds.qrels.subset(qs)
    out: dict[str, Any] = {"queries": len(qs), "model": args.model, "date": time.strftime("%Y-%m-%d %H:%M UTC")}
    for name in RETRIEVERS:
        runs: dict[str, Ranking] = {}
        for cond, rewriter in conditions(args, name, qerm=not args.no_qerm).items():
            t0 = time.time()
            runs[cond] = ranked(args, name, cond, rewriter, qs, f"test{args.queries}")
            # a rewriter does not see its retriever, so without QERM (whose models do) BM25's facts are dense's
            facts = _facts(rewriter, qs) if name == "dense" or cond.endswith("+qerm") else {}
            out.setdefault(name, {})[cond] = {
                "scores": evaluate(runs[cond], qrels, MEASURES).aggregate,
                "per_query": evaluate(runs[cond], qrels, ["nDCG@10"]).per_query["nDCG@10"],
                "facts": facts,
            }
            print(json.dumps({"retriever": name, "condition": cond, "s": round(time.time() - t0, 1)}), flush=True)
        base = runs.pop("raw")
        for measure in MEASURES:
            for c in compare(base, runs, qrels, measure):
                out[name][c.name].setdefault("tests", {})[measure] = {"p": c.p_value, "p_holm": c.p_holm}
    # the rewriters that need no LLM, on all 300 test queries, for scale
    full, everything = {}, ds.queries
    for name, cond in (("bm25", "raw"), ("bm25", "rm3"), ("dense", "raw")):
        full[f"{name}-{cond}"] = ranked(args, name, cond, None, everything, "test-all")
    out["all_queries"] = {k: evaluate(r, ds.qrels, MEASURES).aggregate for k, r in full.items()}
    for measure in MEASURES:
        (c,) = compare(full["bm25-raw"], {"bm25-rm3": full["bm25-rm3"]}, ds.qrels, measure)
        out["all_queries"]["bm25-rm3"][f"p {measure}"] = c.p_value
    path = results_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")


def results_path(args: argparse.Namespace) -> Path:
    """Where ``run`` writes and ``report`` reads the results JSON."""
    return Path(args.results or RESULTS / f"gencrf-{args.model}.json")


def _facts(rewriter: Stage | None, qs: Queries) -> dict[str, Any]:
    """What a GenCRF rewriter did per query (clusters, path, rounds), read back from the cache."""
    from irkit.reformulate.gencrf import FACTS, GenCRF

    if not isinstance(rewriter, GenCRF):
        return {}
    return rewriter(qs).fields[FACTS]


def rerun(args: argparse.Namespace) -> None:
    """Fresh rewriters over a warm cache: every reply must be a hit and the LLM must never load."""
    qs = queries("test", args.queries)
    total: dict[str, float] = {}
    for name in RETRIEVERS:
        for cond, rewriter in conditions(args, name, qerm=not args.no_qerm).items():
            if rewriter is None:
                continue
            rewriter(qs)
            llm = rewriter.llm  # type: ignore[attr-defined]
            for k, v in llm.stats.items():
                total[k] = total.get(k, 0) + v
            if llm._llm is not None:
                raise SystemExit(f"{cond}: the LLM was loaded on a rerun")
    hits = total.get("hits", 0) / max(total.get("lookups", 1), 1)
    print(
        json.dumps(
            {
                "lookups": total.get("lookups", 0),
                "hits": total.get("hits", 0),
                "hit_rate": hits,
                "llm_calls": total.get("llm_calls", 0),
                "llm_loaded": False,
            }
        )
    )
    if hits < 1 or total.get("llm_calls", 0):
        raise SystemExit("rerun was not served entirely from the cache")


def report(args: argparse.Namespace) -> None:
    """Markdown tables from the results JSON and the reply cache (no LLM, no retrieval)."""
    res = json.loads(results_path(args).read_text(encoding="utf-8"))
    print(f"SciFact test, first {res['queries']} queries; LLM {res['model']}; computed {res['date']}.\n")
    print(
        "All 300 test queries, no LLM: "
        + "; ".join(
            f"{k} nDCG@10 {v['nDCG@10']:.4f} R@100 {v['R@100']:.4f}"
            + (f" (p {v['p nDCG@10']:.3g})" if "p nDCG@10" in v else "")
            for k, v in res.get("all_queries", {}).items()
        )
        + "\n"
    )
    for name in RETRIEVERS:
        print(f"### {name}\n")
        print("| condition | nDCG@10 | Δ vs raw | p (Holm) | R@100 | p (Holm) |")
        print("|---|---|---|---|---|---|")
        raw = res[name]["raw"]["scores"]
        for cond, r in res[name].items():
            s, t = r["scores"], r.get("tests", {})
            cells = [f"{s['nDCG@10']:.4f}", f"{s['nDCG@10'] - raw['nDCG@10']:+.4f}"]
            cells.append(f"{t['nDCG@10']['p_holm']:.3g}" if t else "–")
            cells += [f"{s['R@100']:.4f}", f"{t['R@100']['p_holm']:.3g}" if t else "–"]
            print(f"| {cond} | " + " | ".join(cells) + " |")
        print()
    paths: dict[str, int] = {}
    rounds = []
    for cond, r in res["dense"].items():
        for f in r["facts"].values():
            if cond == "gencrf-sim":
                paths[f["path"]] = paths.get(f["path"], 0) + 1
            if cond.endswith("+qerm"):
                rounds.append(f["rounds"])
    print(f"Clustering paths (round 1, per query): {json.dumps(paths)}")
    if rounds:
        print(f"QERM: {sum(r > 1 for r in rounds)} of {len(rounds)} (query, weighting) pairs regenerated once.\n")
    cost_table(args, res)
    examples(res)
    if args.versus:
        versus(res, json.loads(Path(args.versus).read_text(encoding="utf-8")))


def versus(res: dict[str, Any], other: dict[str, Any]) -> None:
    """This run's LLM against another model's on the same queries: nDCG@10 per condition, paired t-test (Holm)."""
    from irkit.evaluation import compare_per_query, holm

    if res["queries"] != other["queries"]:
        raise SystemExit(f"--versus: {res['queries']} queries here, {other['queries']} there")
    print(f"### {res['model']} against {other['model']}, same {res['queries']} queries (nDCG@10)\n")
    print(f"| retriever | condition | {res['model']} | {other['model']} | Δ | p | p (Holm) |")
    print("|---|---|---|---|---|---|---|")
    for name in RETRIEVERS:
        conds = [c for c in res[name] if c in other[name] and c not in ("raw", "rm3")]
        # each condition has its own baseline (the other model's same condition): one test per condition
        ps = [compare_per_query(other[name][c]["per_query"], {c: res[name][c]["per_query"]})[0].p_value for c in conds]
        for c, pv, ph in zip(conds, ps, holm(ps), strict=True):
            x, y = res[name][c]["scores"]["nDCG@10"], other[name][c]["scores"]["nDCG@10"]
            print(f"| {name} | {c} | {x:.4f} | {y:.4f} | {x - y:+.4f} | {pv:.3g} | {ph:.3g} |")
    print()


def cost_table(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """LLM calls, generated tokens and seconds per query, from the rows the reply cache kept."""
    from irkit.reformulate.gencrf import CLUSTER_LEAD, GENERATION_LEAD, SCORE_LEAD
    from irkit.reformulate.llm_cache import LLMCache
    from irkit.reformulate.query2doc import PASSAGE_LEAD

    texts = set(queries("test", args.queries).texts.values())
    kind = {GENERATION_LEAD: "gen", CLUSTER_LEAD: "cluster", SCORE_LEAD: "score", PASSAGE_LEAD: "passage"}
    part: dict[str, np.ndarray] = {}
    regenerated = set()
    for r in LLMCache().rows(args.model):
        if r["query"] not in texts or r["lead"] not in kind:
            continue
        key = kind[r["lead"]] + ("2" if r["lead"] == GENERATION_LEAD and r["seed"] >= 1000 else "")
        if key == "gen2":
            regenerated.add(r["query"])
        part[key] = part.get(key, np.zeros(3)) + np.array([1, r["tokens"], r["seconds"]])
    n, zero = len(texts), np.zeros(3)
    cluster_call = part.get("cluster", zero) / max(part.get("cluster", zero)[0], 1)
    gen1, clus1 = part.get("gen", zero) / n, cluster_call
    rows = {
        "query2doc / HyDE (one shared passage)": part.get("passage", zero) / n,
        "multi-query RRF (6 generations)": gen1,
        "GenCRF sim / fixed / concat (6 generations + 1 clustering)": gen1 + clus1,
        "GenCRF score (+ one score per cluster query)": gen1 + clus1 + part.get("score", zero) / n,
    }
    pairs = [f["rounds"] for c, r in res["dense"].items() if c.endswith("+qerm") for f in r["facts"].values()]
    pairs += [f["rounds"] for c, r in res["bm25"].items() if c.endswith("+qerm") for f in r["facts"].values()]
    if pairs and regenerated:
        share = sum(x > 1 for x in pairs) / len(pairs)
        again = part.get("gen2", zero) / len(regenerated) + cluster_call
        rows[f"GenCRF sim + QERM ({100 * share:.0f} % of queries regenerated once)"] = gen1 + clus1 + share * again
    print("| method | LLM calls / query | generated tokens / query | LLM seconds / query |")
    print("|---|---|---|---|")
    for label, (calls, tokens, secs) in rows.items():
        print(f"| {label} | {calls:.2f} | {tokens:.1f} | {secs:.1f} |")
    print()


def examples(res: dict[str, Any], k: int = 5) -> None:
    """The biggest gains and losses of dense GenCRF-sim over the raw query, with what the LLM wrote."""
    raw, gen = res["dense"]["raw"]["per_query"], res["dense"]["gencrf-sim"]
    qs = queries("test", res["queries"])
    delta = sorted(((gen["per_query"][q] - raw[q], q) for q in raw), reverse=True)
    picks = delta[:3] + delta[-2:]
    for d, q in picks[:k]:
        f = gen["facts"][q]
        print(f"- **{qs[q]}** (qid {q}): nDCG@10 {raw[q]:.3f} → {gen['per_query'][q]:.3f} ({d:+.3f}); path {f['path']}")
        print(f"  - generated: {json.dumps(f['generated'][:3])}")
        weights = [None if w is None else round(w, 3) for w in f["weights"]]
        print(f"  - clusters: {json.dumps(f['clusters'])}, weights {weights}")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["generate", "qerm", "run", "rerun", "report"])
    p.add_argument("--queries", type=int, default=16, help="first N SciFact test queries (0: all 300)")
    p.add_argument("--train-queries", type=int, default=12, help="first N SciFact train queries for QERM")
    p.add_argument("--skip", type=int, default=0, help="generate: start at test query N (to split the work)")
    p.add_argument("--no-qerm", action="store_true", help="run/rerun: leave out the QERM conditions")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--shard", type=int, default=8, help="queries per LLM batch group (generation batch = 6 x shard)")
    p.add_argument("--results", help="results JSON (default eval/results/gencrf-MODEL.json)")
    p.add_argument("--versus", help="report: another model's results JSON on the same queries, compared per condition")
    p.add_argument(
        "--runs", help="runner checkpoints of the rankings (default: the eval cache; a fresh directory recomputes them)"
    )
    args = p.parse_args()
    if args.skip < 0:
        p.error(f"--skip must be >= 0, got {args.skip}")
    handlers: dict[str, Any] = {
        "generate": generate,
        "qerm": train_qerm,
        "run": run_all,
        "rerun": rerun,
        "report": report,
    }
    handlers[args.what](args)


if __name__ == "__main__":
    main()
