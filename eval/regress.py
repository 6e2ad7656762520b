"""Run the regression table eval/regressions.yaml: rerun conditions, check their figures, render the docs.

    python eval/regress.py --list                      # conditions, whether CI runs them, their cost
    python eval/regress.py --ci                        # the cheap ones (what CI runs)
    python eval/regress.py --only scifact-bm25 dl19-icr-n10
    python eval/regress.py --only tune-ce-lora --resume  # keep the seeds an interrupted driver finished
    python eval/regress.py                             # every condition (hours: the tuning grid)
    python eval/regress.py --render                    # rewrite the tables of README.md and eval/RESULTS.md
    python eval/regress.py --render --check            # exit 1 if those tables are out of date

Each condition prints expected against measured with pass/fail and leaves a JSON record in
eval/results/regress/NAME.json (the "last run" the rendered tables cite); runs go to the
git-ignored runs/regress/. The exit status is 1 when any figure misses its tolerance or a
significance claim fails. Pipelines run through the Python API; commands run in a shell from
the repository root with this checkout's irkit first on PYTHONPATH. The schema is documented at
the top of eval/regressions.yaml; tests/integration/test_regressions.py runs its ``ci: true`` part.

A seeded command can take most of an hour, and a condition several of them. Every command's output
(its JSON, or the run a ``{run}`` command writes) is stamped with its command and a fingerprint of
the committed code (``code_fingerprint``); with ``--resume`` an output whose stamp matches the
command and the code of this checkout is used instead of running the command again, and the record
lists it under ``resumed``. Outputs made from uncommitted code get no stamp, so they are never resumed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from irkit.data.io import atomic_path, read_json_object, read_run, write_run
from irkit.errors import IrkitError
from irkit.index import KINDS
from irkit.paths import eval_data_root

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "eval" / "regressions.yaml"
RESULTS = ROOT / "eval" / "results" / "regress"
RUNS = ROOT / "runs" / "regress"
DOCS = (ROOT / "README.md", ROOT / "eval" / "RESULTS.md")
# what a command's output can depend on; the driver only decides what runs, so its own changes do not count
CODE = ("irkit", "eval/*.py", "eval/*.sh", "examples", "pyproject.toml")
DRIVER = "eval/regress.py"
PIPELINES = ROOT / "examples" / "pipelines"
# table columns that are not a measure or an info key
KEYWORDS = ("label", "seeds", "depth", "queries", "p", "check", "reference", "last run")
TABLE = re.compile(r"(<!-- regress:table (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /regress -->)", re.S)

_CONDITION_KEYS = {
    "name", "label", "description", "dataset", "split", "pipeline", "command", "candidates", "max_queries",
    "seeds", "metrics", "significance", "ci", "cost_s", "measured", "reference", "info", "origin", "recorded_from",
}  # fmt: skip
_REQUIRED = ("name", "description", "dataset", "metrics", "ci", "cost_s", "measured")


@dataclass
class Metric:
    expected: float
    tol: float
    std: float | None = None  # spread over seeds of the recorded figure (bounds tol from below: seed_noise)
    key: str | None = None  # dotted path in a command's JSON output


@dataclass
class Significance:
    vs: str
    measure: str
    p_max: float | None = None  # claim: significantly different in ``direction``
    p_min: float | None = None  # claim: no significant difference
    direction: str = "better"
    p: float | list[float] | None = None  # the recorded p-value(s)
    key: str | None = None


@dataclass
class Condition:
    name: str
    description: str
    dataset: str
    metrics: dict[str, Metric]
    ci: bool
    cost_s: float
    measured: dict[str, str]
    label: str = ""
    split: str = "test"
    pipeline: str | None = None
    command: str | None = None
    candidates: int | None = None
    max_queries: int | None = None
    seeds: list[int] | None = None
    significance: Significance | None = None
    reference: str = ""
    info: dict[str, str] = field(default_factory=dict)
    origin: str = ""
    recorded_from: str | None = None  # committed JSON outputs of ``origin`` ({seed}) the figures were taken from

    @property
    def inputs(self) -> list[str]:
        """Conditions whose runs a command reads (``{run:NAME}``), in order."""
        return re.findall(r"\{run:([a-z0-9][a-z0-9-]*)\}", self.command or "")

    @property
    def writes_json(self) -> bool:
        """True when the condition's figures come from a command's JSON, not from a run we evaluate."""
        return self.command is not None and "{out}" in self.command


@dataclass
class Table:
    columns: list[tuple[str, str]]  # (what to show, header)
    rows: list[tuple[str, str]]  # (condition, label)


@dataclass
class Spec:
    conditions: dict[str, Condition]
    indexes: dict[str, dict[str, Any]]
    tables: dict[str, Table]
    path: Path


# ---------------------------------------------------------------------------------------- loading


class _Checker:
    """Validation errors that name the file, the YAML path and its line (the pipeline loader's format)."""

    def __init__(self, path: Path, text: str) -> None:
        from irkit.pipeline.config import _Ctx

        self._ctx = _Ctx(str(path), yaml.compose(text, Loader=yaml.SafeLoader))

    def error(self, where: tuple[str | int, ...], message: str) -> IrkitError:
        return self._ctx.error(where, message)

    def mapping(self, value: Any, where: tuple[str | int, ...], allowed: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"expected a mapping, got {type(value).__name__}")
        if allowed is not None and set(value) - allowed:
            key = sorted(set(value) - allowed)[0]
            raise self.error((*where, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def number(self, value: Any, where: tuple[str | int, ...], minimum: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(where, f"expected a number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(where, f"must be >= {minimum}, got {value!r}")
        return float(value)

    def positive_int(self, value: Any, where: tuple[str | int, ...]) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(where, f"expected a positive integer, got {value!r}")
        return value

    def text(self, value: Any, where: tuple[str | int, ...]) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"expected a non-empty string, got {value!r}")
        return value


def load(path: str | Path = SPEC) -> Spec:
    """Parse and validate a regression file; every error names the file, the key and its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        chk = _Checker(path, text)
    except OSError as e:
        raise IrkitError(f"cannot read the regression file ({e.strerror})", path=path) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise IrkitError(f"not valid YAML ({e})", path=path, line=mark.line + 1 if mark else None) from None
    data = chk.mapping(data, (), {"indexes", "conditions", "tables"})
    indexes = {}
    for name, ix in chk.mapping(data.get("indexes") or {}, ("indexes",)).items():
        ix = chk.mapping(ix, ("indexes", name))
        if ix.get("type") not in KINDS:
            raise chk.error(("indexes", name, "type"), f"an index type is one of {', '.join(sorted(KINDS))}")
        chk.text(ix.get("dataset"), ("indexes", name, "dataset"))
        indexes[name] = ix
    items = data.get("conditions")
    if not isinstance(items, list) or not items:
        raise chk.error(("conditions",), "expected a non-empty list of conditions")
    conditions: dict[str, Condition] = {}
    for i, item in enumerate(items):
        cond = _condition(item, ("conditions", i), chk)
        if cond.name in conditions:
            raise chk.error(("conditions", i, "name"), f"duplicate condition name {cond.name!r}")
        conditions[cond.name] = cond
    for i, cond in enumerate(conditions.values()):
        _check_significance(cond, conditions, ("conditions", i, "significance"), chk)
        _check_inputs(cond, conditions, ("conditions", i, "command"), chk)
    tables = {
        name: _table(t, conditions, ("tables", name), chk)
        for name, t in chk.mapping(data.get("tables") or {}, ("tables",)).items()
    }
    return Spec(conditions, indexes, tables, path)


def _condition(item: Any, where: tuple[str | int, ...], chk: _Checker) -> Condition:
    raw = chk.mapping(item, where, _CONDITION_KEYS)
    for key in _REQUIRED:
        if key not in raw:
            raise chk.error(where, f"missing {key!r}")
    name = chk.text(raw["name"], (*where, "name"))
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise chk.error((*where, "name"), f"a condition name is lower-case letters, digits and '-', got {name!r}")
    if not isinstance(raw["ci"], bool):
        raise chk.error((*where, "ci"), "expected true or false")
    measured = chk.mapping(raw["measured"], (*where, "measured"), {"date", "machine"})
    if set(measured) != {"date", "machine"}:
        raise chk.error((*where, "measured"), "needs date and machine")
    cond = Condition(
        name=name,
        description=chk.text(raw["description"], (*where, "description")),
        dataset=chk.text(raw["dataset"], (*where, "dataset")),
        metrics={},
        ci=raw["ci"],
        cost_s=chk.number(raw["cost_s"], (*where, "cost_s"), 0),
        measured={k: str(v) for k, v in measured.items()},
        label=chk.text(raw["label"], (*where, "label")) if "label" in raw else name,
        split=chk.text(raw.get("split", "test"), (*where, "split")),
        reference=chk.text(raw["reference"], (*where, "reference")) if "reference" in raw else "",
        origin=chk.text(raw["origin"], (*where, "origin")) if "origin" in raw else "",
        info={str(k): str(v) for k, v in chk.mapping(raw.get("info", {}), (*where, "info")).items()},
    )
    for key in ("candidates", "max_queries"):
        if key in raw:
            setattr(cond, key, chk.positive_int(raw[key], (*where, key)))
    _what_runs(cond, raw, where, chk)
    if "recorded_from" in raw:
        cond.recorded_from = chk.text(raw["recorded_from"], (*where, "recorded_from"))
        if not cond.writes_json or ("{seed}" in cond.recorded_from) != (cond.seeds is not None):
            raise chk.error((*where, "recorded_from"), "the JSON outputs of a {out} command, one per seed ({seed})")
        for path in recorded_files(cond):
            if not path.is_file():
                raise chk.error((*where, "recorded_from"), f"no file {path}")
    metrics = chk.mapping(raw["metrics"], (*where, "metrics"))
    if not metrics:
        raise chk.error((*where, "metrics"), "a condition checks at least one measure")
    for m, spec in metrics.items():
        w = (*where, "metrics", m)
        spec = chk.mapping(spec, w, {"expected", "tol", "std", "key"})
        if "expected" not in spec or "tol" not in spec:
            raise chk.error(w, "a measure needs expected and tol")
        if "key" in spec and not cond.writes_json:
            raise chk.error((*w, "key"), "key names a figure in a command's {out} JSON; this condition has none")
        metric = Metric(
            chk.number(spec["expected"], (*w, "expected")),
            chk.number(spec["tol"], (*w, "tol"), 0),
            chk.number(spec["std"], (*w, "std"), 0) if "std" in spec else None,
            chk.text(spec["key"], (*w, "key")) if "key" in spec else None,
        )
        if metric.std is not None and cond.seeds and len(cond.seeds) > 1:
            noise = seed_noise(metric.std, len(cond.seeds))
            if metric.tol < noise - 5e-4:  # tolerances are written to three decimals
                raise chk.error(
                    (*w, "tol"),
                    f"tol {metric.tol:g} is tighter than the seed noise: two means of {len(cond.seeds)} seeds with "
                    f"std {metric.std:g} differ by up to {noise:.3f} (two sigma); widen tol or add seeds",
                )
        cond.metrics[str(m)] = metric
    if "significance" in raw:
        cond.significance = _significance(raw["significance"], cond, (*where, "significance"), chk)
    return cond


def seed_noise(std: float, seeds: int) -> float:
    """Two standard deviations of the difference between two means over ``seeds`` runs with spread ``std``.

    A rerun on another CPU (bf16 rounds differently) draws new training trajectories, so a seeded
    figure can move this far without anything being wrong: no tolerance may be tighter.
    """
    return 2 * std * (2 / seeds) ** 0.5


def _what_runs(cond: Condition, raw: dict[str, Any], where: tuple[str | int, ...], chk: _Checker) -> None:
    """Exactly one system: a pipeline file, a command, or the dataset's bundled run (``candidates``)."""
    if "pipeline" in raw and "command" in raw:
        raise chk.error(where, "give either pipeline or command, not both")
    if "pipeline" in raw:
        rel = chk.text(raw["pipeline"], (*where, "pipeline"))
        p = (ROOT / rel).resolve()
        if not p.is_relative_to(PIPELINES) or not p.is_file():
            raise chk.error((*where, "pipeline"), f"no pipeline file {rel!r} under examples/pipelines/")
        cond.pipeline = rel
    elif "command" in raw:
        cmd = chk.text(raw["command"], (*where, "command"))
        if ("{run}" in cmd) == ("{out}" in cmd):
            raise chk.error((*where, "command"), "a command writes either a TREC run to {run} or a JSON to {out}")
        if ("{seed}" in cmd) != ("seeds" in raw):
            raise chk.error((*where, "command"), "{seed} in a command and a seeds list come together")
        if "{run}" in cmd and "seeds" in raw:
            raise chk.error((*where, "seeds"), "seeds repeat a command that writes a JSON ({out})")
        if "max_queries" in raw:
            raise chk.error((*where, "max_queries"), "a command chooses its own queries; max_queries is for pipelines")
        cond.command = cmd
    elif "candidates" not in raw:
        raise chk.error(where, "give a pipeline, a command, or candidates (the dataset's bundled run)")
    if "candidates" in raw and cond.command is not None:
        raise chk.error((*where, "candidates"), "candidates feed a pipeline; a command reads its own")
    if "seeds" in raw:
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
            raise chk.error((*where, "seeds"), "expected a non-empty list of integers")
        cond.seeds = seeds


def _significance(raw: Any, cond: Condition, where: tuple[str | int, ...], chk: _Checker) -> Significance:
    raw = chk.mapping(raw, where, {"vs", "measure", "p_max", "p_min", "direction", "p", "key"})
    sig = Significance(chk.text(raw.get("vs"), (*where, "vs")), str(raw.get("measure", next(iter(cond.metrics)))))
    if sig.measure not in cond.metrics:
        raise chk.error((*where, "measure"), f"{sig.measure!r} is not among this condition's metrics")
    if "p_max" in raw and "p_min" in raw:
        raise chk.error(where, "p_max claims a significant difference, p_min claims none: give one")
    for key in ("p_max", "p_min"):
        if key in raw:
            setattr(sig, key, chk.number(raw[key], (*where, key), 0))
    if "direction" in raw:
        if raw["direction"] not in ("better", "worse") or sig.p_max is None:
            raise chk.error((*where, "direction"), "direction (better or worse) goes with p_max")
        sig.direction = raw["direction"]
    if "p" in raw:
        p = raw["p"]
        if isinstance(p, list):
            if len(p) != len(cond.seeds or [None]):
                raise chk.error((*where, "p"), "a list of p-values has one per seed")
            sig.p = [chk.number(x, (*where, "p", i), 0) for i, x in enumerate(p)]
        else:
            sig.p = chk.number(p, (*where, "p"), 0)
    if cond.writes_json != ("key" in raw):
        raise chk.error(where, "key (where the command's JSON holds the p-value) is needed exactly for {out} commands")
    sig.key = raw.get("key")
    return sig


def _check_significance(
    cond: Condition, conditions: dict[str, Condition], where: tuple[str | int, ...], chk: _Checker
) -> None:
    sig = cond.significance
    if sig is None:
        return
    base = conditions.get(sig.vs)
    if base is None or base is cond:
        raise chk.error((*where, "vs"), f"{sig.vs!r} is not another condition")
    if (base.dataset, base.split) != (cond.dataset, cond.split) or base.max_queries != cond.max_queries:
        raise chk.error((*where, "vs"), f"{sig.vs!r} runs on other queries; a paired test needs the same ones")
    if cond.writes_json and sig.p_max is not None and sig.measure not in base.metrics:
        raise chk.error((*where, "vs"), f"{sig.vs!r} records no {sig.measure!r} to check the direction against")
    if not cond.writes_json and base.writes_json:
        raise chk.error((*where, "vs"), f"{sig.vs!r} leaves no run to test against")


def _check_inputs(
    cond: Condition, conditions: dict[str, Condition], where: tuple[str | int, ...], chk: _Checker
) -> None:
    """A command's ``{run:NAME}`` inputs are other conditions' runs of the same queries, as cheap for CI."""
    if cond.inputs and cond.writes_json:
        raise chk.error(where, "{run:NAME} inputs go with a command that writes a run to {run}")
    for name in cond.inputs:
        base = conditions.get(name)
        if base is None or base is cond or base.writes_json:
            raise chk.error(where, f"{{run:{name}}} names no other condition that produces a run")
        if (base.dataset, base.split, base.max_queries) != (cond.dataset, cond.split, cond.max_queries):
            raise chk.error(where, f"{{run:{name}}} runs on other queries than this condition")
        if cond.ci and not base.ci:
            raise chk.error(where, f"{{run:{name}}} is not run in CI, so this condition cannot be")


def _table(raw: Any, conditions: dict[str, Condition], where: tuple[str, ...], chk: _Checker) -> Table:
    raw = chk.mapping(raw, where, {"columns", "rows"})
    rows = []
    for i, row in enumerate(raw.get("rows") or []):
        if isinstance(row, dict):
            row = chk.mapping(row, (*where, "rows", i), {"condition", "label"})
            name = row.get("condition")
        else:
            name = row
        if name not in conditions:
            raise chk.error((*where, "rows", i), f"no condition named {name!r}")
        label = row.get("label", conditions[name].label) if isinstance(row, dict) else conditions[name].label
        rows.append((name, str(label)))
    columns = []
    for i, col in enumerate(raw.get("columns") or []):
        if isinstance(col, dict):
            col = chk.mapping(col, (*where, "columns", i), {"show", "header"})
            show = str(col.get("show"))
            header = str(col.get("header", "system" if show == "label" else show))
        else:
            show = str(col)
            header = "system" if show == "label" else show
        known = show in KEYWORDS or any(show in conditions[n].metrics or show in conditions[n].info for n, _ in rows)
        if not known:
            raise chk.error((*where, "columns", i), f"{show!r} is neither a keyword, a measure nor an info key")
        columns.append((show, header))
    if not rows or not columns:
        raise chk.error(where, "a table needs rows and columns")
    return Table(columns, rows)


# ---------------------------------------------------------------------------------------- running


@dataclass
class Check:
    what: str
    expected: str
    measured: str
    ok: bool


@dataclass
class Outcome:
    """One condition's measurement: its figures and the checks against the recorded ones."""

    name: str
    checks: list[Check]
    figures: dict[str, dict[str, Any]]
    significance: dict[str, Any] | None
    queries: int | None
    wall_s: float
    resumed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def report(self) -> str:
        width = max(len(c.what) for c in self.checks)
        queries = f", {self.queries} queries" if self.queries else ""
        resumed = f", {len(self.resumed)} output(s) resumed" if self.resumed else ""
        lines = [f"{self.name}: {_okay(self.ok)} ({self.wall_s:.0f} s{queries}{resumed})"]
        for c in self.checks:
            lines.append(f"  {c.what:<{width}}  expected {c.expected:<18} measured {c.measured:<18} {_okay(c.ok)}")
        return "\n".join(lines)


def _okay(ok: bool) -> str:
    return "ok" if ok else "FAIL"


class Session:
    """Runs conditions in one process; runs, datasets and command outputs are reused within it."""

    def __init__(self, spec: Spec, runs: Path = RUNS, resume: bool = False, root: Path = ROOT) -> None:
        self.spec, self.runs, self.resume, self.root = spec, runs, resume, root
        self._resumed: list[str] = []
        self._rankings: dict[str, Any] = {}
        self._outputs: dict[str, dict[str, Any]] = {}
        self._data: dict[tuple[str, str, int | None], tuple[Any, Any, Any]] = {}

    def data(self, cond: Condition) -> tuple[Any, Any, Any]:
        """(Dataset, queries, qrels) of a condition, cut to ``max_queries``."""
        key = (cond.dataset, cond.split, cond.max_queries)
        if key not in self._data:
            ds = _load_dataset(cond.dataset, cond.split)
            if ds.qrels is None:
                raise IrkitError(f"condition {cond.name!r}: dataset {cond.dataset!r} has no qrels to check against")
            queries = ds.queries
            if cond.max_queries is not None:
                queries = queries.subset(list(queries)[: cond.max_queries])
            self._data[key] = (ds, queries, ds.qrels.subset(list(queries)))
        return self._data[key]

    def run(self, name: str) -> Outcome:
        """Measure condition ``name`` and check it against its recorded figures."""
        cond = self.spec.conditions[name]
        t0 = time.perf_counter()
        self._resumed = []
        if cond.writes_json:
            figures, sig, queries = self._from_json(cond)
        else:
            figures, sig, queries = self._from_run(cond)
        checks = []
        for m, spec in cond.metrics.items():
            got = figures[m]["measured"]
            ok = got is not None and abs(got - spec.expected) <= spec.tol + 1e-12
            figures[m].update(expected=spec.expected, tol=spec.tol, ok=ok)
            shown = "missing" if got is None else f"{got:.4f}"
            checks.append(Check(m, f"{spec.expected:.4f} ± {spec.tol:g}", shown, ok))
        if sig is not None:
            checks.append(sig.pop("check"))
        return Outcome(name, checks, figures, sig, queries, time.perf_counter() - t0, self._resumed)

    def ranking(self, name: str) -> Any:
        """The run of a condition that produces one (pipeline, bundled run, or ``{run}`` command)."""
        if name in self._rankings:
            return self._rankings[name]
        from irkit.data.types import Ranking

        cond = self.spec.conditions[name]
        ds, queries, _ = self.data(cond)
        out = self.runs / f"{name}.trec"
        if cond.command is not None:
            command = cond.command
            for other in cond.inputs:  # the runs it reads, computed (or reused) in this session first
                self.ranking(other)
                command = command.replace(f"{{run:{other}}}", shlex.quote(str(self.runs / f"{other}.trec")))
            self._produce(command, out, "{run}")
            run = read_run(out, ds.queries)
        else:
            inp: Any = queries
            if cond.candidates is not None:
                if ds.run_path is None:
                    raise IrkitError(f"condition {name!r}: dataset {cond.dataset!r} has no bundled first-stage run")
                first = read_run(ds.run_path, ds.queries).subset(q for q in queries)
                inp = Ranking(first.top_k(cond.candidates).results, queries, ds.docstore())
            if cond.pipeline is None:
                run = inp
            else:
                import irkit

                self.ensure_indexes(cond.pipeline)
                with contextlib.chdir(ROOT):  # pipelines name indexes relative to the repository root
                    run = irkit.load_pipeline(ROOT / cond.pipeline)(inp)
            write_run(run, out, tag=name)
        self._rankings[name] = run
        return run

    def _from_run(self, cond: Condition) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None, int]:
        from irkit.evaluation import compare, evaluate

        _, queries, qrels = self.data(cond)
        run = self.ranking(cond.name)
        result = evaluate(run, qrels, list(cond.metrics))
        figures: dict[str, dict[str, Any]] = {m: {"measured": result[m]} for m in cond.metrics}
        sig = cond.significance
        if sig is None:
            return figures, None, len(queries)
        [row] = compare(self.ranking(sig.vs), {cond.name: run}, qrels, sig.measure)
        return figures, _judge(sig, [row.p_value], [row.mean - row.baseline_mean]), len(queries)

    def _from_json(self, cond: Condition) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None, None]:
        outputs = [self._json(cond.command or "", seed) for seed in cond.seeds or [None]]
        figures = seed_figures(cond, outputs)
        sig = cond.significance
        if sig is None:
            return figures, None, None
        ps = [_lookup(o, sig.key or "") for o in outputs]
        # the direction of a difference is judged against the baseline's recorded figure
        base = self.spec.conditions[sig.vs].metrics.get(sig.measure)
        values = figures[sig.measure].get("per_seed") or [figures[sig.measure]["measured"]]
        deltas = [None if base is None or v is None else v - base.expected for v in values]
        return figures, _judge(sig, ps, deltas), None

    def _json(self, command: str, seed: int | None) -> dict[str, Any]:
        """A command's JSON output for one seed; commands shared by conditions run once per session."""
        cmd = command.replace("{seed}", str(seed)) if seed is not None else command
        if cmd not in self._outputs:
            out = self.runs / f"out-{hashlib.sha256(cmd.encode()).hexdigest()[:12]}.json"
            self._produce(cmd, out, "{out}")
            self._outputs[cmd] = read_json_object(out, f"the {{out}} of {cmd}")
        return self._outputs[cmd]

    def _produce(self, cmd: str, out: Path, placeholder: str) -> None:
        """Run ``cmd`` to write ``out`` (its ``placeholder``), or with ``--resume`` reuse an ``out``
        stamped with the same command and code; a run command's stamp covers the runs it reads
        only in that they come from the same code."""
        stamp = out.with_suffix(".stamp.json")
        code = code_fingerprint(self.root)
        stamped = _read_stamp(stamp) == {"command": cmd, "code": code}
        if self.resume and code is not None and stamped and out.is_file():
            print(f"resuming {out.name}: {cmd} (made by the same code)", flush=True)
            self._resumed.append(cmd)
        else:
            stamp.unlink(missing_ok=True)
            self._shell(cmd, {placeholder: out})
            if code is not None and code == code_fingerprint(self.root):  # unchanged while it ran
                stamp.write_text(json.dumps({"command": cmd, "code": code}) + "\n", encoding="utf-8")
        if not out.is_file():
            raise IrkitError(f"command wrote nothing to {placeholder}: {cmd}", path=out)

    def _shell(self, command: str, targets: dict[str, Path]) -> None:
        """Run a command from the repository root with this checkout's irkit and interpreter first."""
        self.runs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="regress-") as tmp:
            cmd = command.replace("{tmp}", shlex.quote(tmp))
            for placeholder, path in targets.items():
                path.unlink(missing_ok=True)
                cmd = cmd.replace(placeholder, shlex.quote(str(path)))
            env = {
                **os.environ,
                "IRKIT_DATA": str(eval_data_root()),
                "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            }
            print(f"$ {cmd}", flush=True)
            code = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, check=False).returncode
        if code != 0:
            raise IrkitError(f"command exited with status {code}: {cmd}")

    def ensure_indexes(self, pipeline: str) -> None:
        """Build the declared indexes (``indexes:`` in the spec) that a pipeline file names."""
        steps = yaml.safe_load((ROOT / pipeline).read_text(encoding="utf-8"))
        for value in _index_paths(steps):
            p = Path(value)
            if p.parts[:1] == ("indexes",) and p.name in self.spec.indexes:
                ensure_index(self.spec, p.name)


def _index_paths(node: Any) -> list[str]:
    """Every ``index:`` value in a parsed pipeline file."""
    if isinstance(node, dict):
        own = [v for k, v in node.items() if k == "index" and isinstance(v, str)]
        return own + [p for v in node.values() for p in _index_paths(v)]
    if isinstance(node, list):
        return [p for v in node for p in _index_paths(v)]
    return []


def ensure_index(spec: Spec, name: str, root: Path = ROOT) -> Path:
    """``indexes/<name>`` as declared in the spec: reused when its manifest matches, else (re)built.

    A symlinked index that does not match is an error rather than a rebuild, so a shared index
    elsewhere is never overwritten.
    """
    from irkit import index
    from irkit.index import read_manifest

    ix = spec.indexes[name]
    path = root / "indexes" / name
    want = {k: v for k, v in ix.items() if k not in ("type", "dataset")}
    try:
        m = read_manifest(path, ix["type"], verify=False)
        have = {k: m.get(k, m.get("build", {}).get(k)) for k in want}
        if have == want:
            return path
        reason = f"it was built with {have}, the spec says {want}"
    except IrkitError as e:
        reason = str(e)
    if path.is_symlink():
        raise IrkitError(f"index {name!r} does not match eval/regressions.yaml ({reason}); not rebuilding a symlink")
    ds = _load_dataset(ix["dataset"], None)
    print(f"building index {name} ({reason})", flush=True)
    settings = {k: v for k, v in want.items() if k != "doc_count"}
    index.build(ix["type"], ds, path, overwrite=True, **settings)
    return path


def _load_dataset(name: str, split: str | None) -> Any:
    """``irkit.load_dataset``, with dataset names resolved under the evaluation data."""
    import irkit

    os.environ.setdefault("IRKIT_DATA", str(eval_data_root()))
    return irkit.load_dataset(name, split)


def _read_stamp(path: Path) -> dict[str, Any] | None:
    """A stamp written by ``Session._produce``; None when it is missing or damaged (the command then runs)."""
    try:
        return read_json_object(path, "stamp")
    except (OSError, IrkitError):
        return None


def code_fingerprint(root: Path = ROOT) -> str | None:
    """A hash of the committed files a command's output depends on (``CODE``, less the driver).

    None when any of them has uncommitted changes (or ``root`` is not a git checkout): an output
    made from code that no commit holds cannot be matched to a later checkout.
    """

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args, "--", *CODE], cwd=root, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    status, listing = git("status", "--porcelain"), git("ls-files", "--stage")
    if status is None or listing is None or any(line[3:] != DRIVER for line in status.splitlines()):
        return None
    files = [line for line in listing.splitlines() if line.partition("\t")[2] != DRIVER]
    return hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]


