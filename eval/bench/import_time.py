"""``import irkit`` wall time in fresh interpreters, and which heavy libraries it pulls in.

Heavy libraries (torch, faiss, pyserini, ray) must load only when a stage needs them, so a
CLI ``--help`` or a script that only reads runs stays fast. Exits non-zero when the median
exceeds ``--budget`` seconds or a heavy library is imported.

    python eval/bench/import_time.py --runs 9 --out import_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from irkit.data.io import atomic_path

HEAVY = ("torch", "faiss", "pyserini", "ray", "transformers", "jnius")
MUST_NOT = ("torch", "faiss", "pyserini", "ray")


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=9, help="fresh interpreters per measurement (default 9)")
    ap.add_argument("--budget", type=float, default=0.5, help="largest allowed median, seconds (default 0.5)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()

    wall("import irkit")  # warm the file-system cache once
    bare = [wall("pass") for _ in range(args.runs)]
    with_irkit = [wall("import irkit") for _ in range(args.runs)]
    probe = f"import irkit, sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True).stdout)

    result = {
        "python_startup_s": statistics.median(bare),
        "import_irkit_s": statistics.median(with_irkit),
        "import_irkit_max_s": max(with_irkit),
        "runs": args.runs,
        "heavy_modules_loaded": loaded,
        "budget_s": args.budget,
        "load_average": os.getloadavg(),
    }
    print("| measurement | median s | max s |\n|---|---:|---:|")
    print(f"| `python -c pass` | {statistics.median(bare):.3f} | {max(bare):.3f} |")
    print(f"| `python -c 'import irkit'` | {result['import_irkit_s']:.3f} | {result['import_irkit_max_s']:.3f} |")
    print(f"\nheavy modules in sys.modules after `import irkit`: {loaded or 'none'} (checked: {', '.join(HEAVY)})")
    print(f"runs {args.runs}, load average {result['load_average'][0]:.2f}")
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    bad = [m for m in loaded if m in MUST_NOT]
    ok = result["import_irkit_s"] < args.budget and not bad
    if not ok:
        print(f"FAIL: median {result['import_irkit_s']:.3f} s (budget {args.budget} s), heavy imports {bad}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
