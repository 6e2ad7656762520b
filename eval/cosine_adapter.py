"""Cosine Adapter relevance filtering (Rossi et al., CIKM 2024) against the cut-off baselines, on SciFact and DL19.

Trains one adapter per mapping family behind two retrievers (dense MiniLM and BM25, top 100 of
the SciFact train queries, dev slice carved from train), then on the 300 SciFact test queries
compares set precision/recall/F1, results kept per query, PR-AUC and P@R95 over pooled pairs
for: no filter, top-K (1, 3, 5, 10), one raw-score threshold, per-query min-max and z-score
normalisation with one threshold, and the adapter. Every threshold is chosen on the same dev
slice by the same rule (largest threshold with dev recall >= 95 %). Then: the SciFact-trained
dense adapter on TREC DL 2019 (dense top 100; transfer), and ``dense % 100 >> filter >>
CrossEncoder()`` against ``dense % 100 >> CrossEncoder()`` on every sixth SciFact test query.

Retrieval runs, adapters and reranker checkpoints are cached under ``runs/cosine_adapter/``;
a rerun only recomputes what is missing.

    nice -n 10 python eval/cosine_adapter.py                      # everything; writes the report + plot
    nice -n 10 python eval/cosine_adapter.py --skip-downstream    # no cross-encoder runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irkit.data.datasets import load_dataset
from irkit.data.types import Qrels, Queries, Ranking
from irkit.evaluation import (
    choose_threshold,
    compare,
    evaluate,
    pooled_pairs,
    pr_auc,
    pr_curve,
    precision_at_recall,
    set_measures,
)
from irkit.filter.cosine_adapter import FAMILIES, FEATURES, CosineFilter, FitConfig, train, training_set
from irkit.paths import eval_data_root
from irkit.pipeline.operators import minmax
from irkit.tune.trainer import split_dev

ROOT = Path(__file__).resolve().parents[1]
DATA = eval_data_root()
SCIFACT = DATA / "beir" / "scifact"
CACHE = ROOT / "runs" / "cosine_adapter"
INDEXES = {
    "dense": ROOT / "indexes" / "scifact-minilm",
    "bm25": ROOT / "indexes" / "scifact-bm25",
    "dl19-dense": ROOT / "indexes" / "dl19-minilm",
}
DEPTH = 100
DEV_FRACTION, SEED, TARGET = 0.2, 13, 0.95
TOPK = (1, 3, 5, 10)
DOWNSTREAM_EVERY = 6  # the downstream comparison reranks every sixth SciFact test query (50 of 300)


# --- retrieval, cached exactly (json keeps every float bit) ---------------------------------------------------


def retrieve(kind: str, queries: Queries, name: str) -> Ranking:
    """Top-``DEPTH`` of ``queries`` from index ``kind``; cached under runs/cosine_adapter/<name>.jsonl."""
    from irkit import index

    path = CACHE / f"{name}.jsonl"
    retriever = index.retriever(INDEXES[kind], depth=DEPTH)
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        results = {r["qid"]: (r["docids"], np.array(r["scores"], dtype=np.float64)) for r in rows}
        return Ranking(results, queries, retriever.index.docstore)
    run = retriever(queries)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for q, (d, s) in run.items():
            f.write(json.dumps({"qid": q, "docids": list(d), "scores": s.tolist()}) + "\n")
    tmp.replace(path)
    return run


# --- the methods: a per-query score map, then one threshold chosen on dev ------------------------------------


def zscore(s: np.ndarray) -> np.ndarray:
    sd = float(s.std())
    return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)


def rank_score(s: np.ndarray) -> np.ndarray:
    """1 / rank: one global threshold on it is a per-query top-K."""
    return 1.0 / np.arange(1, len(s) + 1)


def remap(run: Ranking, fn: Callable[[np.ndarray], np.ndarray]) -> Ranking:
    out = run.cut({})
    out.results = {q: (d, fn(np.asarray(s, dtype=np.float64))) for q, (d, s) in run.items()}
    return out


def threshold_cut(run: Ranking, tau: float) -> Ranking:
    return run.cut({q: np.flatnonzero(s >= tau) for q, (_, s) in run.items()})


def point(kept: Ranking, pool: Ranking, qrels: Qrels, rel: int) -> dict[str, float]:
    """Set measures of a retained run, plus pooled precision/recall relative to the unfiltered pool."""
    sets = set_measures(kept, qrels, rel)
    _, pool_labels = pooled_pairs(pool, qrels, rel)
    _, kept_labels = pooled_pairs(kept, qrels, rel)
    quant = sets.kept_quantiles((0.1, 0.5, 0.9))
    return {
        "SetP": sets.precision,
        "SetR": sets.recall,
        "SetF": sets.f1,
        "pooled_P": float(kept_labels.mean()) if len(kept_labels) else 0.0,
        "pooled_R": float(kept_labels.sum() / max(pool_labels.sum(), 1)),
        "kept_mean": sets.kept_mean,
        "kept_p10": quant[0.1],
        "kept_median": quant[0.5],
        "kept_p90": quant[0.9],
        "zero": sets.zero,
        "pairs": int(sum(len(d) for d, _ in kept.results.values())),
    }


def curve_stats(scored: Ranking, qrels: Qrels, rel: int) -> dict[str, float]:
    scores, labels = pooled_pairs(scored, qrels, rel)
    return {"pr_auc": pr_auc(scores, labels), "p_at_r95": precision_at_recall(scores, labels, 0.95)}


# --- calibration ---------------------------------------------------------------------------------------------


def calibration(scored: Ranking, qrels: Qrels, rel: int, bins: int = 10) -> dict[str, float]:
    """Mean predicted probability vs observed relevance rate, and expected calibration error (equal-width bins)."""
    p, y = pooled_pairs(scored, qrels, rel)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean() for b in range(bins) if (idx == b).any())
    return {"mean_p": float(p.mean()), "rate": float(y.mean()), "ece": float(ece)}


# --- the experiments -------------------------------------------------------------------------------------------


def adapters(kind: str, run: Ranking, qrels: Qrels, retrain: bool) -> dict[str, CosineFilter]:
    """One adapter per features variant and family behind retriever ``kind`` (cached under runs/cosine_adapter/)."""
    out = {}
    for features in FEATURES:
        label = "CA" if features == "query" else "CA+list"
        paths = {fam: CACHE / "filters" / f"scifact-{kind}-{features}-{fam}" for fam in FAMILIES}
        missing = [fam for fam, p in paths.items() if retrain or not (p / "cosine_filter.json").is_file()]
        if missing:
            t0 = time.perf_counter()
            data = training_set(run, qrels, features=features, dev_fraction=DEV_FRACTION, seed=SEED)
            encode_s = time.perf_counter() - t0
            for fam in missing:
                log = paths[fam].with_name(paths[fam].name + ".loss.jsonl")
                log.unlink(missing_ok=True)
                t0 = time.perf_counter()
                flt = train(data, fam, "recall", TARGET, FitConfig(seed=SEED), log, {"dataset": str(SCIFACT)})
                flt.config["training"].update(split="train", fit_s=round(time.perf_counter() - t0, 1))
                flt.config["training"]["epochs_run"] = len(flt.fitted.history)
                flt.config["training"]["encode_s"] = round(encode_s, 1)
                flt.save(paths[fam])
        for fam, p in paths.items():
            out[f"{label} {fam}"] = CosineFilter.load(p)
    return out


def best_of(filters: dict[str, CosineFilter], label: str) -> str:
    """The family of variant ``label`` with the best dev PR-AUC (recorded in each artifact at training time)."""
    names = [n for n in filters if n.rsplit(" ", 1)[0] == label]
    return max(names, key=lambda n: filters[n].config["dev"][filters[n].family]["pr_auc"])


def seed_spread(kind: str, train_run: Ranking, test_run: Ranking, qrels: Qrels, test_qrels: Qrels) -> dict:
    """Test PR-AUC and P@R95 of every adapter trained with fit seeds 13, 14, 15 (same dev slice): mean and std."""
    from irkit.filter.cosine_adapter import fit, network_inputs, to_unit

    path = CACHE / f"seeds-{kind}.json"
    if path.is_file():
        return json.loads(path.read_text())
    out: dict[str, dict[str, list[float]]] = {}
    qids = list(test_run)
    for features in FEATURES:
        data = training_set(train_run, qrels, features=features, dev_fraction=DEV_FRACTION, seed=SEED)
        u = [to_unit(test_run[q][1], data.domain) for q in qids]
        emb = data.encoder.encode_queries([test_run.queries[q] for q in qids], batch_size=64)  # type: ignore[index]
        inputs = network_inputs(emb, u, data.inputs)
        for fam in FAMILIES:
            name = f"{'CA' if features == 'query' else 'CA+list'} {fam}"
            for seed in (13, 14, 15):
                fitted = fit(fam, data.train, data.dev, FitConfig(seed=seed))
                probs = fitted.probabilities(inputs, u)
                scored = test_run.cut({})
                scored.results = {q: (test_run[q][0], p) for q, p in zip(qids, probs, strict=True)}
                for key, value in curve_stats(scored, test_qrels, 1).items():
                    out.setdefault(name, {}).setdefault(key, []).append(value)
    path.write_text(json.dumps(out, indent=1))
    return out


def study(
    dev: Ranking,
    test: Ranking,
    dev_qrels: Qrels,
    test_qrels: Qrels,
    filters: dict[str, CosineFilter],
    rel: int,
    dev_rel: int = 1,
) -> dict[str, object]:
    """Every method on ``test``; the baselines' thresholds come from ``dev`` by the adapters' rule."""
    rows: dict[str, dict[str, float]] = {"no filter": point(test, test, test_qrels, rel)}
    for k in TOPK:
        rows[f"top-{k}"] = point(test.top_k(k), test, test_qrels, rel)
    maps = {"raw score": lambda s: s, "min-max": minmax, "z-score": zscore}
    scored = {name: remap(test, fn) for name, fn in maps.items()}
    taus = {
        name: choose_threshold(*pooled_pairs(remap(dev, fn), dev_qrels, dev_rel), "recall", TARGET)
        for name, fn in maps.items()
    }
    for name, flt in filters.items():
        scored[name] = flt.calibrate(test)
        taus[name] = flt.tau
    ranks = remap(test, rank_score)
    stats = {"top-K (1/rank)": curve_stats(ranks, test_qrels, rel)}
    curves = {"top-K (1/rank)": pr_curve(*pooled_pairs(ranks, test_qrels, rel))[:2]}
    for name, run in scored.items():
        rows[f"{name} >= tau"] = {**point(threshold_cut(run, taus[name]), test, test_qrels, rel), "tau": taus[name]}
        stats[name] = curve_stats(run, test_qrels, rel)
        curves[name] = pr_curve(*pooled_pairs(run, test_qrels, rel))[:2]
    return {"rows": rows, "stats": stats, "curves": curves}


def precision_at(curve: tuple[np.ndarray, np.ndarray], recall: float) -> float:
    """The best precision on a PR curve at recall >= ``recall`` (what a method offers at equal recall)."""
    precision, rec = curve
    ok = rec >= recall - 1e-12
    return float(precision[ok].max()) if ok.any() else 0.0


def claims(result: dict[str, object], adapter: str) -> dict[str, object]:
    """The adapter against every baseline: precision at each baseline operating point's recall, PR-AUC, P@R95."""
    rows, stats, curves = result["rows"], result["stats"], result["curves"]  # type: ignore[index]
    points = []
    for name, row in rows.items():
        if name.startswith("CA") or name == "no filter":
            continue
        points.append(
            {
                "baseline": name,
                "recall": row["pooled_R"],
                "precision": row["pooled_P"],
                "adapter_precision": precision_at(curves[adapter], row["pooled_R"]),
            }
        )
    base = [n for n in stats if not n.startswith("CA")]
    return {
        "adapter": adapter,
        "points": points,
        "wins_at_equal_recall": sum(p["adapter_precision"] > p["precision"] for p in points),
        "of": len(points),
        "pr_auc_beats": [n for n in base if stats[adapter]["pr_auc"] > stats[n]["pr_auc"]],
        "p_at_r95_beats": [n for n in base if stats[adapter]["p_at_r95"] > stats[n]["p_at_r95"]],
    }


