#!/usr/bin/env bash
# The core's tests (networks, convolutions, losses, state, steps, parallel, metrics, inference) and the exports'
# (StableHLO and ONNX: the jaxpr primitives ONNX rules are written for change between JAX versions) on Python 3.13
# with the newest JAX the registry serves, as Colab and new installs get it. A fresh venv: `pip install -e
# ".[onnx]"`, pytest and pytest-xdist (no PyTorch: the one metric check that uses it skips). CI runs it (.ci/run).
# Usage: bash experiments/core_py313_check.sh [VENV]   (default /tmp/rcot_py313; rebuilt each run)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-/tmp/rcot_py313}"
start=$SECONDS
rm -rf "$venv"
PYENV_VERSION=3.13.0 pyenv exec python -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q -U pip
"$py" -m pip install -q -e ".[onnx]" "pytest>=9.2" "pytest-xdist>=3.8" 2>&1 | { grep -v "is ignored: it is neither" || true; }
echo "core_py313_check: installed ($((SECONDS - start)) s): $("$py" --version)," \
  "$("$py" -m pip list 2>/dev/null | grep -E '^(jax|jaxlib|flax|numpy|onnxruntime) ' | tr -s ' ' | paste -sd,)"
"$py" -m pytest -q -n 2 -m "not slow" -p no:cacheprovider tests/test_models.py tests/test_conv.py \
  tests/test_losses.py tests/test_state.py tests/test_steps.py tests/test_parallel.py tests/test_metrics.py \
  tests/test_inference.py tests/test_export.py
echo "core_py313_check: done in $((SECONDS - start)) s"
