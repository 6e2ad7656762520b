#!/usr/bin/env bash
# The full comparison of issue #4: 6 methods x 3 seeds, bi-encoder and cross-encoder, SciFact.
# CPU cost on 2 cores is many hours (full FT of the cross-encoder alone ~20 min per epoch);
# run on a quiet machine, one job at a time. Results land in eval/results/tune_{bi,ce}_*.json;
# `python eval/tune_table.py` renders the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
for seed in 13 14 15; do
  nice -n 10 python eval/tune_bi_encoder.py --method zero-shot --seed "$seed" --results "eval/results/tune_bi_zero-shot_s$seed.json"
  for method in full houlsby lora bitfit connected; do
    nice -n 10 python eval/tune_bi_encoder.py --method "$method" --seed "$seed" \
      --results "eval/results/tune_bi_${method}_s$seed.json"
    nice -n 10 python eval/tune_cross_encoder.py --method "$method" --seed "$seed" --test-depth 100 \
      --results "eval/results/tune_ce_${method}_s$seed.json"
  done
done
python eval/tune_table.py