def seed_figures(cond: Condition, outputs: list[Any]) -> dict[str, dict[str, Any]]:
    """Each measure of a JSON-writing condition from its outputs, one per seed: the mean, and with seeds the
    per-seed values and their sample std (``measured`` None when an output lacks the figure)."""
    figures: dict[str, dict[str, Any]] = {}
    for m, spec in cond.metrics.items():
        values = [_lookup(o, spec.key or m) for o in outputs]
        if any(v is None for v in values):
            figures[m] = {"measured": None, "per_seed": values}
            continue
        figures[m] = {"measured": float(np.mean(values))}
        if cond.seeds:
            figures[m]["per_seed"] = values
            if len(values) > 1:
                figures[m]["std"] = float(np.std(values, ddof=1))
    return figures


def recorded_files(cond: Condition) -> list[Path]:
    """The committed outputs ``recorded_from`` names, one per seed (none without it)."""
    if cond.recorded_from is None:
        return []
    return [ROOT / cond.recorded_from.replace("{seed}", str(seed)) for seed in cond.seeds or [None]]


def recorded_mismatches(cond: Condition) -> list[str]:
    """Where ``cond``'s recorded figures (expected, std) differ from the committed outputs they were
    taken from by more than the recorded 4 decimals round (empty: they agree, or nothing is named)."""
    files = recorded_files(cond)
    if not files:
        return []
    figures = seed_figures(cond, [json.loads(f.read_text(encoding="utf-8")) for f in files])
    bad = []
    for m, spec in cond.metrics.items():
        got = figures[m]
        for what, recorded in (("expected", spec.expected), ("std", spec.std)):
            value = got.get("measured" if what == "expected" else what)
            if recorded is not None and (value is None or abs(value - recorded) > 5e-5):
                bad.append(f"{cond.name}: {m} {what} {recorded} but {cond.recorded_from} gives {value}")
    return bad


