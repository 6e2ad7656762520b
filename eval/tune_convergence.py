"""Learning efficiency (issue #16): dev nDCG@10 against training steps and training compute, per tuning method.

Reads the runs of ``bash eval/tune_all.sh curves`` (``{kind}_{tag}_lr{lr}_s{seed}.json``, each
with its dev checks), picks one learning rate per method on the dev slice (highest mean dev
nDCG@10 at the end of the budget; the test split is never looked at), and reports per method:

- final dev nDCG@10 at equal steps (mean ± sample std over seeds: the stability measure);
- steps to 95 % of the final dev *gain* over the untuned model (the first check at which
  ``dev - dev_0 >= 0.95 (final - dev_0)``); "95 % of the final score" itself is reached at
  step 0 here, since the untuned MiniLM already scores > 95 % of any final value;
- compute per training step and in all, as a share of full fine-tuning's, and the dev score at
  equal compute: the last check each method reached within the compute full fine-tuning spent on
  the whole budget. Compute is counted in full-FT steps where runs measured the CPU seconds of one
  on their machine (a grid's runs land on AVX2 and AVX-512 machines), else in the CPU seconds of
  the training steps (a shared machine's contention inflates wall seconds, not CPU seconds), else
  in wall seconds. A method cheaper than full FT finishes the budget early and would have had
  compute to spare; the ``METHOD-eq`` runs (``--steps``, from ``--pick``) spend it;
- the paper's claim: connected within 0.005 of full fine-tuning, above every scattered method.

Writes the summary JSON and a PNG (dev vs steps, dev vs training compute). ``--paired``
re-scores the dev queries per query with each chosen run's saved model (``--out`` of the run)
and the untuned one: paired t-tests say which final differences the dev slice can resolve.

    python eval/tune_convergence.py --results eval/results/tune_curves [--paired]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NAME = re.compile(r"(?P<kind>bi|ce)_(?P<tag>.+)_lr(?P<lr>[^_]+)_s(?P<seed>\d+)")
SCATTERED = ("houlsby", "lora", "bitfit")
ORDER = ["full", "connected", "side", "houlsby", "lora", "bitfit"]


def order(tag: str) -> tuple[int, str]:
    """Table order: by method, its variants (``METHOD-eq``, ``METHOD-nopathway``, ...) after it."""
    base = tag.split("-")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), tag)


def load_runs(results: Path, kind: str) -> dict[str, dict[str, list[dict]]]:
    """``tag -> lr -> [run per seed]``."""
    runs: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(results.glob(f"{kind}_*.json")):
        m = NAME.fullmatch(path.stem)
        if m:
            runs[m["tag"]][m["lr"]].append(json.loads(path.read_text(encoding="utf-8")))
    return runs


def final_dev(run: dict) -> float:
    return float(run["dev_history"][-1][1])


def steps_to_gain(run: dict, share: float = 0.95) -> int | None:
    """First checked step whose dev gain over step 0 reaches ``share`` of the final gain (None: no gain)."""
    hist = run["dev_history"]
    start, final = hist[0][1], hist[-1][1]
    if final <= start:
        return None
    return next(step for step, dev in hist if dev - start >= share * (final - start))


def clock(run: dict) -> tuple[float, list[float]]:
    """Training compute of a run, in total and at each dev check, in :func:`clock_unit`'s unit: full-FT
    steps where the run measured one on its machine (``tune_common.full_step_cost``), so that runs made on
    different machines compare; else CPU seconds (contention on a shared machine does not inflate them);
    else wall seconds of the training steps."""
    if "full_step_cpu_s" in run:
        unit = run["full_step_cpu_s"]
        return run["train_cpu_s"] / unit, [t / unit for t in run["dev_train_cpu_s"]]
    if "train_cpu_s" in run:
        return run["train_cpu_s"], run["dev_train_cpu_s"]
    return run["train_s"], run["dev_train_s"]


def clock_unit(runs: list[dict]) -> str:
    """The one unit :func:`clock` measures these runs in (mixed units cannot be compared: an error)."""
    units = {"full-FT steps" if "full_step_cpu_s" in r else "CPU s" if "train_cpu_s" in r else "wall s" for r in runs}
    if len(units) > 1:
        sys.exit(f"runs measure compute in different units ({', '.join(sorted(units))}): rerun the older ones")
    return units.pop()


def dev_within(run: dict, budget: float) -> tuple[float, int]:
    """``(dev, step)`` of the last check reached within ``budget`` of training compute (:func:`clock`)."""
    reached = [(dev, step) for (step, dev), t in zip(run["dev_history"], clock(run)[1], strict=True) if t <= budget]
    return reached[-1]


def steps_for_budget(run: dict, budget: float) -> int:
    """The steps that spend ``budget`` of training compute (:func:`clock`) at the cost per step ``run`` paid
    over its last checks: for a method whose later epochs are cheaper (side caches the backbone's outputs
    after the first), a run past one epoch measures what a step really costs there."""
    steps = [step for step, _ in run["dev_history"]]
    spent = clock(run)[1]
    back = min(5, len(steps) - 1)
    per_step = (spent[-1] - spent[-1 - back]) / (steps[-1] - steps[-1 - back])
    return steps[-1] + max(0, round((budget - spent[-1]) / per_step))


# test measures and where a run file holds them: the bi-encoder's search, the cross-encoder alone and fused with BM25
TEST_MEASURES = {"search": "test", "rerank": "ce", "fused": "fused"}


def test_scores(rs: list[dict]) -> dict[str, dict[str, float]]:
    """Test nDCG@10 over seeds of the dev-selected models: the bi-encoder's search, the cross-encoder alone
    and fused with BM25 (empty for runs trained with ``--no-test``)."""
    return {
        name: mean_std([r[k]["nDCG@10"] for r in rs]) for name, k in TEST_MEASURES.items() if all(k in r for r in rs)
    }


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def fmt(stat: dict[str, float], n: int) -> str:
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}" if n > 1 else f"{stat['mean']:.4f}"


def paper_claim(score: dict[str, float]) -> dict:
    """The paper's claim on one measure: connected within 0.005 of full FT and above every scattered method
    (empty when connected or full FT is missing)."""
    if not {"connected", "full"} <= set(score):
        return {}
    conn = score["connected"]
    scattered = {t: conn - score[t] for t in SCATTERED if t in score}
    return {
        "connected_minus_full": conn - score["full"],
        "within_0.005_of_full": conn >= score["full"] - 0.005,
        "connected_minus_scattered": scattered,
        "above_every_scattered": len(scattered) == len(SCATTERED) and all(d > 0 for d in scattered.values()),
    }


def summarise(runs: dict[str, dict[str, list[dict]]]) -> dict:
    unit = clock_unit([r for by_lr in runs.values() for rs in by_lr.values() for r in rs])
    chosen: dict[str, dict] = {}
    for tag, by_lr in runs.items():
        # the rate is picked on the seeds every rate ran (the sweep's), so later seeds at the picked rate cannot flip it
        common = set.intersection(*({r["seed"] for r in rs} for rs in by_lr.values()))
        sweep = {lr: float(np.mean([final_dev(r) for r in rs if r["seed"] in common])) for lr, rs in by_lr.items()}
        lr = max(sweep, key=lambda k: sweep[k])
        rs = by_lr[lr]
        swept = [r for r in rs if r["seed"] in common]
        gains = [steps_to_gain(r) for r in rs]
        chosen[tag] = {
            "lr_sweep_final_dev": sweep,
            "lr": lr,
            "seeds": [r["seed"] for r in rs],
            "trainable_pct": rs[0].get("trainable_pct"),
            "dev_0": rs[0]["dev_history"][0][1],
            "final_dev": mean_std([final_dev(r) for r in rs]),
            # each seed checks its own sample of dev queries: the gain over the untuned model on them is the
            # seed-to-seed stability measure, the raw score's spread is mostly which queries were drawn
            "final_gain": mean_std([final_dev(r) - r["dev_history"][0][1] for r in rs]),
            "best_dev": mean_std([r["best_dev"] for r in rs]),
            "steps": rs[0]["steps"],
            "steps_to_95pct_gain": gains,
            "clock": unit,
            "machines": sorted({r.get("machine", "unrecorded") for r in rs}),
            "cost_per_step": mean_std([clock(r)[0] / r["steps"] for r in rs]),
            "compute": mean_std([clock(r)[0] for r in rs]),
            # what --pick reads: the sweep's seeds only, so that later seeds do not move the equal-compute steps
            "sweep_cost_per_step": float(np.mean([clock(r)[0] / r["steps"] for r in swept])),
            "sweep_compute": float(np.mean([clock(r)[0] for r in swept])),
            "curve": [r["dev_history"] for r in rs],
            "curve_compute": [clock(r)[1] for r in rs],
            "test": test_scores(rs),
        }
    if "full" in chosen:  # equal compute: what full FT spent on the whole budget
        budget = chosen["full"]["compute"]["mean"]
        for tag, c in chosen.items():
            at = [dev_within(r, budget) for r in runs[tag][c["lr"]]]
            c["equal_compute"] = {
                "budget": budget,
                "share_of_budget_used": c["compute"]["mean"] / budget,
                "dev": mean_std([d for d, _ in at]),
                "step": [s for _, s in at],
            }
    claims = {"final dev nDCG@10, equal steps": {t: c["final_dev"]["mean"] for t, c in chosen.items()}}
    # the cross-encoder is judged alone (what the paper reports) and fused with BM25 (what the pipeline ships)
    for test_key in (k for k in TEST_MEASURES if any(k in c["test"] for c in chosen.values())):
        test = {t: c["test"][test_key]["mean"] for t, c in chosen.items() if test_key in c["test"]}
        claims[f"test nDCG@10 ({test_key}), equal steps"] = test
        # equal compute: full FT's one epoch against every cheaper method's METHOD-eq run
        claims[f"test nDCG@10 ({test_key}), equal compute"] = {
            t.removesuffix("-eq"): v for t, v in test.items() if t == "full" or t.endswith("-eq")
        }
    claim = {metric: c for metric, values in claims.items() if (c := paper_claim(values))}
    return {"methods": chosen, "claim": claim}


def paired(summary: dict, runs: dict[str, dict[str, list[dict]]]) -> dict:
    """Per-query dev nDCG@10 of each chosen run's saved model (first seed) against the untuned model and full FT."""
    from tune_bi_encoder import dev_run, dev_slice
    from tune_common import load_scifact, set_threads

    from irkit.evaluation import compare
    from irkit.models.tuned import load_bi_encoder
    from irkit.tune import artifacts

    set_threads()
    chosen = {tag: runs[tag][c["lr"]][0] for tag, c in summary["methods"].items()}
    cfg = argparse.Namespace(**next(iter(chosen.values()))["config"])
    data = load_scifact(seed=cfg.seed)
    qids = dev_slice(data, cfg.dev_queries, cfg.seed)
    qrels = data.dev_qrels.subset(qids)
    model, tok = artifacts.build("bi-encoder", "minilm", {"method": "connected"})  # zero-init: the untuned model
    untuned = dev_run(model.eval(), tok, data, qids, cfg)
    tuned = {}
    for tag, run in chosen.items():
        model, tok = load_bi_encoder(run["config"]["out"])
        tuned[tag] = dev_run(model, tok, data, qids, cfg)
    out = {"n_queries": len(qids), "vs_untuned": {}, "vs_full": {}}
    for key, base, others in (
        ("vs_untuned", untuned, tuned),
        ("vs_full", tuned.get("full"), {t: r for t, r in tuned.items() if t != "full"}),
    ):
        if base is None or not others:
            continue
        for row in compare(base, others, qrels, "nDCG@10"):
            out[key][row.name] = {"mean": row.mean, "base": row.baseline_mean, "p": row.p_value, "p_holm": row.p_holm}
    return out


