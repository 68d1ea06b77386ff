#!/usr/bin/env bash
# Two processes x 4 CPU devices must train and evaluate exactly as one process x 8 devices.
#   bash experiments/multiprocess.sh [config]      (default configs/allinone.py:tiny; about 4 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/allinone.py:tiny}
out=$(mktemp -d)
port=$(python -c "import portpicker; print(portpicker.pick_unused_port())")
for i in 0 1; do
  XLA_FLAGS=--xla_force_host_platform_device_count=4 timeout 900 python -m rcot_jax.main --config="$config" \
    --workdir="$out/two" --coordinator_address=127.0.0.1:$port --num_processes=2 --process_id=$i \
    > "$out/process_$i.log" 2>&1 &
done
wait
XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m rcot_jax.main --config="$config" --workdir="$out/one" \
  > "$out/one.log" 2>&1
echo "2 processes x 4 devices: $(tail -1 "$out/two/eval.jsonl")"
echo "1 process  x 8 devices: $(tail -1 "$out/one/eval.jsonl")"
if cmp -s <(tail -1 "$out/two/eval.jsonl") <(tail -1 "$out/one/eval.jsonl"); then echo "identical"; else echo "DIFFERENT"; exit 1; fi