def _lookup(obj: Any, key: str) -> Any:
    """``obj[a][b]`` for the dotted key ``a.b`` (None when absent)."""
    for part in key.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _judge(sig: Significance, ps: list[Any], deltas: list[Any]) -> dict[str, Any]:
    """Check a significance claim on measured p-values (one per seed) and mean differences."""
    what = f"p vs {sig.vs} ({sig.measure})"
    expected = "recorded only"
    ok = all(p is not None for p in ps)
    if sig.p_max is not None:
        expected = f"{sig.direction}, p < {sig.p_max:g}"
        sign = 1 if sig.direction == "better" else -1
        ok = ok and all(p < sig.p_max for p in ps) and all(d is None or sign * d > 0 for d in deltas)
    elif sig.p_min is not None:
        expected = f"n.s., p ≥ {sig.p_min:g}"
        ok = ok and all(p >= sig.p_min for p in ps)
    shown = ", ".join("missing" if p is None else f"{p:.2g}" for p in ps)
    return {"vs": sig.vs, "measure": sig.measure, "p": ps, "ok": ok, "check": Check(what, expected, shown, ok)}


def machine() -> str:
    """This machine in the words the results use: cores, CPU model and the widest SIMD it has."""
    cpu, flags = "unknown CPU", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{os.cpu_count()}-core {cpu} ({simd}{'/FMA' if 'fma' in flags else ''})"


