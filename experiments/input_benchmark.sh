#!/usr/bin/env bash
# Input-pipeline throughput from a prepared dataset of 200 synthetic 1280x720 PNG pairs (GoPro-sized, GoPro layout),
# with 0 and 2 grain workers, at deblur.py:quick's batch (8 x 32^2) and the paper's (3 x 128^2).
#   bash experiments/input_benchmark.sh [WORKDIR] >> experiments/input_benchmark_results.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/rcot_input_benchmark}
if [[ ! -d "$work/data/rcot_images/gopro" ]]; then
  python - "$work/manual" <<'PY'
import os, sys
import numpy as np
from PIL import Image
from scipy import ndimage
root = sys.argv[1]
rng = np.random.default_rng(0)
for i in range(200):
    seq = f"GOPR{i // 50:04d}"
    # Smooth content with edges, so PNG compresses about as it does on photographs.
    base = ndimage.zoom(rng.random((18, 32, 3)), (40, 40, 1), order=1)
    sharp = np.clip(base + 0.15 * (ndimage.zoom(rng.random((180, 320, 3)), (4, 4, 1), order=0) > 0.5), 0, 1)
    blur = ndimage.uniform_filter(sharp, (1, 9, 1))
    for sub, img in (("sharp", sharp), ("blur", blur)):
        path = os.path.join(root, "train", seq, sub, f"{i:06d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
os.makedirs(os.path.join(root, "test"), exist_ok=True)
for sub in ("sharp", "blur"):   # a one-pair test split, to satisfy the layout
    os.makedirs(os.path.join(root, "test", "GOPR9999", sub), exist_ok=True)
    os.link(os.path.join(root, "train", "GOPR0000", sub, "000000.png"),
            os.path.join(root, "test", "GOPR9999", sub, "000000.png"))
PY
  python -m rcot_jax.prepare --dataset=gopro --manual_dir="$work/manual" --data_dir="$work/data" >&2
fi
for variant in "quick" ""; do
  for workers in 0 2; do
    python -m rcot_jax.benchmark --mode=input --config="configs/deblur.py${variant:+:$variant}" --steps=100 \
      --config.data.source=tfds --config.data.name=gopro --config.data.data_dir="$work/data" \
      --config.data.num_workers=$workers 2>/dev/null | tail -1 | sed "s/^{/{\"config\": \"deblur.py:$variant\", /"
  done
done
