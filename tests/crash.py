"""Crash a build for the resume tests: SIGKILL a subprocess once it has written a given checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_when_written(proc: subprocess.Popen, checkpoint: Path, timeout_s: float) -> None:
    """Wait for ``checkpoint`` to exist, then kill ``proc`` hard (no cleanup runs) and reap it."""
    deadline = time.monotonic() + timeout_s
    while not checkpoint.exists():
        assert proc.poll() is None, f"the build ended before writing {checkpoint.name}"
        assert time.monotonic() < deadline, f"no {checkpoint.name} within {timeout_s:g} s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
