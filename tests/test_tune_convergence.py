"""eval/tune_convergence.py: the learning-rate pick, the equal-compute steps and the paper's claim, on
hand-made run records (the arithmetic the #16 tables rest on; the runs themselves are eval/ benchmarks)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "tune_convergence", Path(__file__).parents[1] / "eval" / "tune_convergence.py"
)
assert spec is not None and spec.loader is not None
tc = importlib.util.module_from_spec(spec)
sys.modules["tune_convergence"] = tc
spec.loader.exec_module(tc)


def run(seed: int, dev: list[float], cpu_per_step: float, test: float, steps: int = 20) -> dict:
    """A run record as tune_bi_encoder.py writes it: dev checks every 10 steps, compute in CPU seconds."""
    checks = [*range(0, steps, 10), steps]
    assert len(dev) == len(checks)
    return {
        "seed": seed,
        "steps": steps,
        "trainable_pct": 1.0,
        "machine": "test",
        "dev_history": [[s, d] for s, d in zip(checks, dev, strict=True)],
        "best_dev": max(dev),
        "full_step_cpu_s": 2.0,
        "train_cpu_s": cpu_per_step * steps,
        "dev_train_cpu_s": [cpu_per_step * s for s in checks],
        "test": {"nDCG@10": test},
    }


def grid(extra_full_seed: bool) -> dict:
    full = {"1e-4": [run(13, [0.5, 0.55, 0.6], 2.0, 0.70)], "3e-5": [run(13, [0.5, 0.52, 0.58], 2.0, 0.69)]}
    if extra_full_seed:  # a later seed at the picked rate, far cheaper: must move neither the pick nor the steps
        full["1e-4"].append(run(14, [0.4, 0.5, 0.41], 0.5, 0.66))
    return {
        "full": full,
        "connected": {"3e-3": [run(13, [0.5, 0.58, 0.61], 1.0, 0.68)], "1e-3": [run(13, [0.5, 0.5, 0.5], 1.0, 0.6)]},
        "lora": {"2e-3": [run(13, [0.5, 0.56, 0.57], 1.5, 0.65)]},
    }


def test_the_rate_and_the_equal_compute_steps_come_from_the_sweep_seeds_only() -> None:
    for extra in (False, True):
        s = tc.summarise(grid(extra))["methods"]
        assert s["full"]["lr"] == "1e-4" and s["connected"]["lr"] == "3e-3"
        # full FT spent 20 steps x 2 CPU s = 20 full-FT steps; connected costs half as much per step
        assert s["full"]["sweep_compute"] == pytest.approx(20.0)
        assert s["connected"]["sweep_cost_per_step"] == pytest.approx(0.5)
    later = tc.summarise(grid(True))["methods"]["full"]
    assert later["seeds"] == [13, 14]
    assert later["final_gain"]["mean"] == pytest.approx((0.1 + 0.01) / 2)  # gains over each seed's own step 0


def test_the_paper_claim_on_each_measure() -> None:
    claim = tc.summarise(grid(False))["claim"]
    dev = claim["final dev nDCG@10, equal steps"]
    assert dev["connected_minus_full"] == pytest.approx(0.01) and dev["within_0.005_of_full"]
    assert not dev["above_every_scattered"]  # houlsby and bitfit did not run: the claim is not made
    test = claim["test nDCG@10 (search), equal steps"]
    assert test["connected_minus_full"] == pytest.approx(-0.02) and not test["within_0.005_of_full"]
    assert test["connected_minus_scattered"] == {"lora": pytest.approx(0.03)}
    assert "test nDCG@10 (search), equal compute" not in claim  # no METHOD-eq runs yet
    scores = {"full": 0.70, "connected": 0.698, "houlsby": 0.69, "lora": 0.697, "bitfit": 0.691}
    assert tc.paper_claim(scores)["within_0.005_of_full"] and tc.paper_claim(scores)["above_every_scattered"]
    assert not tc.paper_claim({**scores, "lora": 0.698})["above_every_scattered"]  # a tie is not "above"
    assert tc.paper_claim({"full": 0.7, "lora": 0.6}) == {}


def test_the_cross_encoder_claim_is_judged_alone_and_fused() -> None:
    def ce(r: dict, alone: float, fused: float) -> dict:  # as tune_cross_encoder.py writes it: no "test" key
        del r["test"]
        return {**r, "ce": {"nDCG@10": alone}, "fused": {"nDCG@10": fused}}

    runs = {
        "full": {"1e-4": [ce(run(13, [0.5, 0.55, 0.6], 2.0, 0), 0.64, 0.70)]},
        "connected": {"1e-3": [ce(run(13, [0.5, 0.55, 0.58], 1.0, 0), 0.49, 0.69)]},
        "lora": {"5e-4": [ce(run(13, [0.5, 0.5, 0.52], 1.0, 0), 0.38, 0.695)]},
    }
    claim = tc.summarise(runs)["claim"]
    assert "test nDCG@10 (search), equal steps" not in claim
    alone, fused = claim["test nDCG@10 (rerank), equal steps"], claim["test nDCG@10 (fused), equal steps"]
    assert alone["connected_minus_full"] == pytest.approx(-0.15)
    assert alone["connected_minus_scattered"] == {"lora": pytest.approx(0.11)}
    assert fused["connected_minus_scattered"] == {"lora": pytest.approx(-0.005)}  # fused, lora is ahead


def test_budget_steps_follow_the_cost_a_run_measured_last() -> None:
    r = run(13, [0.5] * 11, 2.0, 0.7, steps=100)
    # the first 20 steps cost 2 CPU s each, the cached ones after them 0.2 (0.1 full-FT steps)
    r["dev_train_cpu_s"] = [2.0 * min(s, 20) + 0.2 * max(0, s - 20) for s in range(0, 101, 10)]
    # budget 80 full-FT steps = 160 CPU s; 56 spent at step 100, 52 full-FT steps more at 0.1 a step
    assert tc.steps_for_budget(r, 80.0) == 100 + 520
    assert tc.steps_for_budget(r, 10.0) == 100  # already past the budget: no more steps
