"""A dense build killed with SIGKILL resumes from its checkpoints and yields the same index as an uninterrupted one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from crash import kill_when_written

from irkit.index.dense import DenseIndex, build_dense_index
from irkit.index.manifest import work_dir

BUILD = (
    "import sys\n"
    "from irkit.index.dense import build_dense_index\n"
    "build_dense_index(sys.argv[1], sys.argv[2], chunk_size=int(sys.argv[3]), show_progress=True)\n"
)
DOCS, CHUNK = 60, 10


def _build(corpus: Path, out: Path, **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "0"}
    cmd = [sys.executable, "-c", BUILD, str(corpus), str(out), str(CHUNK)]
    return subprocess.Popen(cmd, env=env, text=True, **kwargs)


def test_sigkilled_build_resumes_and_matches_an_uninterrupted_one(scifact_slice: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = (scifact_slice / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:DOCS]
    corpus.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "indexes" / "killed"
    work = work_dir(out)

    # 1. start a build and kill it hard as soon as its first checkpoint shard exists
    kill_when_written(_build(corpus, out, stderr=subprocess.DEVNULL), work / "vectors-000000.npy", 600)
    shards = sorted(work.glob("vectors-*.npy"))
    assert not out.exists(), "a killed build must not leave a loadable index"
    assert 1 <= len(shards) < DOCS // CHUNK, "kill the build part-way"

    # 2. rerun: it starts from the documents already encoded, not from zero
    rerun = _build(corpus, out, stderr=subprocess.PIPE)
    _, progress = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, progress
    first = re.search(rf"(\d+)/{DOCS}", progress)
    assert first is not None and int(first.group(1)) == len(shards) * CHUNK, progress
    assert not work.exists() and not (out.parent / f".{out.name}.partial").exists()

    # 3. an uninterrupted build with the same settings gives the same index, byte for byte
    ref_out = tmp_path / "indexes" / "reference"
    build_dense_index(corpus, ref_out, chunk_size=CHUNK, show_progress=False)
    resumed, reference = DenseIndex.load(out), DenseIndex.load(ref_out)
    assert resumed.docids == reference.docids and len(resumed) == DOCS
    assert np.array_equal(resumed.vectors(), reference.vectors())

    def content(files: dict) -> dict:
        return {name: (f["sha256"], f["bytes"]) for name, f in files.items()}

    assert content(resumed.manifest["files"]) == content(reference.manifest["files"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["killed", "reference"]
