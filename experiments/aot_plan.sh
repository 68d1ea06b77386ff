#!/usr/bin/env bash
# docs/performance.md's TPU planning table: the paper's settings (configs/benchmark.py:a, which every task's default
# compiles to) compiled ahead of time for one slice of each TPU generation, with each remat policy, at the paper's
# batch on every chip and up to the largest per-chip batch that fits. One record per (slice, remat) is appended
# to experiments/aot_results.jsonl (cells already there are skipped), and every compilation's record to
# experiments/aot_compiles.jsonl (reused, not compiled again: a search stopped midway resumes where it was).
#   bash experiments/aot_plan.sh [SLICE ...]      (default: v5e:2x2 v6e:2x2 v4:2x2x1 v5p:2x2x1)
set -euo pipefail
cd "$(dirname "$0")/.."
out=experiments/aot_results.jsonl
touch "$out"
for topology in "${@:-v5e:2x2 v6e:2x2 v4:2x2x1 v5p:2x2x1}"; do
  for topo in $topology; do
    for remat in none full dots; do
      if grep -q "\"topology\": \"$topo\".*\"remat\": \"$remat\".*max_per_chip_batch" "$out"; then continue; fi
      python -m rcot_jax.benchmark --mode=aot --config=configs/benchmark.py:a --config.model.remat="$remat" \
        --topology="$topo" --per_chip_batch=3 --find_max_batch --records=experiments/aot_compiles.jsonl \
        2> "/tmp/aot_${topo}_${remat}.log" | tail -1 >> "$out"
    done
  done
done
