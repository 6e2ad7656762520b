"""evaluate/compare on the real DL19 BM25 run and NIST qrels."""

from __future__ import annotations

import numpy as np
import pytest

from irkit.cli import main
from irkit.data.io import read_qrels, read_run, write_run
from irkit.data.types import Ranking
from irkit.errors import IrkitError
from irkit.evaluation import compare, evaluate, holm


def test_dl19_bm25_matches_published(dl19_dir):
    run = read_run(dl19_dir / "bm25-top100.run")
    qrels = read_qrels(dl19_dir / "qrels.txt")
    result = evaluate(run, qrels, ["nDCG@10", "R(rel=2)@100"])
    assert result["nDCG@10"] == pytest.approx(0.5058, abs=5e-4)
    assert len(result.per_query["nDCG@10"]) == 43
    assert 0 < result["R(rel=2)@100"] < 1


def test_missing_query_counts_zero(dl19_dir):
    run = read_run(dl19_dir / "bm25-top100.run")
    qrels = read_qrels(dl19_dir / "qrels.txt")
    full = evaluate(run, qrels)["nDCG@10"]
    dropped = next(iter(run))
    partial = evaluate(run.subset([q for q in run if q != dropped]), qrels)
    assert partial.per_query["nDCG@10"][dropped] == 0.0
    assert partial["nDCG@10"] < full


def test_compare_identical_and_reversed(dl19_dir):
    run = read_run(dl19_dir / "bm25-top100.run")
    qrels = read_qrels(dl19_dir / "qrels.txt")
    reversed_run = Ranking.from_lists({q: (d[::-1], -np.arange(len(d))) for q, (d, _) in run.items()})
    rows = compare(run, {"same": run, "reversed": reversed_run}, qrels)
    by = {r.name: r for r in rows}
    assert by["same"].p_value == 1.0
    assert by["reversed"].mean < by["reversed"].baseline_mean
    assert by["reversed"].p_value < 1e-3
    assert by["reversed"].p_holm >= by["reversed"].p_value


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_unknown_measure(dl19_dir):
    with pytest.raises(IrkitError, match="unknown measure"):
        evaluate(read_run(dl19_dir / "bm25-top100.run"), read_qrels(dl19_dir / "qrels.txt"), ["nope@10"])


def test_cli_eval(dl19_dir, tmp_path, capsys):
    run = read_run(dl19_dir / "bm25-top100.run")
    cut = tmp_path / "top10.trec"
    write_run(run.top_k(10), cut)
    code = main(
        [
            "eval",
            str(dl19_dir / "bm25-top100.run"),
            str(dl19_dir / "qrels.txt"),
            "-m",
            "nDCG@10",
            "-m",
            "R(rel=2)@100",
            "--compare",
            str(cut),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "nDCG@10       0.5058" in out
    assert "p_holm=" in out


def test_cli_eval_bad_run(tmp_path, dl19_dir, capsys):
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 notanumber tag\n")
    assert main(["eval", str(bad), str(dl19_dir / "qrels.txt")]) == 2
    assert f"{bad}:2: score 'notanumber' is not a number" in capsys.readouterr().err


def test_cli_fuse_matches_the_fusion_operator_and_refuses_bad_input(dl19_dir, tmp_path, capsys):
    from irkit.pipeline.operators import linear, rrf

    run = read_run(dl19_dir / "bm25-top100.run")
    reversed_run = Ranking.from_lists({q: (d[::-1], -np.arange(len(d))) for q, (d, _) in run.items()})
    rev = tmp_path / "reversed.trec"
    write_run(reversed_run, rev)
    paths = [str(dl19_dir / "bm25-top100.run"), str(rev)]
    for method, fused in (("rrf", rrf([run, reversed_run])), ("linear", linear([run, reversed_run], [0.8, 0.2]))):
        out = tmp_path / f"{method}.trec"
        weights = ["--weights", "0.8", "0.2"] if method == "linear" else []
        assert main(["fuse", *paths, "--method", method, *weights, "--depth", "10", "--out", str(out)]) == 0
        got = read_run(out)
        assert len(got) == 43
        for q, (docids, scores) in got.items():
            best = sorted(fused[q].items(), key=lambda kv: -kv[1])[:10]
            assert len(docids) == 10
            assert scores == pytest.approx([s for _, s in best], abs=1e-6)  # the run file keeps 6 decimals
    same = tmp_path / "same.trec"  # a run fused with itself keeps its order
    assert main(["fuse", paths[0], paths[0], "--out", str(same)]) == 0
    assert {q: list(d) for q, (d, _) in read_run(same).items()} == {q: list(d) for q, (d, _) in run.items()}
    capsys.readouterr()
    assert main(["fuse", paths[0], "--out", str(tmp_path / "x.trec")]) == 2
    assert "fusion needs at least two runs, got 1" in capsys.readouterr().err
    assert main(["fuse", *paths, "--weights", "1", "1", "--out", str(tmp_path / "x.trec")]) == 2
    assert "--weights go with --method linear" in capsys.readouterr().err
    assert main(["fuse", *paths, "--method", "linear", "--weights", "1", "--out", str(tmp_path / "x.trec")]) == 2
    assert "fusion got 1 weights for 2 runs" in capsys.readouterr().err
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 nan tag\n")
    assert main(["fuse", paths[0], str(bad), "--out", str(tmp_path / "x.trec")]) == 2
    assert f"{bad}:2: score 'nan' is not finite" in capsys.readouterr().err
    assert not (tmp_path / "x.trec").exists()