def dl19(filters: dict[str, CosineFilter], dev: Ranking, dev_qrels: Qrels) -> dict[str, object]:
    """The SciFact-trained dense adapters on DL19 dense top 100 (43 queries), every threshold from SciFact dev."""
    ds = load_dataset(DATA / "trec-dl-2019")
    if not (INDEXES["dl19-dense"] / "manifest.json").is_file():
        from irkit.index.dense import build_dense_index

        build_dense_index(ds.corpus_path, INDEXES["dl19-dense"], model="minilm")  # type: ignore[arg-type]
    qrels = ds.qrels
    assert qrels is not None
    run = retrieve("dl19-dense", ds.queries, "dl19-dense-top100")
    moved = {name: CosineFilter.load(flt.path, match="model") for name, flt in filters.items()}  # type: ignore[arg-type]
    out: dict[str, object] = {}
    for rel in (2, 1):
        out[f"rel{rel}"] = study(dev, run, dev_qrels, qrels, moved, rel)
        out[f"rel{rel}-calibration"] = {n: calibration(f.calibrate(run), qrels, rel) for n, f in moved.items()}
    return out


def downstream(flts: dict[str, CosineFilter], queries: Queries, qrels: Qrels) -> dict[str, object]:
    """``dense % 100 >> filter >> CrossEncoder()`` vs ``dense % 100 >> CrossEncoder()``: pairs scored, nDCG@10."""
    from irkit.pipeline.runner import Runner
    from irkit.rerank.cross_encoder import CrossEncoder
    from irkit.retrieve.dense import Dense

    saved = CACHE / "downstream.json"
    known = json.loads(saved.read_text()) if saved.is_file() else {}
    dense = Dense(INDEXES["dense"], depth=DEPTH)
    ce = CrossEncoder()
    pipes = {"dense % 100 >> CrossEncoder()": (dense % DEPTH >> ce, "ce")}
    for name, flt in flts.items():
        pipes[f"dense % 100 >> {name} >> CrossEncoder()"] = (dense % DEPTH >> flt >> ce, name.replace(" ", "-"))
    first = (dense % DEPTH)(queries)
    runs, rows = {}, {}
    for name, (pipe, tag) in pipes.items():
        t0 = time.perf_counter()
        ckpt = CACHE / f"scifact-test{len(queries)}-{tag}.ckpt"  # one per query subset
        runs[name] = Runner(pipe, checkpoint=ckpt, progress=True).run(queries)
        wall = known.get(name, {}).get("wall_s") or round(time.perf_counter() - t0, 1)
        rows[name] = {"pairs": sum(len(d) for d, _ in runs[name].results.values()), "wall_s": wall}
    full = runs["dense % 100 >> CrossEncoder()"]
    tests = compare(full, {n: r for n, r in runs.items() if n != "dense % 100 >> CrossEncoder()"}, qrels)
    p = {t.name: t.p_value for t in tests}
    full_scores = full.to_dict()
    for name, run in runs.items():
        rows[name]["nDCG@10"] = evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]
        rows[name]["p_vs_unfiltered"] = p.get(name)
        # the cross-encoder scores pairs independently: a filtered run must hold the unfiltered run's scores
        diffs = [abs(float(x) - full_scores[q][d]) for q, (ds, s) in run.items() for d, x in zip(ds, s, strict=True)]
        rows[name]["max_score_diff_vs_unfiltered"] = max(diffs, default=0.0)
    rows["dense % 100 (no reranker)"] = {"pairs": 0, "nDCG@10": evaluate(first, qrels, ["nDCG@10"])["nDCG@10"]}
    saved.write_text(json.dumps({n: {"wall_s": r.get("wall_s")} for n, r in rows.items()}, indent=1))
    return rows


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures eval/regressions.yaml checks, keyed by variant (CA, CA+list) rather than the dev-chosen family."""
    settings = {"scifact-dense": results.get("scifact-dense"), "scifact-bm25": results.get("scifact-bm25")}
    if "dl19" in results:
        settings["dl19-dense-rel2"] = results["dl19"]["rel2"]
    out: dict[str, Any] = {}
    for key, res in settings.items():
        if res is None:
            continue
        stats = res["stats"]
        row = {n: {"pr_auc": stats[n]["pr_auc"], "p_at_r95": stats[n]["p_at_r95"]} for n in stats if n[:2] != "CA"}
        for c in res["claims"]:
            variant, family = c["adapter"].rsplit(" ", 1)
            row[variant] = {
                "family": family,
                "pr_auc": stats[c["adapter"]]["pr_auc"],
                "p_at_r95": stats[c["adapter"]]["p_at_r95"],
                "wins_at_equal_recall": c["wins_at_equal_recall"],
                "of": c["of"],
            }
        out[key] = row
    if "downstream" in results:
        down = {}
        for name, r in results["downstream"].items():
            variant = "no reranker" if "no reranker" in name else "unfiltered"
            if " >> CA" in name:
                variant = name.split(" >> ")[1].rsplit(" ", 1)[0]
            down[variant] = {"pairs": r["pairs"], "nDCG@10": r["nDCG@10"]}
        out["downstream"] = down
    return out


def summary_table(results: dict[str, Any]) -> list[str]:
    """The paper's claim per setting and variant: wins at equal recall, PR-AUC and P@R95 vs the best baseline."""
    header = ["setting", "adapter (family)", "precision higher at equal recall", "PR-AUC", "P@R95"]
    rows = []
    for setting, row in headline(results).items():
        if setting == "downstream":
            continue
        base = {n: v for n, v in row.items() if n not in ("CA", "CA+list")}
        best_auc = max(base, key=lambda n: base[n]["pr_auc"])
        best_p95 = max(base, key=lambda n: base[n]["p_at_r95"])
        for variant in ("CA", "CA+list"):
            v = row[variant]
            rows.append(
                [
                    setting,
                    f"{variant} ({v['family']})",
                    f"{v['wins_at_equal_recall']} of {v['of']} baseline points",
                    f"{v['pr_auc']:.4f} (best baseline {best_auc}: {base[best_auc]['pr_auc']:.4f})",
                    f"{v['p_at_r95']:.4f} (best baseline {best_p95}: {base[best_p95]['p_at_r95']:.4f})",
                ]
            )
    return table(header, rows)


