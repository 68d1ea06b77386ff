#!/usr/bin/env bash
# Benchmark configs (a), (b), (c) of configs/benchmark.py in float32 and bf16; one JSON line each to $OUT.
#   [CONFIGS="b c a"] [STEPS=3] bash experiments/benchmark_all.sh [OUT] [extra flags for rcot_jax.benchmark]
# With OFFICIAL_STEP=/path/to/official_step.py (a script, kept outside this repository, that times the
# official PyTorch training-loop body), the official loop is timed too, in the same run, before ours.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/benchmark_results.jsonl}
shift || true
for v in ${CONFIGS:-a b c}; do
  if [[ -n "${OFFICIAL_STEP:-}" ]]; then
    python "$OFFICIAL_STEP" --config "$v" --steps "${OFFICIAL_STEPS:-3}" --threads "$(nproc)" 2>/dev/null | tail -1 >> "$out"
  fi
  for precision in float32 bf16; do
    python -m rcot_jax.benchmark --config="configs/benchmark.py:$v" --config.precision="$precision" \
      --steps="${STEPS:-3}" "$@" 2>/dev/null | tail -1 | sed "s/^{/{\"config\": \"$v\", /" >> "$out"
  done
done