def table(summary: dict) -> str:
    methods = summary["methods"]
    head = (
        "| method | LR (dev-picked; sweep: final dev) | seeds | trainable % | final dev nDCG@10 "
        "| dev gain over untuned | best dev | steps to 95 % gain | compute / step | compute vs full "
        "| dev within full FT's compute (step) | test nDCG@10 |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for tag in sorted(methods, key=order):
        c = methods[tag]
        n = len(c["seeds"])
        sweep = ", ".join(
            f"{lr}: {v:.4f}" for lr, v in sorted(c["lr_sweep_final_dev"].items(), key=lambda kv: float(kv[0]))
        )
        gains = ", ".join("-" if g is None else str(g) for g in c["steps_to_95pct_gain"])
        eq = c.get("equal_compute")
        eq_cell = f"{fmt(eq['dev'], n)} ({', '.join(map(str, eq['step']))})" if eq else "-"
        share = f"{eq['share_of_budget_used']:.2f}" if eq else "-"
        pct = f"{c['trainable_pct']:.2f}" if c["trainable_pct"] is not None else "-"
        lines.append(
            f"| {tag} | {c['lr']} ({sweep}) | {n} | {pct} | {fmt(c['final_dev'], n)} | {fmt(c['final_gain'], n)} "
            f"| {fmt(c['best_dev'], n)} "
            f"| {gains} of {c['steps']} | {c['cost_per_step']['mean']:.2f} | {share} | {eq_cell} "
            f"| {'; '.join(f'{k} {fmt(v, n)}' for k, v in c['test'].items()) or '-'} |"
        )
    return "\n".join(lines)


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    tags = sorted(summary["methods"], key=order)
    colours = plt.get_cmap("tab20")
    for k, tag in enumerate(tags):
        c = summary["methods"][tag]
        label = f"{tag} (lr {c['lr']})"
        for i, (curve, secs) in enumerate(zip(c["curve"], c["curve_compute"], strict=True)):
            steps, devs = zip(*curve, strict=True)
            gains = [d - devs[0] for d in devs]  # each seed draws its own dev queries: plot the gain on them
            style = {"label": label if i == 0 else None, "color": colours(k % 20), "marker": "o", "markersize": 3}
            style["linestyle"] = "--" if "-" in tag else "-"  # a method's variants dashed
            axes[0].plot(steps, gains, **style)
            axes[1].plot(secs, gains, **style)
    axes[0].set_xscale("symlog", linthresh=10)
    axes[0].set_xlabel("training step (log scale past 10)")
    unit = next(iter(summary["methods"].values()))["clock"]
    axes[1].set_xlabel(f"training compute ({unit}, dev checks excluded)")
    axes[0].set_ylabel("dev nDCG@10 gain over the untuned model")
    if "full" in summary["methods"] and summary["methods"]["full"].get("equal_compute"):
        axes[1].axvline(summary["methods"]["full"]["equal_compute"]["budget"], color="grey", linestyle=":")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "tune_curves")
    ap.add_argument("--kind", default="bi", choices=["bi", "ce"])
    ap.add_argument("--summary", type=Path, default=None, help="default: eval/results/tune_convergence_KIND.json")
    ap.add_argument("--png", type=Path, default=None, help="default: eval/results/tune_convergence_KIND.png")
    ap.add_argument("--paired", action="store_true", help="per-query dev tests of the chosen runs (bi; loads models)")
    ap.add_argument(
        "--pick",
        metavar="TAG",
        help="print TAG's dev-picked learning rate and the steps full FT's training compute buys it, and stop",
    )
    ap.add_argument(
        "--pick-budget",
        metavar="TAG",
        help="for a METHOD-eq run (seed 13) that spent under 90 %% of full FT's compute: print its learning rate "
        "and the steps that spend all of it at the cost per step the run measured last (else print nothing)",
    )
    args = ap.parse_args()
    runs = load_runs(args.results, args.kind)
    if not runs:
        print(f"no {args.kind} runs in {args.results}", file=sys.stderr)
        return 1
    summary = summarise(runs)
    if args.pick:
        c = summary["methods"][args.pick]
        print(c["lr"], round(summary["methods"]["full"]["sweep_compute"] / c["sweep_cost_per_step"]))
        return 0
    if args.pick_budget:
        c, budget = summary["methods"][args.pick_budget], summary["methods"]["full"]["sweep_compute"]
        first = next(r for r in runs[args.pick_budget][c["lr"]] if r["seed"] == 13)
        if clock(first)[0] < 0.9 * budget:
            print(c["lr"], steps_for_budget(first, budget))
        return 0
    if args.paired:
        summary["paired_dev"] = paired(summary, runs)
    summary_path = args.summary or HERE / "results" / f"tune_convergence_{args.kind}.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    any_run = next(iter(next(iter(runs.values())).values()))[0]
    cfg = any_run["config"]
    title = (
        f"SciFact {'bi-encoder' if args.kind == 'bi' else 'cross-encoder'}: {any_run['n_train_examples']} "
        f"training examples, batch {cfg['batch_size']}, "
        f"docs {cfg['max_length']} tokens; dev = {any_run['n_dev_queries']} queries, BM25 top {cfg['dev_depth']}"
    )
    plot(summary, args.png or HERE / "results" / f"tune_convergence_{args.kind}.png", title)
    print(table(summary))
    print(json.dumps({k: summary[k] for k in ("claim", "paired_dev") if k in summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
