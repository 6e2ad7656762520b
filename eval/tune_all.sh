#!/usr/bin/env bash
# Tuning experiments on SciFact; finished runs are skipped, so a killed run resumes where it stopped.
#
#   bash eval/tune_all.sh grid     # issue #4's grid: 6 methods x 3 seeds, bi-encoder and cross-encoder, 1 epoch
#   bash eval/tune_all.sh curves   # issue #16: learning curves (dev nDCG@10 vs steps) with a small LR sweep
#   bash eval/tune_all.sh grid16   # issue #16: the grid with connected adapters, dev-picked LRs, equal compute
#
# Every adapter method sits at ~0.66 % trainable parameters with its default rank (connected
# 16 in-block + 16 aside, side 32, Houlsby 16, LoRA 16). BF16=--bf16 turns on bfloat16 autocast,
# which only pays on CPUs with AVX512-BF16 (on AVX2 it is ~7x slower than fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-grid}
BF16=${BF16:-}
METHODS="full houlsby lora bitfit side connected"

grid() {
  local out=${OUT:-eval/results/tune_grid}  # OUT=<dir>: a rerun to compare with tune_table.py --check
  mkdir -p "$out"
  run() {  # run KIND METHOD SEED TAG [extra args]
    local kind=$1 method=$2 seed=$3 tag=$4; shift 4
    local res="$out/${kind}_${tag}_s${seed}.json"
    [[ -f $res ]] && return 0
    echo "== $(date -u +%H:%M:%S) $kind $tag seed $seed"
    if [[ $kind == bi ]]; then
      python eval/tune_bi_encoder.py --method "$method" --seed "$seed" --epochs 1 $BF16 --results "$res.tmp" "$@"
    else
      python eval/tune_cross_encoder.py --method "$method" --seed "$seed" --epochs 1 --test-depth 100 $BF16 \
        --results "$res.tmp" "$@"
    fi
    mv "$res.tmp" "$res"
  }
  run bi zero-shot 13 zero-shot
  for seed in 13 14 15; do
    for method in $METHODS; do run bi "$method" "$seed" "$method"; done
    for method in $METHODS; do run ce "$method" "$seed" "$method"; done
  done
  # the side network trains ~3x cheaper per epoch (no backward through the backbone, cached
  # backbone outputs after epoch 1): the same wall time as one epoch of full FT buys 3 epochs.
  for seed in 13 14 15; do run ce side "$seed" side-3ep --epochs 3; done
  python eval/tune_table.py
}

# Learning curves, reduced to fit 2 shared CPU cores: 40 steps of 8 queries (320 of the 828
# training examples, the same ones for every method), documents cut at 64 tokens, dev = 40
# queries of the dev slice reranking their BM25 top 10, checked every 10 steps. Two learning
# rates per method; tune_convergence.py picks one per method on dev and plots the curves.
lrs() {
  case "$1" in
    full) echo "3e-5 1e-4" ;;
    lora) echo "5e-4 2e-3" ;;
    *) echo "1e-3 3e-3" ;;
  esac
}
curves() {
  local out=${OUT:-eval/results/tune_curves} seeds=${SEEDS:-13}
  mkdir -p "$out" runs/tune/art
  local common=(--epochs 1 --batch-size 8 --train-examples 320 --max-length 64 --query-max-length 32
    --dev-queries 40 --dev-depth 10 --eval-every 10 --patience 99 --no-test $BF16)
  run() {  # run METHOD LR SEED TAG [extra args]
    local method=$1 lr=$2 seed=$3 tag=$4; shift 4
    local res="$out/bi_${tag}_lr${lr}_s${seed}.json"
    [[ -f $res ]] && return 0
    echo "== $(date -u +%H:%M:%S) bi $tag lr $lr seed $seed"
    python eval/tune_bi_encoder.py --method "$method" --lr "$lr" --seed "$seed" "${common[@]}" \
      --out "runs/tune/art/bi_${tag}_lr${lr}_s${seed}" --results "$res" "$@"
  }
  for seed in $seeds; do
    for i in 1 2; do  # every method at its first learning rate before any at its second
      for method in connected full houlsby lora bitfit side; do
        run "$method" "$(lrs "$method" | cut -d' ' -f$i)" "$seed" "$method"
      done
      # equal wall-clock compute: the side network's cheap steps buy more passes over the same examples
      run side "$(lrs side | cut -d' ' -f$i)" "$seed" side-4ep --epochs 4
    done
  done
  python eval/tune_convergence.py --results "$out"
}

