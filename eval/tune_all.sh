#!/usr/bin/env bash
# Issue #4's comparison grid: 6 methods x 3 seeds, bi-encoder and cross-encoder, SciFact.
# Equal budget for every method: one epoch over SciFact train (dev slice held out), bf16 autocast,
# ranks chosen for ~0.66 % trainable parameters (connected r=32, Houlsby r=16, LoRA r=16).
# The cross-encoder reranks the BM25 top-100 of SciFact test. Finished runs are skipped, so a
# killed grid resumes where it stopped. Results: eval/results/tune_grid/*.json;
# `python eval/tune_table.py` renders the tables. ~2 h on 2 quiet cores (AVX512-BF16).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-eval/results/tune_grid}  # OUT=<dir>: a rerun to compare with tune_table.py --check
mkdir -p "$OUT"
rank() { case "$1" in houlsby|lora) echo 16 ;; *) echo 32 ;; esac; }
run() {  # run KIND METHOD SEED [extra args]
  local kind=$1 method=$2 seed=$3 tag=$4; shift 4
  local res="$OUT/${kind}_${tag}_s${seed}.json"
  [[ -f $res ]] && return 0
  echo "== $(date -u +%H:%M:%S) $kind $tag seed $seed"
  if [[ $kind == bi ]]; then
    python eval/tune_bi_encoder.py --method "$method" --rank "$(rank "$method")" --seed "$seed" --epochs 1 \
      --bf16 --results "$res.tmp" "$@"
  else
    python eval/tune_cross_encoder.py --method "$method" --rank "$(rank "$method")" --seed "$seed" --epochs 1 \
      --test-depth 100 --bf16 --results "$res.tmp" "$@"
  fi
  mv "$res.tmp" "$res"
}
run bi zero-shot 13 zero-shot
for seed in 13 14 15; do
  for method in full houlsby lora bitfit connected; do run bi "$method" "$seed" "$method"; done
  for method in full houlsby lora bitfit connected; do run ce "$method" "$seed" "$method"; done
done
# connected adapters train ~3x cheaper per epoch (no backward through the backbone, cached
# backbone outputs after epoch 1): the same wall time as one epoch of full FT buys 3 epochs.
for seed in 13 14 15; do run ce connected "$seed" connected-3ep --epochs 3; done
python eval/tune_table.py
