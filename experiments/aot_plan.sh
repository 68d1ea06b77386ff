#!/usr/bin/env bash
# The README's TPU planning table: the paper's settings (configs/benchmark.py:a, every task's default but for its
# schedule's length) compiled ahead of time for one slice of each TPU generation, with each remat policy, at the
# paper's batch on every chip and up to the largest per-chip batch that fits. First pass: every slice at the paper's
# batch with remat `full` (the default), so each row has its fit and its FLOPs early; second pass: the searches, one
# record per (slice, remat) appended to experiments/aot_results.jsonl (cells already there are skipped). Every
# compilation's record goes to experiments/aot_compiles.jsonl and is reused, not compiled again: a run stopped
# midway resumes where it was. A compilation of the paper's step takes 17 GB of host memory or more (a search
# compiles each batch in a process of its own): two side by side on a 24 GB machine need 32 GB of swap (42.6 GB
# together at the peak; say, `aot_plan.sh v5e:2x2 &` and `aot_plan.sh v5p:2x2x1`; docs/performance.md,
# experiments/benchmarks.md).
#   bash experiments/aot_plan.sh [SLICE ...]      (default: v5e:2x2 v6e:2x2 v4:2x2x1 v5p:2x2x1)
set -euo pipefail
cd "$(dirname "$0")/.."
out=experiments/aot_results.jsonl
compiles=experiments/aot_compiles.jsonl
touch "$out"
slices="${*:-v5e:2x2 v6e:2x2 v4:2x2x1 v5p:2x2x1}"
aot() {  # TOPOLOGY REMAT [FLAGS...]
  local topo=$1 remat=$2; shift 2
  python -m rcot_jax.benchmark --mode=aot --config=configs/benchmark.py:a --config.model.remat="$remat" \
    --topology="$topo" --per_chip_batch=3 --records="$compiles" "$@" 2> "/tmp/aot_${topo}_${remat}.log" | tail -1
}
for topo in $slices; do
  aot "$topo" full > /dev/null
done
for topo in $slices; do
  for remat in none full dots; do
    if grep -q "\"topology\": \"$topo\".*\"remat\": \"$remat\".*max_per_chip_batch" "$out"; then continue; fi
    aot "$topo" "$remat" --find_max_batch >> "$out"
  done
done