# Issue #16's grid, all on one machine in fp32: 6 methods, bi-encoder and cross-encoder, one epoch of
# the grid's data, a dev check (40 dev queries, BM25 top 10) every 10 steps, so every run is also a
# learning curve. Sized for 2 AVX2 cores: the bi-encoder reads 128 document tokens (the issue-#4 grid
# read 256 with bf16 on AVX-512) and 32 query tokens, in training and in the test search alike; the
# cross-encoder's test reranks the BM25 top 20 (the shipped pipeline's depth). Two processes, one per
# model kind, share the two cores: KINDS=bi OMP_NUM_THREADS=1 ... & KINDS=ce OMP_NUM_THREADS=1 ...
# Processes running the same command share its runs: each takes the next run no other one holds
# (a lock file per run, released when its process ends), so two KINDS=bi processes split that kind.
#   1. seed 13, every method at both of its learning rates (the sweep); every run also runs its test
#      search (a later session, on another machine, may not have the saved models of this one)
#   2. seeds 14 and 15 at the rate the dev slice picked (tune_convergence.py --pick reads stage 1)
#   3. equal compute: every method at least 1.25x cheaper than full FT per step trains for the steps
#      full FT's CPU seconds buy it (tag METHOD-eq), at its picked rate, 3 seeds
#   3b. stage 3 counts a step at its first epoch's cost; side caches the backbone's outputs after the
#      first epoch, so its METHOD-eq run spends a third of the budget: METHOD-budget trains until all
#      of it is spent, at the cost per step the METHOD-eq run measured last (tune_convergence --pick-budget)
#   4. ablation: connected without the aside pathway (plain in-block adapters, r = 32 for the same
#      0.66 % budget) at connected's picked rate, 3 seeds (tag connected-nopathway)
# Results: eval/results/tune_grid16/{bi,ce}_{tag}_lr{lr}_s{seed}.json; tune_convergence.py summarises.
grid16() {
  local out=${OUT:-eval/results/tune_grid16}
  mkdir -p "$out"
  local dev=(--dev-queries 40 --dev-depth 10 --eval-every 10 --patience 99 $BF16)
  run() {  # run KIND METHOD LR SEED TAG [extra args]
    local kind=$1 method=$2 lr=$3 seed=$4 tag=$5; shift 5
    local res="$out/${kind}_${tag}_lr${lr}_s${seed}.json" lock
    [[ -f $res ]] && return 0
    exec {lock}>"$res.lock"  # another process on the same grid holds it while it trains this run
    flock -n "$lock" && [[ ! -f $res ]] || { exec {lock}>&-; return 0; }
    echo "== $(date -u +%H:%M:%S) $kind $tag lr $lr seed $seed"
    if [[ $kind == bi ]]; then
      python eval/tune_bi_encoder.py --method "$method" --lr "$lr" --seed "$seed" --epochs 1 "${dev[@]}" \
        --max-length 128 --query-max-length 32 --results "$res.tmp" "$@"
    else
      python eval/tune_cross_encoder.py --method "$method" --lr "$lr" --seed "$seed" --epochs 1 "${dev[@]}" \
        --test-depth 20 --results "$res.tmp" "$@"
    fi
    mv "$res.tmp" "$res"
    rm -f "$res.lock"
    exec {lock}>&-
  }
  pick() {  # pick KIND TAG [--pick-budget] -> "LR STEPS" (tune_convergence.py --pick, or the option given)
    python eval/tune_convergence.py --results "$out" --kind "$1" --summary /dev/null --png /dev/null "${3:---pick}" "$2"
  }
  local kinds=${KINDS:-bi ce} kind method lr steps lock
  if [[ $kinds == *bi* && ! -f $out/bi_zero-shot_s13.json ]]; then  # the untuned model's test search, for reference
    python eval/tune_bi_encoder.py --method zero-shot --seed 13 --max-length 128 --query-max-length 32 \
      --results "$out/bi_zero-shot_s13.json.tmp" && mv "$out/bi_zero-shot_s13.json.tmp" "$out/bi_zero-shot_s13.json"
  fi
  for kind in $kinds; do
    for i in 1 2; do
      for method in $METHODS; do
        lr=$(lrs "$method" | cut -d' ' -f$i)
        if [[ $kind == bi ]]; then
          run bi "$method" "$lr" 13 "$method" --out "runs/tune/grid16/bi_${method}_lr${lr}_s13"
        else
          run ce "$method" "$lr" 13 "$method"
        fi
      done
    done
  done
  for kind in $kinds; do
    for method in $METHODS; do  # the picks read the whole sweep: wait for sweep runs another process still trains
      for lock in "$out/${kind}_${method}"_lr*_s13.json.lock; do [[ -e $lock ]] && flock "$lock" true; done
    done
    for seed in 14 15; do
      for method in $METHODS; do
        read -r lr _ < <(pick "$kind" "$method")
        run "$kind" "$method" "$lr" "$seed" "$method"
      done
    done
  done
  for kind in $kinds; do
    local per_epoch
    per_epoch=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['steps'])" \
      "$(ls "$out/${kind}"_full_lr*_s13.json | head -1)")
    for seed in 13 14 15; do
      for method in $METHODS; do
        [[ $method == full ]] && continue
        read -r lr steps < <(pick "$kind" "$method")
        ((4 * steps >= 5 * per_epoch)) || continue
        run "$kind" "$method" "$lr" "$seed" "$method-eq" --steps "$steps"
      done
    done
  done
  for kind in $kinds; do  # 3b. a METHOD-eq run whose later epochs were cheaper (side) trains again until it spends the budget
    for method in $METHODS; do
      compgen -G "$out/${kind}_${method}-eq_lr*_s13.json" >/dev/null || continue
      read -r lr steps < <(pick "$kind" "$method-eq" --pick-budget) || true  # nothing printed: budget spent
      [[ -n $steps ]] || continue
      for seed in 13 14 15; do
        run "$kind" "$method" "$lr" "$seed" "$method-budget" --steps "$steps" --eval-every 50
      done
    done
  done
  for kind in $kinds; do  # 4. the pathway's share: connected without it, at the same budget (r = 32)
    read -r lr _ < <(pick "$kind" connected)
    for seed in 13 14 15; do
      run "$kind" connected "$lr" "$seed" connected-nopathway --no-pathway --rank 32
    done
  done
  for kind in $kinds; do
    python eval/tune_convergence.py --results "$out" --kind "$kind" \
      --summary "eval/results/tune_grid16_$kind.json" --png "eval/results/tune_grid16_$kind.png"
  done
}

"$what"
