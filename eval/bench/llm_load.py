"""Load time of a cached LLM (default: the bundled SmolLM2) in fresh interpreters.

The GGUF file is converted once to a safetensors copy (``irkit.models.llm``); this measures
what every later process pays. Three numbers per fresh interpreter, medians over ``--runs``:

- ``load_s``: ``CausalLM(name)`` after torch, transformers and transformers' Llama/tokenizer
  modules are imported, i.e. reading the cached weights and tokenizer (the < 1 s budget);
- ``library_import_s``: importing those libraries, paid once per process by any transformers
  user whatever irkit does;
- ``cold_s``: the two together, as a fresh script sees them.

Exits non-zero when the median ``load_s`` exceeds ``--budget``.

    python eval/bench/llm_load.py --runs 5 --out llm_load.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from irkit.data.io import atomic_path

PROBE = """
import json, time
t0 = time.perf_counter()
import torch, transformers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, AutoModelForCausalLM, AutoTokenizer
t1 = time.perf_counter()
from irkit.models.llm import CausalLM
lm = CausalLM({name!r})
t2 = time.perf_counter()
print(json.dumps({{"library_import_s": t1 - t0, "load_s": t2 - t1, "cold_s": t2 - t0}}))
"""


def probe(name: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(name=name)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="registered name or local directory (default smollm2)")
    ap.add_argument("--runs", type=int, default=5, help="fresh interpreters (default 5)")
    ap.add_argument("--budget", type=float, default=1.0, help="largest allowed median load_s, seconds (default 1.0)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()

    probe(args.model)  # converts on first use and warms the file-system cache
    runs = [probe(args.model) for _ in range(args.runs)]
    result = {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"model": args.model, "runs": runs}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["load_s"] <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
