"""The shared runner through ``irkit rerank``: crash and resume, Ray = local, bad input, checkpoint hygiene.

Real DL19 files; tiny real models (a random BERT cross-encoder, a random Llama with the SmolLM2
tokenizer for ICR and PRP) so the mechanics run in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ce_models import save_random_bert
from llm_models import smollm2_tokenizer, tiny_llama

from irkit._java import fatal_signal_handlers
from irkit.cli import main
from irkit.data.io import read_run
from irkit.errors import IrkitError
from irkit.pipeline.runner import Runner

N_QUERIES = 6
DEPTH = 10
STAGES = ("cross_encoder", "icr", "prp")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ce = save_random_bert(tmp_path_factory.mktemp("tiny-ce"))
    llm = tmp_path_factory.mktemp("tiny-llm")
    tokenizer = smollm2_tokenizer()
    tiny_llama(tokenizer, initializer_range=0.3).save_pretrained(llm)
    tokenizer.save_pretrained(llm)
    return {"cross_encoder": ce, "icr": llm, "prp": llm}


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


def _args(stage: str, models: dict[str, Path], run: Path, corpus: Path, topics: Path, out: Path, *extra: str) -> list:
    options = {"icr": ["--max-doc-tokens", "32"], "prp": ["--passes", "3", "--max-doc-tokens", "32"]}.get(stage, [])
    return [
        "rerank",
        *("--run", str(run), "--corpus", str(corpus), "--topics", str(topics), "--depth", str(DEPTH)),
        *("--stage", stage, "--model", str(models[stage]), *options),
        *("--out", str(out), "--no-progress", "--shard-size", "1", *extra),
    ]


@pytest.fixture(scope="module")
def references(models, run_file: Path, docstore: Path, dl19_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted in-process run per stage."""
    out = {}
    for stage in STAGES:
        path = tmp_path_factory.mktemp("ref") / f"{stage}.trec"
        assert main(_args(stage, models, run_file, docstore, dl19_dir / "topics.tsv", path)) == 0
        out[stage] = path
    return out