# --- report --------------------------------------------------------------------------------------------------------

PLOT_STYLE = {"raw score": ("tab:gray", "-"), "min-max": ("tab:olive", "-"), "z-score": ("tab:brown", "-")}
PLOT_STYLE["top-K (1/rank)"] = ("black", ":")
FAMILY_COLOURS = {"linear": "tab:blue", "sqrt": "tab:orange", "quadratic": "tab:green", "power": "tab:red"}


def plot(panels: dict[str, dict[str, object]], path: Path) -> None:
    """Pooled precision–recall curves of every method, one panel per setting, with the operating points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(6.2 * len(panels), 10.4), squeeze=False)
    for ax, zoom, (title, res) in zip(axes[0], axes[1], panels.items(), strict=True):
        draw(ax, title, res)
        draw(zoom, f"{title}: high recall", res)
        zoom.set_xlim(0.8, 1.005)
        tail = [p[r >= 0.8].max() for p, r in res["curves"].values() if (r >= 0.8).any()]  # type: ignore[union-attr]
        zoom.set_ylim(0, min(1.01, 1.15 * max(tail)))
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Pooled (query, document) pairs of the top 100; dots: thresholds chosen on SciFact dev (recall 95 %)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw(ax: Any, title: str, res: dict[str, object]) -> None:
    """One panel: every method's PR curve, top-K squares, threshold dots, the unfiltered star."""
    for name, (precision, recall) in res["curves"].items():  # type: ignore[union-attr]
        if name in PLOT_STYLE:
            colour, style = PLOT_STYLE[name]
            width = 1.4
        else:
            colour = FAMILY_COLOURS[name.rsplit(" ", 1)[1]]
            style, width = ("--", 1.0) if name.startswith("CA+list") else ("-", 1.6)
        ax.plot(recall, precision, style, color=colour, lw=width, label=name)
    for name, row in res["rows"].items():  # type: ignore[union-attr]
        marker = "s" if name.startswith("top-") else ("*" if name == "no filter" else "o")
        ax.plot(row["pooled_R"], row["pooled_P"], marker, color="black", ms=4 if marker == "o" else 6)
        if name.startswith("top-") or name == "no filter":
            ax.annotate(name, (row["pooled_R"], row["pooled_P"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(title=title, xlabel="recall (of the relevant pairs in the top 100)", ylabel="precision", xlim=(0, 1.01))
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)


def fmt(x: object, digits: int = 4) -> str:
    if isinstance(x, float):
        return "—" if x != x else f"{x:.{digits}f}"
    return str(x)


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    """A markdown table; floats to 4 decimals (NaN as a dash)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]


def rows_table(res: dict[str, Any]) -> list[str]:
    header = ["method", "τ", "set P", "set R", "set F1", "pooled P", "pooled R", "kept/query: mean (p10/med/p90)"]
    rows = []
    for name, r in res["rows"].items():
        kept = f"{r['kept_mean']:.1f} ({r['kept_p10']:.0f} / {r['kept_median']:.0f} / {r['kept_p90']:.0f})"
        cells = [r["SetP"], r["SetR"], r["SetF"], r["pooled_P"], r["pooled_R"], kept, str(r["zero"]), str(r["pairs"])]
        rows.append([name, fmt(r.get("tau", float("nan")), 3), *cells])
    return table([*header, "zero", "pairs"], rows)


def stats_table(res: dict[str, Any]) -> list[str]:
    return table(["scores", "PR-AUC", "P@R95"], [[n, st["pr_auc"], st["p_at_r95"]] for n, st in res["stats"].items()])


def seeds_table(res: dict[str, Any]) -> list[str]:
    def spread(values: list[float]) -> str:
        return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"

    rows = [[n, spread(v["pr_auc"]), spread(v["p_at_r95"])] for n, v in res["seeds"].items()]
    return [
        "Adapters over fit seeds 13/14/15 (same dev slice; test; mean ± std):",
        "",
        *table(["adapter", "PR-AUC", "P@R95"], rows),
    ]


def claims_table(c: dict[str, Any]) -> list[str]:
    rows = []
    for p in c["points"]:
        win = "**" if p["adapter_precision"] > p["precision"] else ""
        rows.append([p["baseline"], p["recall"], p["precision"], f"{win}{fmt(p['adapter_precision'])}{win}"])
    header = ["baseline operating point", "its recall", "its precision", "adapter precision at ≥ that recall"]
    return [
        f"Adapter: **{c['adapter']}** (family chosen on dev).",
        "",
        *table(header, rows),
        "",
        f"Higher precision at equal recall at {c['wins_at_equal_recall']} of {c['of']} baseline points; "
        f"PR-AUC above: {', '.join(c['pr_auc_beats']) or 'none'}; "
        f"P@R95 above: {', '.join(c['p_at_r95_beats']) or 'none'}.",
    ]


NOTES = "<!-- notes: kept when the script rewrites this file -->"


def report(results: dict[str, Any], path: Path) -> None:
    """The markdown report; a hand-written section after the NOTES marker survives regeneration."""
    notes = ""
    if path.is_file() and NOTES in path.read_text(encoding="utf-8"):
        notes = path.read_text(encoding="utf-8").split(NOTES, 1)[1]
    meta = results["meta"]
    lines = [
        "# Cosine Adapter relevance filtering — SciFact (train → test) and DL19 transfer",
        "",
        f"Run {meta['date']} on {meta['machine']} (CPU flags: {meta['cpu_flags']}); torch {meta['torch']}; "
        f"this process used {meta['cpu_s'] / 60:.1f} CPU-minutes ({meta['wall_s'] / 60:.1f} min wall, "
        "reusing cached retrieval runs, adapters and reranker checkpoints where present).",
        "",
        "```sh",
        "nice -n 10 python eval/cosine_adapter.py        # this report, eval/results/cosine_adapter.json and _pr.png",
        "```",
        "",
        "Every threshold is chosen on the same dev slice (20 % of the SciFact train queries, seed 13) by the",
        "same rule: the largest threshold whose dev recall of the relevant retrieved pairs is ≥ 95 %.",
        "*set P/R/F1*: ir-measures `SetP`/`SetR`/`SetF` per query (relevant: grade ≥ rel), averaged over judged",
        "queries, an empty list scoring 0. *pooled P/R*: over all (query, document) pairs of the unfiltered top 100,",
        "recall relative to the relevant pairs the retriever found. *zero*: queries left with no result.",
        "CA = Cosine Adapter reading the query embedding only (the paper); CA+list = also statistics of the",
        "query's raw score list (irkit extension). PR-AUC = average precision over pooled pairs.",
        "",
        "![precision-recall](cosine_adapter_pr.png)",
        "",
        "## The paper's claim (higher precision than every baseline at equal recall), as measured",
        "",
        "Baselines: top-K (K = 1, 3, 5, 10) and one dev-tuned threshold on raw, min-max and z-score scores;",
        "each adapter is the family with the best dev PR-AUC of its variant.",
        "",
        *summary_table(results),
        "",
    ]
    for key, title in (
        ("scifact-dense", "SciFact test, dense MiniLM top 100"),
        ("scifact-bm25", "SciFact test, BM25 top 100"),
    ):
        res = results[key]
        lines += [f"## {title}", "", *rows_table(res), "", *stats_table(res), ""]
        lines += [*seeds_table(res), ""]
        for c in res["claims"]:
            lines += [*claims_table(c), ""]
        train_rows = [
            [n, t["dev_pr_auc"], t["dev_p_at_r95"], str(t["epochs"]), t["tau"]] for n, t in res["training"].items()
        ]
        lines += ["Training (per adapter: dev PR-AUC, epochs run, τ):", ""]
        lines += [*table(["adapter", "dev PR-AUC", "dev P@R95", "epochs", "τ"], train_rows), ""]
    if "dl19" in results:
        d = results["dl19"]
        for rel in (2, 1):
            res = d[f"rel{rel}"]
            lines += [
                "## Transfer: SciFact-trained dense adapters on TREC DL 2019 dense top 100 "
                f"(43 queries, relevant: grade ≥ {rel})",
                "",
            ]
            lines += [*rows_table(res), "", *stats_table(res), ""]
            for c in res["claims"]:
                lines += [*claims_table(c), ""]
            cal = results["scifact-dense"]["calibration"]
            cal_rows = [
                [n, *[x[k] for x in (c, cal[n]) for k in ("mean_p", "rate", "ece")]]
                for n, c in d[f"rel{rel}-calibration"].items()
            ]
            header = [
                "adapter",
                "mean p DL19",
                "rate DL19",
                "ECE DL19",
                "mean p SciFact",
                "rate SciFact",
                "ECE SciFact",
            ]
            lines += [
                "Calibration (pooled pairs): mean predicted probability vs observed relevance rate, ECE (10 bins):",
                "",
            ]
            lines += [*table(header, cal_rows), ""]
    if "downstream" in results:
        nan = float("nan")
        down_rows = [
            [
                f"`{n}`",
                str(r["pairs"]),
                r["nDCG@10"],
                "—" if r.get("p_vs_unfiltered") is None else f"{r['p_vs_unfiltered']:.2g}",
                fmt(r.get("wall_s") or nan, 0),
                fmt(r.get("max_score_diff_vs_unfiltered", nan), 6),
            ]
            for n, r in results["downstream"].items()
        ]
        header = [
            "pipeline",
            "CE pairs",
            "nDCG@10",
            "p vs unfiltered (paired t)",
            "wall s",
            "max score diff vs unfiltered",
        ]
        lines += [
            f"## Downstream: filter before the cross-encoder (SciFact test, every {DOWNSTREAM_EVERY}th query: "
            f"{300 // DOWNSTREAM_EVERY} of 300)",
            "",
        ]
        lines += [*table(header, down_rows), ""]
    text = "\n".join(lines) + "\n" + NOTES + (notes or "\n")
    path.write_text(text, encoding="utf-8")


def write_headline(results: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.write_text(json.dumps({**headline(results), "meta": results["meta"]}, indent=1) + "\n", encoding="utf-8")


def cpu_flags() -> str:
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return "unknown"
    return (
        ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
        or "none of AVX2/AVX-512"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--retrain", action="store_true", help="train the adapters again even if cached")
    ap.add_argument("--skip-dl19", action="store_true")
    ap.add_argument("--skip-downstream", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rewrite the markdown from the saved JSON")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2 cores are shared)")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "cosine_adapter.md")
    ap.add_argument("--results", type=Path, help="also write the headline figures here (eval/regress.py's {out})")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))
        report(saved, args.out)
        write_headline(saved, args.results)
        return
    import torch

    torch.set_num_threads(args.threads)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    train_ds, test_ds = load_dataset(SCIFACT, "train"), load_dataset(SCIFACT, "test")
    assert train_ds.qrels is not None and test_ds.qrels is not None
    results: dict[str, object] = {}
    panels: dict[str, dict[str, object]] = {}
    kept_filters: dict[str, dict[str, CosineFilter]] = {}
    dev_runs: dict[str, tuple[Ranking, Qrels]] = {}
    for kind in ("dense", "bm25"):
        tr = retrieve(kind, train_ds.queries, f"scifact-{kind}-train-top100")
        te = retrieve(kind, test_ds.queries, f"scifact-{kind}-test-top100")
        _, dev_q = split_dev([q for q in tr if q in train_ds.qrels], DEV_FRACTION, SEED)
        dev, dev_qrels = tr.subset(dev_q), train_ds.qrels.subset(dev_q)
        dev_runs[kind] = (dev, dev_qrels)
        filters = adapters(kind, tr, train_ds.qrels, args.retrain)
        kept_filters[kind] = filters
        res = study(dev, te, dev_qrels, test_ds.qrels, filters, rel=1)
        chosen = [best_of(filters, label) for label in ("CA", "CA+list")]
        res["claims"] = [claims(res, name) for name in chosen]
        res["training"] = {
            name: {
                "dev_pr_auc": f.config["dev"][f.family]["pr_auc"],
                "dev_p_at_r95": f.config["dev"][f.family]["p_at_r95"],
                "epochs": f.config["training"]["epochs_run"],
                "tau": f.tau,
                "facts": f.config["training"],
            }
            for name, f in filters.items()
        }
        res["seeds"] = seed_spread(kind, tr, te, train_ds.qrels, test_ds.qrels)
        if kind == "dense":
            res["calibration"] = {n: calibration(f.calibrate(te), test_ds.qrels, 1) for n, f in filters.items()}
        results[f"scifact-{kind}"] = res
        panels[f"SciFact test, {'dense MiniLM' if kind == 'dense' else 'BM25'} top 100"] = res
    if not args.skip_dl19:
        d = dl19(kept_filters["dense"], *dev_runs["dense"])
        for rel in (2, 1):
            res = d[f"rel{rel}"]
            res["claims"] = [claims(res, best_of(kept_filters["dense"], label)) for label in ("CA", "CA+list")]
        results["dl19"] = d
        panels["DL19 dense top 100 (grade ≥ 2), SciFact-trained"] = d["rel2"]
    if not args.skip_downstream:
        # every sixth test query: the unfiltered cross-encoder scores 100 pairs a query, ~30 s on the shared cores
        subset = test_ds.queries.subset(list(test_ds.queries)[::DOWNSTREAM_EVERY])
        flts = {
            name: kept_filters["dense"][name]
            for name in (best_of(kept_filters["dense"], "CA"), best_of(kept_filters["dense"], "CA+list"))
        }
        results["downstream"] = downstream(flts, subset, test_ds.qrels.subset(list(subset)))
    results["meta"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()}-CPU {platform.processor() or 'host'}",
        "cpu_flags": cpu_flags(),
        "torch": f"{torch.__version__}, {args.threads} thread(s)",
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - wall0,
    }
    plot(panels, args.out.with_name("cosine_adapter_pr.png"))
    plain = {
        k: ({kk: vv for kk, vv in v.items() if kk != "curves"} if isinstance(v, dict) else v)
        for k, v in results.items()
    }
    if "dl19" in plain:
        plain["dl19"] = {
            k: ({kk: vv for kk, vv in v.items() if kk != "curves"} if "curves" in v else v)
            for k, v in results["dl19"].items()
        }
    plain["headline"] = headline(results)
    args.out.with_suffix(".json").write_text(json.dumps(plain, indent=1, default=float) + "\n", encoding="utf-8")
    report(results, args.out)
    write_headline(results, args.results)
    print(f"wrote {args.out}, {args.out.with_suffix('.json')} and the plot", flush=True)


if __name__ == "__main__":
    main()
