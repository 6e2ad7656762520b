"""The batch rerank job: crash and resume, Ray executor, bad input; on real DL19 files with a tiny real model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ce_models import save_random_bert

from irkit.cli import main
from irkit.data.io import read_run
from irkit.errors import IrkitError
from irkit.rerank.job import RerankJob

N_QUERIES = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_bert(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="module")
def run_file(dl19_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DL19 BM25 run cut to its first queries (100 candidates each)."""
    lines = (dl19_dir / "bm25-top100.run").read_text(encoding="utf-8").splitlines()
    qids = list(dict.fromkeys(x.split()[0] for x in lines))[:N_QUERIES]
    path = tmp_path_factory.mktemp("runs") / "bm25.run"
    path.write_text("\n".join(x for x in lines if x.split()[0] in qids) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def docstore(dl19_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from irkit.data.docstore import DocStore
    from irkit.data.io import read_corpus

    path = tmp_path_factory.mktemp("store") / "passages.sqlite"
    DocStore.build(path, read_corpus(dl19_dir / "passages.jsonl"))
    return path


@pytest.fixture(scope="module")
def reference(run_file: Path, docstore: Path, dl19_dir: Path, model_dir: Path, tmp_path_factory) -> Path:
    """An uninterrupted in-process run of the job."""
    out = tmp_path_factory.mktemp("ref") / "reranked.trec"
    args = _args(run_file, docstore, dl19_dir / "topics.tsv", model_dir, out)
    assert main(args) == 0
    return out


def _args(run: Path, corpus: Path, topics: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "rerank",
        *("--run", str(run), "--corpus", str(corpus), "--topics", str(topics)),
        *("--model", str(model), "--out", str(out), "--no-progress", *extra),
    ]


def test_reference_run_reranks_every_candidate(reference: Path, run_file: Path) -> None:
    def pairs(path: Path) -> set[tuple[str, str]]:
        return {tuple(x.split()[0:3:2]) for x in path.read_text().splitlines()}

    assert pairs(reference) == pairs(run_file)
    assert reference.read_text() != run_file.read_text()
    assert not reference.with_name(reference.name + ".ckpt").exists()  # spent checkpoint removed


def test_sigkill_then_resume_gives_identical_run(
    reference: Path, run_file: Path, docstore: Path, dl19_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reranked.trec"
    ckpt = tmp_path / "ckpt"
    args = _args(run_file, docstore, dl19_dir / "topics.tsv", model_dir, out, "--checkpoint-dir", str(ckpt))
    code = "import sys; from irkit.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.DEVNULL)
    results = ckpt / "results.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and results.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the job finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = results.read_bytes().count(b"\n")
    assert 3 <= done < N_QUERIES
    assert not out.exists()
    assert not list(tmp_path.glob(".reranked.trec.tmp*"))

    resumed = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    # at least the lines seen before the kill were reused, not recomputed
    skipped = int(resumed.stderr.split("resuming: ")[1].split(" of ")[0])
    assert skipped >= done
    assert out.read_bytes() == reference.read_bytes()


def test_torn_checkpoint_line_is_cut_and_redone(
    reference: Path, run_file: Path, docstore: Path, dl19_dir: Path, model_dir: Path, tmp_path: Path, capsys
) -> None:
    ranked = read_run(reference)
    qids = list(ranked)[:2]
    recs = [json.dumps({"qid": q, "docids": ranked[q][0], "scores": ranked[q][1].tolist()}) for q in qids]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "results.jsonl").write_text(recs[0] + "\n" + recs[1][:40])  # crashed while writing the second line
    out = tmp_path / "out.trec"
    assert main(_args(run_file, docstore, dl19_dir / "topics.tsv", model_dir, out, "--checkpoint-dir", str(ckpt))) == 0
    assert "resuming: 1 of" in capsys.readouterr().err
    assert out.read_bytes() == reference.read_bytes()
    assert not (ckpt / "results.jsonl").exists()


def test_ray_executor_equals_local(
    reference: Path, run_file: Path, docstore: Path, dl19_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    out = tmp_path / "ray.trec"
    # the job starts a local cluster, ray.init(num_cpus=2), shards the queries over 2 actors and shuts it down
    args = _args(run_file, docstore, dl19_dir / "topics.tsv", model_dir, out, "--executor", "ray", "--workers", "2")
    assert main(args) == 0
    assert not ray.is_initialized()
    assert out.read_bytes() == reference.read_bytes()


def _bad(tmp_path: Path, run_text: str) -> Path:
    path = tmp_path / "bad.run"
    path.write_text(run_text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("run_text", "line", "message"),
    [
        ("264014 Q0 5611210 1 14.5 bm25\n264014 Q0 6641238 2 bm25\n", 2, "expected 6 columns"),
        ("264014 Q0 5611210 1 14.5 bm25\n156493 Q0 no-such-doc 2 13.0 bm25\n", 2, "'no-such-doc' is not in"),
        ("264014 Q0 5611210 1 high bm25\n", 1, "is not a number"),
        ("264014 Q0 5611210 1 14.5 bm25\n999999 Q0 5611210 1 14.5 bm25\n", 2, "'999999', which has no topic"),
        ("264014 Q0 5611210 1 14.5 bm25\n264014 Q0 5611210 2 14.0 bm25\n", 2, "listed twice"),
        ("\n", None, "run is empty"),
    ],
)
def test_bad_run_names_file_and_line(
    run_text: str, line: int | None, message: str, docstore: Path, dl19_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    run = _bad(tmp_path, run_text)
    out = tmp_path / "out.trec"
    job = RerankJob(run, docstore, dl19_dir / "topics.tsv", str(model_dir), out, progress=False)
    with pytest.raises(IrkitError, match=message) as e:
        job.execute()
    assert e.value.path == str(run) and e.value.line == line
    assert not out.exists() and not out.with_name(out.name + ".ckpt").exists()


def test_cli_reports_bad_input_and_writes_nothing(
    docstore: Path, dl19_dir: Path, model_dir: Path, tmp_path: Path, capsys
) -> None:
    run = _bad(tmp_path, "264014 Q0 5611210 1 14.5\n")
    out = tmp_path / "out.trec"
    assert main(_args(run, docstore, dl19_dir / "topics.tsv", model_dir, out)) == 2
    assert f"{run}:1: expected 6 columns" in capsys.readouterr().err
    assert not out.exists()


def test_corpus_jsonl_is_built_into_a_docstore_once(
    reference: Path, run_file: Path, dl19_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "from-jsonl.trec"
    assert main(_args(run_file, dl19_dir / "passages.jsonl", dl19_dir / "topics.tsv", model_dir, out)) == 0
    assert out.read_bytes() == reference.read_bytes()


def test_checkpoint_of_another_job_is_refused(
    run_file: Path, docstore: Path, dl19_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "job.json").write_text('{"model": "other"}')
    job = RerankJob(
        run_file, docstore, dl19_dir / "topics.tsv", str(model_dir), tmp_path / "o.trec", checkpoint_dir=ckpt
    )
    with pytest.raises(IrkitError, match="checkpoint of a job with other"):
        job.execute()
