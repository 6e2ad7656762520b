"""What the scaling benchmarks share: the machine header every figure carries, and peak memory."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from encode import cpu_info, write_results
from models import cpu_flags


def machine(**extra: Any) -> dict[str, Any]:
    """Date, CPU, its SIMD flags and the load average now (plus ``extra``), printed as one header line."""
    setup = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "flags": cpu_flags(),
        "load_average_start": os.getloadavg(),
        **extra,
    }
    print(
        f"{setup['date']}  {setup['cpu']['model']}  flags {'/'.join(setup['flags'])}  "
        f"load {tuple(round(x, 2) for x in setup['load_average_start'])}"
    )
    return setup


def peak_rss_gib() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would carry a parent's peak over exec)."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return kb / 2**20


def run_child(script: str, *args: str) -> Any:
    """Run ``script --child ARGS`` in a fresh interpreter; its last stdout line is JSON."""
    cmd = [sys.executable, script, "--child", *args]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def finish(setup: dict[str, Any], rows: list[dict[str, Any]], out: Path | None) -> None:
    """Record the load average at the end, print it, and write the set-up and rows to ``out`` (if given)."""
    setup["load_average_end"] = os.getloadavg()
    print(f"load average at the end: {tuple(round(x, 2) for x in setup['load_average_end'])}")
    if out:
        write_results(out, setup, rows)