def test_reference_runs_rerank_the_top_candidates(references: dict[str, Path], run_file: Path) -> None:
    bm25 = read_run(run_file).top_k(DEPTH)
    for path in references.values():
        ranked = read_run(path)
        assert list(ranked) == list(bm25)
        for q in bm25:
            assert sorted(ranked[q][0]) == sorted(bm25[q][0])
        assert not path.with_name(path.name + ".ckpt").exists()  # spent checkpoint removed
    assert len({p.read_bytes() for p in references.values()}) == len(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_then_resume_gives_identical_run(
    stage: str, models, references, run_file: Path, docstore: Path, dl19_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reranked.trec"
    ckpt = tmp_path / "ckpt"
    args = _args(stage, models, run_file, docstore, dl19_dir / "topics.tsv", out, "--checkpoint", str(ckpt))
    code = "import sys; from irkit.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.DEVNULL)
    results = ckpt / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and results.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = results.read_bytes().count(b"\n")
    assert 2 <= done < N_QUERIES
    assert not out.exists() and not list(tmp_path.glob(".reranked.trec.tmp*"))

    resumed = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    skipped = int(resumed.stderr.split("resuming: ")[1].split(" of ")[0])
    assert skipped >= done  # the queries finished before the kill were reused, not recomputed
    assert out.read_bytes() == references[stage].read_bytes()


@pytest.mark.parametrize("stage", ["cross_encoder", "icr"])
def test_ray_executor_equals_local(
    stage: str, models, references, run_file: Path, docstore: Path, dl19_dir: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    handlers = fatal_signal_handlers()
    out = tmp_path / "ray.trec"
    # the job starts a local cluster, ray.init(num_cpus=2), runs the shards on 2 actors and shuts it down
    extra = ("--executor", "ray", "--workers", "2")
    assert main(_args(stage, models, run_file, docstore, dl19_dir / "topics.tsv", out, *extra)) == 0
    assert not ray.is_initialized()
    # ray.init took over SIGSEGV & co.; with the JVM in this process that killed it at its next safepoint
    assert fatal_signal_handlers() == handlers
    assert out.read_bytes() == references[stage].read_bytes()


def test_torn_checkpoint_line_is_cut_and_redone(
    models, references, run_file: Path, docstore: Path, dl19_dir: Path, tmp_path: Path, capsys
) -> None:
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.trec"
    ranked = read_run(references["cross_encoder"])
    rec = [json.dumps({"qid": q, "docids": ranked[q][0], "scores": ranked[q][1].tolist()}) for q in list(ranked)[:2]]
    ckpt.mkdir()
    (ckpt / "job.json").write_text(json.dumps(_job(models, run_file, docstore, dl19_dir)))
    (ckpt / "results.jsonl").write_text(rec[0] + "\n" + rec[1][:40])  # crashed while writing the second line
    args = _args("cross_encoder", models, run_file, docstore, dl19_dir / "topics.tsv", out, "--checkpoint", str(ckpt))
    assert main(args) == 0
    assert "resuming: 1 of" in capsys.readouterr().err
    assert out.read_bytes() == references["cross_encoder"].read_bytes()
    assert not (ckpt / "results.jsonl").exists()


def _job(models, run_file: Path, docstore: Path, dl19_dir: Path) -> dict:
    """The job description the rerank command records for the cross-encoder reference run."""
    from irkit.data.docstore import DocStore
    from irkit.data.io import read_queries
    from irkit.data.types import Ranking
    from irkit.rerank.cross_encoder import CrossEncoder

    queries = read_queries(dl19_dir / "topics.tsv")
    store = DocStore(docstore)
    cands = read_run(run_file, queries, docids=store)
    cands = Ranking(cands.results, queries.subset(cands), store).top_k(DEPTH)
    return Runner(CrossEncoder(str(models["cross_encoder"])), shard_size=1)._job(cands)


def test_failed_start_never_blocks_the_corrected_command(
    models, references, run_file: Path, docstore: Path, dl19_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.trec"
    bad = _args(
        "cross_encoder",
        {**models, "cross_encoder": tmp_path / "no-such-model"},
        run_file,
        docstore,
        dl19_dir / "topics.tsv",
        out,
    )
    assert main(bad) == 2
    assert "unknown model" in capsys.readouterr().err
    ckpt = out.with_name(out.name + ".ckpt")
    ckpt.mkdir()
    (ckpt / "job.json").write_text('{"stage": "a job that never finished a query"}')
    assert main(_args("cross_encoder", models, run_file, docstore, dl19_dir / "topics.tsv", out)) == 0
    assert out.read_bytes() == references["cross_encoder"].read_bytes()


def test_checkpoint_of_another_job_is_refused(
    models, run_file: Path, docstore: Path, dl19_dir: Path, tmp_path: Path, capsys
) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "job.json").write_text('{"stage": "other"}')
    (ckpt / "results.jsonl").write_text(json.dumps({"qid": "1", "docids": ["a"], "scores": [1.0]}) + "\n")
    args = _args("icr", models, run_file, docstore, dl19_dir / "topics.tsv", tmp_path / "o.trec")
    assert main([*args, "--checkpoint", str(ckpt)]) == 2
    assert "checkpoint of another job (different format, input, shard_size, stage)" in capsys.readouterr().err


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
def test_bad_run_names_file_and_line_and_writes_nothing(
    run_text: str, line: int | None, message: str, models, docstore: Path, dl19_dir: Path, tmp_path: Path, capsys
) -> None:
    run = _bad(tmp_path, run_text)
    out = tmp_path / "out.trec"
    assert main(_args("cross_encoder", models, run, docstore, dl19_dir / "topics.tsv", out)) == 2
    err = capsys.readouterr().err
    assert message in err and (f"{run}:{line}:" if line else f"{run}:") in err
    assert not out.exists() and not out.with_name(out.name + ".ckpt").exists()


def test_corpus_jsonl_is_cached_as_a_docstore(
    models, references, run_file: Path, dl19_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRKIT_CACHE", str(tmp_path / "cache"))
    for name in ("a.trec", "b.trec"):
        out = tmp_path / name
        args = _args("cross_encoder", models, run_file, dl19_dir / "passages.jsonl", dl19_dir / "topics.tsv", out)
        assert main(args) == 0
        assert out.read_bytes() == references["cross_encoder"].read_bytes()
    assert len(list((tmp_path / "cache" / "docstores").glob("*.sqlite"))) == 1  # built once, reused


def test_runner_refuses_bad_settings() -> None:
    from irkit.data.types import Queries, Ranking
    from irkit.pipeline.stage import QueryRewriter, Retriever

    class Upper(QueryRewriter):
        def rewrite(self, query: str) -> str:
            return query.upper()

    class Nothing(Retriever):
        def retrieve(self, queries: Queries, k: int) -> Ranking:
            return Ranking({q: ([], np.zeros(0)) for q in queries}, queries)

    with pytest.raises(IrkitError, match=r"writes rankings, but .* produces queries"):
        Runner(Upper())
    with pytest.raises(IrkitError, match="unknown executor 'spark'"):
        Runner(Nothing(), executor="spark")
    with pytest.raises(IrkitError, match="shard_size must be >= 1"):
        Runner(Nothing(), shard_size=0)
    out = Runner(Upper() >> Nothing(), progress=False).run({"a": "x", "b": "y"})
    assert list(out) == ["a", "b"] and all(len(d) == 0 for d, _ in out.results.values())