def write_result(cond: Condition, outcome: Outcome, results: Path = RESULTS) -> Path:
    """Record a measurement as eval/results/regress/NAME.json (atomically)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    record = {
        "name": cond.name,
        "ok": outcome.ok,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": commit.stdout.strip() or None,
        "system": cond.pipeline or cond.command or f"bundled run, top {cond.candidates}",
        "dataset": f"{cond.dataset}/{cond.split}",
        "queries": outcome.queries,
        "wall_s": round(outcome.wall_s, 1),
        "figures": outcome.figures,
        "significance": outcome.significance,
        **({"resumed": outcome.resumed} if outcome.resumed else {}),
    }
    path = results / f"{cond.name}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- rendering


def _p(p: float) -> str:
    """A p-value as the docs write it: two significant digits, ``4.8e-7`` rather than ``4.8e-07``."""
    return re.sub(r"e([+-])0*(\d)", lambda m: f"e{m[1].replace('+', '')}{m[2]}", f"{p:.2g}")


def _cell(show: str, cond: Condition, label: str, last: dict[str, Any] | None) -> str:
    if show == "label":
        return label
    if show == "seeds":
        return str(len(cond.seeds or [None]))
    if show == "depth":
        return str(cond.candidates or "–")
    if show == "queries":
        return str(cond.max_queries or "all")
    if show == "reference":
        return cond.reference
    if show == "p":
        sig = cond.significance
        if sig is None or sig.p is None:
            return "–"
        if isinstance(sig.p, list):
            return ", ".join(_p(p) for p in sig.p)
        claim = sig.direction if sig.p_max is not None else "n.s." if sig.p_min is not None else ""
        return f"p = {_p(sig.p)}" + (f" ({claim})" if claim else "")
    if show == "check":
        parts = [" / ".join(f"±{m.tol:g}" for m in cond.metrics.values())]
        sig = cond.significance
        if sig is not None and sig.p_max is not None:
            parts.append(f"p < {sig.p_max:g}")
        elif sig is not None and sig.p_min is not None:
            parts.append(f"p ≥ {sig.p_min:g}")
        return ", ".join(parts) + ("; in CI" if cond.ci else "")
    if show == "last run":
        if last is None:
            return "its run files, not rerun" if cond.recorded_from else "not rerun"
        return f"{_okay(last['ok'])}, {last['date'][:10]}, {last['machine'].split('(')[-1].rstrip(')')}"
    if show in cond.metrics:
        m = cond.metrics[show]
        return f"{m.expected:.4f}" + (f" ± {m.std:.4f}" if m.std is not None else "")
    return cond.info.get(show, "–")


def render_table(spec: Spec, name: str, results: Path = RESULTS) -> str:
    """Markdown for table ``name``: the recorded figures, and the last run of each row."""
    table = spec.tables[name]
    lines = ["| " + " | ".join(h for _, h in table.columns) + " |", "|" + "---|" * len(table.columns)]
    for cname, label in table.rows:
        path = results / f"{cname}.json"
        last = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        cells = [_cell(show, spec.conditions[cname], label, last).replace("|", "\\|") for show, _ in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(spec: Spec, docs: tuple[Path, ...] = DOCS, results: Path = RESULTS, write: bool = True) -> list[Path]:
    """Rewrite every marked table in ``docs``; returns the files whose tables were out of date."""
    stale = []
    for doc in docs:
        text = doc.read_text(encoding="utf-8")

        def fill(m: re.Match[str], doc: Path = doc, text: str = text) -> str:
            if m["name"] not in spec.tables:
                line = text[: m.start()].count("\n") + 1
                raise IrkitError(f"no table {m['name']!r} in {spec.path.name}", path=doc, line=line)
            return m[1] + render_table(spec, m["name"], results) + m[4]

        new = TABLE.sub(fill, text)
        if new != text:
            stale.append(doc)
            if write:
                doc.write_text(new, encoding="utf-8")
    return stale


# ---------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these conditions")
    ap.add_argument("--ci", action="store_true", help="run the conditions marked ci: true")
    ap.add_argument("--list", action="store_true", help="list the conditions and exit")
    ap.add_argument("--resume", action="store_true", help="reuse command outputs stamped with this checkout's code")
    ap.add_argument("--render", action="store_true", help="rewrite the tables of README.md and eval/RESULTS.md")
    ap.add_argument("--check", action="store_true", help="with --render: only report out-of-date tables (exit 1)")
    args = ap.parse_args(argv)
    try:
        spec = load()
        if args.list:
            for c in spec.conditions.values():
                print(f"{c.name:28s} {'ci' if c.ci else '  '} {c.cost_s:6.0f} s  {c.dataset}: {c.label}")
            return 0
        if args.render:
            stale = render(spec, write=not args.check)
            for doc in stale:
                print(f"{'out of date' if args.check else 'rendered'}: {doc.relative_to(ROOT)}")
            return 1 if args.check and stale else 0
        unknown = [n for n in args.only or [] if n not in spec.conditions]
        if unknown:
            raise IrkitError(f"unknown condition(s) {', '.join(unknown)}; see --list")
        names = args.only or [n for n, c in spec.conditions.items() if c.ci or not args.ci]
        print(f"{len(names)} condition(s), ≈ {sum(spec.conditions[n].cost_s for n in names) / 60:.0f} min", flush=True)
        session, failed = Session(spec, resume=args.resume), []
        for name in names:
            t0 = time.perf_counter()
            try:
                outcome = session.run(name)
            except IrkitError as e:  # a condition that cannot run fails; the others still run
                error = Check("run", "completes", f"error: {e}", False)
                outcome = Outcome(name, [error], {}, None, None, time.perf_counter() - t0)
            write_result(spec.conditions[name], outcome)
            print(outcome.report(), flush=True)
            if not outcome.ok:
                failed.append(name)
    except IrkitError as e:
        print(f"regress: error: {e}", file=sys.stderr)
        return 2
    print(f"\n{len(names) - len(failed)}/{len(names)} conditions ok", *(["FAILED:", *failed] if failed else []))
    print("records in eval/results/regress/; `python eval/regress.py --render` puts them in the docs' tables")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
