"""The regression-table driver (eval/regress.py): validation, running commands and bundled runs, rendering."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from regress_driver import regress

from irkit.errors import IrkitError

MEASURED = {"date": "2026-11-28", "machine": "test"}


def condition(name: str, **kw: Any) -> dict[str, Any]:
    base = {"name": name, "description": "d", "dataset": "trec-dl-2019", "ci": False, "cost_s": 1}
    return {**base, "measured": MEASURED, **kw}


def write_spec(tmp_path: Path, conditions: list[dict[str, Any]], **top: Any) -> Path:
    path = tmp_path / "regressions.yaml"
    path.write_text(yaml.safe_dump({"conditions": conditions, **top}, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def data_env(dl19_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IRKIT_DATA", str(dl19_dir.parent))
    return dl19_dir


def test_the_committed_table_validates_and_its_ci_part_is_cheap() -> None:
    spec = regress.load()
    ci = [c for c in spec.conditions.values() if c.ci]
    # the dense rows encode the whole corpus (5 minutes on 2 AVX2 cores): regress.py checks them, CI does not
    assert {"scifact-bm25", "scifact-bm25-first100", "scifact-ce-fused-top20-first100", "dl19-bm25"} <= {
        c.name for c in ci
    }
    assert sum(c.cost_s for c in ci) <= 300  # CI runs on 2 cores within 15 minutes, unit tests included
    # figures taken from committed outputs (the tuning grids' JSONs) are those outputs' means
    assert [bad for c in spec.conditions.values() for bad in regress.recorded_mismatches(c)] == []


def test_readme_and_results_tables_are_rendered_from_the_table() -> None:
    stale = regress.render(regress.load(), write=False)
    assert stale == [], f"run `python eval/regress.py --render`: {stale} differ from eval/regressions.yaml"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": {"nDCG@10": {"expected": 0.5}}}, r"regressions\.yaml:\d+: conditions\[0\]\.metrics\.nDCG@10: "),
        ({"colour": "red"}, r"conditions\[0\]\.colour: unknown key"),
        ({"command": "echo hi"}, r"conditions\[0\]\.command: a command writes either"),
        ({"pipeline": "../README.md"}, r"no pipeline file '\.\./README\.md' under examples/pipelines/"),
        ({"candidates": 0}, r"conditions\[0\]\.candidates: expected a positive integer"),
        ({"significance": {"vs": "nobody"}}, r"conditions\[0\]\.significance\.vs: 'nobody' is not another condition"),
        ({"significance": {"vs": "b", "p_max": 0.05, "p_min": 0.05}}, r"give one"),
        ({"command": "x {seed} > {out}", "metrics": {"m": {"expected": 1, "tol": 0, "key": "m"}}}, r"seeds list"),
        ({"name": "Bad Name"}, r"lower-case letters"),
        (
            {
                "command": "x {seed} > {out}",
                "seeds": [1, 2, 3],
                "metrics": {"m": {"expected": 0.3, "std": 0.04, "tol": 0.01, "key": "m"}},
            },
            r"metrics\.m\.tol: tol 0\.01 is tighter than the seed noise: two means of 3 seeds with std 0\.04 "
            r"differ by up to 0\.065",
        ),
    ],
)
def test_a_bad_condition_names_the_file_line_and_key(tmp_path: Path, change: dict, message: str) -> None:
    a = condition("a", candidates=10, metrics={"nDCG@10": {"expected": 0.5, "tol": 0.01}})
    b = condition("b", candidates=20, metrics={"nDCG@10": {"expected": 0.5, "tol": 0.01}})
    a.update(change)
    if "command" in change or "pipeline" in change:
        a.pop("candidates")
    with pytest.raises(IrkitError, match=message):
        regress.load(write_spec(tmp_path, [a, b]))


def test_a_bad_table_is_an_error(tmp_path: Path) -> None:
    a = condition("a", candidates=10, metrics={"nDCG@10": {"expected": 0.5, "tol": 0.01}})
    with pytest.raises(IrkitError, match=r"tables\.t\.rows\[0\]: no condition named 'zz'"):
        regress.load(write_spec(tmp_path, [a], tables={"t": {"columns": ["label"], "rows": ["zz"]}}))
    with pytest.raises(IrkitError, match=r"tables\.t\.columns\[1\]: 'MAP' is neither"):
        regress.load(write_spec(tmp_path, [a], tables={"t": {"columns": ["label", "MAP"], "rows": ["a"]}}))


def test_figures_recorded_from_committed_outputs_must_be_their_means(tmp_path: Path) -> None:
    for seed, value in ((1, 0.51), (2, 0.53)):
        (tmp_path / f"r{seed}.json").write_text(json.dumps({"test": {"m": value}}), encoding="utf-8")

    def recorded(name: str, expected: float, files: str = "r{seed}.json") -> dict:
        metrics = {"m": {"expected": expected, "std": 0.0141, "tol": 0.03, "key": "test.m"}}
        return condition(
            name, command="x {seed} > {out}", seeds=[1, 2], recorded_from=str(tmp_path / files), metrics=metrics
        )

    spec = regress.load(write_spec(tmp_path, [recorded("agrees", 0.52), recorded("off", 0.5201)]))
    assert regress.recorded_mismatches(spec.conditions["agrees"]) == []
    assert regress.recorded_mismatches(spec.conditions["off"]) == [
        f"off: m expected 0.5201 but {tmp_path / 'r{seed}.json'} gives 0.52"
    ]
    with pytest.raises(IrkitError, match=r"conditions\[0\]\.recorded_from: no file .*gone1\.json"):
        regress.load(write_spec(tmp_path, [recorded("gone", 0.52, "gone{seed}.json")]))


def test_bundled_run_and_a_run_writing_command_are_evaluated_and_tested(tmp_path: Path, data_env: Path) -> None:
    metric = {"nDCG@10": {"expected": 0.5058, "tol": 0.0005}}
    spec = regress.load(
        write_spec(
            tmp_path,
            [
                condition("bm25", candidates=100, metrics=metric),
                condition("copy", command=f"cp {data_env / 'bm25-top100.run'} {{run}}", metrics=metric),
                # the top 3 only: nDCG@10 drops significantly
                condition(
                    "top3",
                    candidates=3,
                    metrics={"nDCG@10": {"expected": 0.2713, "tol": 0.0005}},
                    significance={"vs": "bm25", "p_max": 0.05, "direction": "worse"},
                ),
                condition("first5", candidates=10, max_queries=5, metrics=metric),
            ],
        )
    )
    session = regress.Session(spec, runs=tmp_path / "runs")
    bm25, copy = session.run("bm25"), session.run("copy")
    assert bm25.ok and copy.ok and bm25.queries == 43
    assert bm25.figures["nDCG@10"]["measured"] == copy.figures["nDCG@10"]["measured"]
    assert (tmp_path / "runs" / "copy.trec").is_file()
    top3 = session.run("top3")
    assert top3.significance["p"][0] < 0.05
    assert [c.what for c in top3.checks] == ["nDCG@10", "p vs bm25 (nDCG@10)"]
    assert top3.checks[1].ok, top3.report()
    first5 = session.run("first5")
    assert first5.queries == 5 and not first5.ok and "FAIL" in first5.report()


def seeded_command(tmp_path: Path) -> tuple[str, Path]:
    """A command writing ``{test: {m: 0.5 + seed/100}, p: seed/100}``, and the file that counts its calls."""
    counter = tmp_path / "calls"
    script = tmp_path / "fake.py"
    script.write_text(
        "import json, sys\n"
        "seed = int(sys.argv[1])\n"
        f"open({str(counter)!r}, 'a').write('x')\n"
        "json.dump({'test': {'m': 0.5 + seed / 100}, 'p': 0.01 * seed}, open(sys.argv[2], 'w'))\n",
        encoding="utf-8",
    )
    return f"{sys.executable} {script} {{seed}} {{out}}", counter


def test_seeded_json_commands_give_means_run_once_and_fail_honestly(tmp_path: Path, data_env: Path) -> None:
    cmd, counter = seeded_command(tmp_path)
    base = condition("base", candidates=10, metrics={"m": {"expected": 0.4, "tol": 1}})
    good = condition(
        "good",
        command=cmd,
        seeds=[1, 2, 3],
        metrics={"m": {"expected": 0.52, "tol": 0.001, "key": "test.m"}},
        significance={"vs": "base", "p_max": 0.05, "direction": "better", "key": "p"},
    )
    bad = condition(
        "bad",
        command=cmd,
        seeds=[1, 2, 3],
        metrics={"m": {"expected": 0.6, "tol": 0.01, "key": "test.m"}, "gone": {"expected": 1, "tol": 0, "key": "x"}},
        significance={"vs": "base", "p_max": 0.025, "key": "p"},
    )
    spec = regress.load(write_spec(tmp_path, [base, good, bad]))
    session = regress.Session(spec, runs=tmp_path / "runs")
    out = session.run("good")
    assert out.ok, out.report()
    assert out.figures["m"]["per_seed"] == pytest.approx([0.51, 0.52, 0.53])
    assert out.figures["m"]["std"] == pytest.approx(0.01)
    assert out.significance["p"] == pytest.approx([0.01, 0.02, 0.03])
    worse = session.run("bad")
    assert counter.read_text() == "xxx"  # the second condition reused the three outputs
    assert [c.ok for c in worse.checks] == [False, False, False]  # m off, gone missing, p 0.03 > 0.025


def test_resume_reuses_outputs_only_of_the_same_command_and_committed_code(tmp_path: Path, data_env: Path) -> None:
    import subprocess

    repo = tmp_path / "repo"
    for rel, text in {"irkit/m.py": "A = 1\n", "eval/regress.py": "# driver\n", "eval/notes.md": "x\n"}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text, encoding="utf-8")

    def git(*args: str) -> None:
        who = ["-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run(["git", *who, *args], cwd=repo, check=True, capture_output=True)

    assert regress.code_fingerprint(repo) is None  # not a checkout
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    cmd, counter = seeded_command(tmp_path)
    metrics = {"m": {"expected": 0.515, "tol": 1e-9, "key": "test.m"}}
    good = condition("good", command=cmd, seeds=[1, 2], metrics=metrics)
    spec = regress.load(write_spec(tmp_path, [good]))

    def run(resume: bool = True) -> Any:
        outcome = regress.Session(spec, runs=tmp_path / "runs", resume=resume, root=repo).run("good")
        assert outcome.ok, outcome.report()
        return outcome

    assert run().resumed == [] and counter.read_text() == "xx"
    again = run()  # a fresh driver: both seeds come from the stamped outputs
    assert counter.read_text() == "xx" and len(again.resumed) == 2 and "2 output(s) resumed" in again.report()
    assert again.figures == run().figures
    record = json.loads(regress.write_result(spec.conditions["good"], again, tmp_path).read_text())
    assert record["resumed"] == again.resumed
    assert counter.read_text() == "xx"
    run(resume=False)  # without --resume every command runs
    assert counter.read_text() == "xxxx"
    (repo / "eval/regress.py").write_text("# driver, edited\n", encoding="utf-8")
    (repo / "eval/notes.md").write_text("y\n", encoding="utf-8")
    assert len(run().resumed) == 2  # the driver and files no command reads do not count
    (repo / "irkit/m.py").write_text("A = 2\n", encoding="utf-8")
    assert regress.code_fingerprint(repo) is None
    assert run().resumed == [] and counter.read_text() == "xxxxxx"  # uncommitted code: run, and leave no stamp
    git("commit", "-q", "-am", "two")
    assert run().resumed == [] and counter.read_text() == "xxxxxxxx"  # other code than the stamps say
    assert len(run().resumed) == 2
    next((tmp_path / "runs").glob("out-*[0-9a-f].json")).unlink()  # a stamp without its output runs again
    assert len(run().resumed) == 1 and counter.read_text() == "xxxxxxxxx"
    # a {run} command's run file is stamped and resumed the same way
    runs = tmp_path / "run-counter"
    copy = condition(
        "copy",
        command=f"echo -n x >> {runs} && cp {data_env / 'bm25-top100.run'} {{run}}",
        metrics={"nDCG@10": {"expected": 0.5, "tol": 0.5}},
    )
    spec = regress.load(write_spec(tmp_path, [copy]))
    first = regress.Session(spec, runs=tmp_path / "runs", resume=True, root=repo).run("copy")
    again = regress.Session(spec, runs=tmp_path / "runs", resume=True, root=repo).run("copy")
    assert runs.read_text() == "x" and first.resumed == [] and len(again.resumed) == 1
    assert again.figures == first.figures and again.ok


def test_a_command_reads_other_conditions_runs_computed_first(tmp_path: Path, data_env: Path) -> None:
    from irkit.data.io import read_run
    from irkit.pipeline.operators import fuse_rankings

    metric = {"nDCG@10": {"expected": 0.5, "tol": 1}}
    fused = condition(
        "fused", command="irkit fuse {run:bm25} {run:top3} --method rrf --depth 100 --out {run}", metrics=metric
    )
    bm25, top3 = condition("bm25", candidates=100, metrics=metric), condition("top3", candidates=3, metrics=metric)
    session = regress.Session(regress.load(write_spec(tmp_path, [bm25, top3, fused])), runs=tmp_path / "runs")
    out = session.run("fused")
    assert out.queries == 43
    runs = tmp_path / "runs"
    assert {p.name for p in runs.glob("*.trec")} == {"bm25.trec", "top3.trec", "fused.trec"}
    expected = fuse_rankings([read_run(runs / "bm25.trec"), read_run(runs / "top3.trec")])
    got = read_run(runs / "fused.trec")
    assert {q: list(d) for q, (d, _) in got.items()} == {q: list(d) for q, (d, _) in expected.items()}
    # a fused list ranks the top 3 of BM25 first (both runs vote for them), then BM25's order
    q, (docids, _) = next(iter(got.items()))
    assert list(docids) == list(read_run(runs / "bm25.trec")[q][0])
    for name, where in (("nobody", "names no other condition"), ("fused", "names no other condition")):
        bad = {**fused, "command": f"irkit fuse {{run:bm25}} {{run:{name}}} --out {{run}}"}
        with pytest.raises(IrkitError, match=rf"conditions\[2\]\.command: \{{run:{name}\}} {where}"):
            regress.load(write_spec(tmp_path, [bm25, top3, bad]))
    with pytest.raises(IrkitError, match=r"\{run:bm25\} is not run in CI"):
        regress.load(write_spec(tmp_path, [bm25, top3, {**fused, "ci": True}]))


def test_a_failing_command_is_an_error(tmp_path: Path, data_env: Path) -> None:
    c = condition("c", command="exit 3 # {run}", metrics={"nDCG@10": {"expected": 0.5, "tol": 0.01}})
    session = regress.Session(regress.load(write_spec(tmp_path, [c])), runs=tmp_path / "runs")
    with pytest.raises(IrkitError, match="exited with status 3"):
        session.run("c")


def test_render_fills_marked_tables_from_the_spec_and_the_last_results(tmp_path: Path, data_env: Path) -> None:
    c = condition(
        "bm25", label="BM25 | given", candidates=100, metrics={"nDCG@10": {"expected": 0.5058, "tol": 0.0005}}
    )
    table = {"columns": ["label", "nDCG@10", {"show": "last run", "header": "rerun"}], "rows": ["bm25"]}
    spec = regress.load(write_spec(tmp_path, [c], tables={"t": table}))
    doc = tmp_path / "doc.md"
    doc.write_text("Intro.\n<!-- regress:table t -->\nold\n<!-- /regress -->\nProse.\n", encoding="utf-8")
    results = tmp_path / "results"
    assert regress.render(spec, (doc,), results) == [doc]
    assert "| BM25 \\| given | 0.5058 | not rerun |" in doc.read_text()
    outcome = regress.Session(spec, runs=tmp_path / "runs").run("bm25")
    record = json.loads(regress.write_result(spec.conditions["bm25"], outcome, results).read_text())
    assert record["ok"] and record["figures"]["nDCG@10"]["measured"] == pytest.approx(0.5058, abs=5e-5)
    assert regress.render(spec, (doc,), results, write=False) == [doc]  # the new result makes it stale
    regress.render(spec, (doc,), results)
    text = doc.read_text()
    assert f"| ok, {record['date'][:10]}, " in text and text.startswith("Intro.\n") and text.endswith("Prose.\n")
    assert regress.render(spec, (doc,), results) == []
    doc.write_text("a\n\n<!-- regress:table nope -->\n<!-- /regress -->\n", encoding="utf-8")
    with pytest.raises(IrkitError, match=r"doc\.md:3: no table 'nope'"):
        regress.render(spec, (doc,), results)


def test_ensure_index_builds_reuses_and_never_rebuilds_through_a_symlink(tmp_path: Path, scifact_slice: Path) -> None:
    def spec_with(doc_count: int) -> Any:
        c = condition("a", candidates=10, metrics={"nDCG@10": {"expected": 0.5, "tol": 0.01}})
        ix = {"type": "bm25", "dataset": str(scifact_slice), "doc_count": doc_count}
        return regress.load(write_spec(tmp_path, [c], indexes={"slice-bm25": ix}))

    built = regress.ensure_index(spec_with(300), "slice-bm25", root=tmp_path)
    assert built == tmp_path / "indexes" / "slice-bm25"
    stamp = (built / "manifest.json").stat().st_mtime_ns
    assert regress.ensure_index(spec_with(300), "slice-bm25", root=tmp_path) == built
    assert (built / "manifest.json").stat().st_mtime_ns == stamp  # reused
    other = tmp_path / "elsewhere"
    (other / "indexes").mkdir(parents=True)
    os.symlink(built, other / "indexes" / "slice-bm25")
    with pytest.raises(IrkitError, match="not rebuilding a symlink"):
        regress.ensure_index(spec_with(299), "slice-bm25", root=other)
    assert (built / "manifest.json").stat().st_mtime_ns == stamp
