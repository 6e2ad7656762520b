"""Fuzz irkit's readers and its YAML pipeline loader for a fixed time per target.

    nice -n 10 python eval/fuzz.py --seconds 120            # every target, 2 minutes each
    python eval/fuzz.py --seconds 30 --target yaml           # one target

The targets are ``tests/fuzz_targets.py`` (CI runs them on a bounded number of examples in
``tests/test_fuzz.py``). Each runs in rounds of freshly seeded hypothesis examples until its
time is up. Any exception other than ``IrkitError`` stops the run with hypothesis's shrunk
example and exit code 1. Prints a markdown table: examples, accepted, refused (IrkitError).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuzz_targets import TARGETS, check

ROUND = 500  # examples per hypothesis run; each run draws new random seeds


def fuzz(name: str, seconds: float, tmp: Path) -> tuple[Counter[str], float]:
    counts: Counter[str] = Counter()

    @settings(max_examples=ROUND, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(TARGETS[name][0])
    def one(data: bytes) -> None:
        check(name, data, tmp, counts)

    start = time.monotonic()
    while time.monotonic() - start < seconds:
        one()
    return counts, time.monotonic() - start


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="time per target (120)")
    parser.add_argument("--target", choices=sorted(TARGETS), action="append", help="target (repeatable; all)")
    args = parser.parse_args()
    print(f"{dt.datetime.now().isoformat(timespec='seconds')}, {cpu()}, Python {platform.python_version()}")
    print("| target | seconds | examples | accepted | refused (IrkitError) | other exceptions |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="irkit-fuzz-") as tmp:
        for name in args.target or sorted(TARGETS):
            counts, took = fuzz(name, args.seconds, Path(tmp))
            ok, refused = counts["accepted"], counts["irkit_error"]
            print(f"| {name} | {took:.0f} | {ok + refused:,} | {ok:,} | {refused:,} | 0 |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
