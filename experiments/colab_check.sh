#!/usr/bin/env bash
# The notebook as a new user meets it in Colab's CPU runtime, emulated here:
#  1. Colab's environment: Python 3.13 from pyenv, and the packages the notebook's install touches (and numba,
#     TensorFlow, Jupyter) at the versions of Colab's published pip-freeze (experiments/colab_constraints.txt).
#  2. The notebook's first cell in Colab mode, in a kernel that has already imported numpy (as Colab's has):
#     it installs this clone and a new enough JAX, and must neither upgrade the loaded numpy nor ask for a restart.
#     Then, in a kernel that had also imported Colab's old jax, it must stop with one line asking for a restart.
#  3. The notebook in smoke mode in a fresh kernel (tests/test_notebook.py), then `import numba` and
#     `import tensorflow`: Colab's own packages still work.
# CI runs it (.ci/run). Usage: bash experiments/colab_check.sh [VENV]   (default /tmp/rcot_colab; rebuilt each run)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-/tmp/rcot_colab}"
start=$SECONDS
rm -rf "$venv"
PYENV_VERSION=3.13.0 pyenv exec python -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q -U pip
"$py" -m pip install -q -c experiments/colab_constraints.txt numpy jax jaxlib flax optax orbax-checkpoint \
  tensorflow tensorflow-datasets grain numba scipy scikit-image matplotlib matplotlib-inline pillow tqdm tifffile \
  safetensors ipykernel nbclient nbformat jupytext pytest 2>&1 | { grep -v "is ignored: it is neither" || true; }
echo "colab_check: Colab's packages installed ($((SECONDS - start)) s): $("$py" --version)," \
  "$("$py" -m pip list 2>/dev/null | grep -E '^(jax|numpy|numba|tensorflow) ' | tr -s ' ' | paste -sd,)"

export PYDEVD_DISABLE_FILE_VALIDATION=1    # ipykernel's debugger notice on Python 3.13
RCOT_NOTEBOOK_INSTALL="$PWD" "$py" - <<'EOF'
"""The notebook's first code cell, as Colab runs it: google.colab and numpy imported before it. Then the same
cell in a session that had also imported Colab's old jax: it must stop with one line asking for a restart."""
import json, os, pathlib, subprocess, sys, tempfile
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

FIRST = next(c for c in nbformat.read("notebooks/ablations.ipynb", as_version=4).cells if c.cell_type == "code")
CHECK = ("del sys.modules['google.colab'], sys.modules['google']\n"   # the emulation ends: JAX imports Colab's parts
         "import numpy, importlib.metadata\n"
         "assert numpy.__version__ == importlib.metadata.version('numpy'), 'numpy changed under the kernel'\n"
         "import jax, rcot_jax\n"
         "print('imported in the same session: jax', jax.__version__, 'numpy', numpy.__version__)")


def colab_session(preload):
    cells = [nbformat.v4.new_code_cell(f"import sys, types\nimport {preload}\n"
                                       "sys.modules['google'] = types.ModuleType('google')\n"
                                       "sys.modules['google.colab'] = types.ModuleType('google.colab')"),
             FIRST, nbformat.v4.new_code_cell(CHECK)]
    nb = nbformat.v4.new_notebook(cells=cells)
    with tempfile.TemporaryDirectory() as tmp:
        spec = pathlib.Path(tmp, "kernels", "colab")
        spec.mkdir(parents=True)
        spec.joinpath("kernel.json").write_text(json.dumps(
            {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python"}))
        os.environ["JUPYTER_PATH"] = tmp
        try:
            NotebookClient(nb, kernel_name="colab", timeout=1200).execute()
            error = None
        except CellExecutionError as e:
            error = e
    outputs = [out for cell in nb.cells[1:] for out in cell.outputs]
    for out in outputs:
        print(f"colab_check ({preload}):", out.get("text", out.get("ename", "")).strip())
    return error, outputs


error, _ = colab_session("numpy")
assert error is None, error
# Colab's jax back, imported before the cell: upgrading it needs a restart, said in one line, and "Run all" stops.
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", "experiments/colab_constraints.txt", "jax",
                "jaxlib"], check=True, stderr=subprocess.DEVNULL)
error, outputs = colab_session("numpy, jax")
assert error is not None and error.ename == "RestartNeeded", error
said = [line for out in outputs if out.get("name") == "stderr" for line in out["text"].splitlines()
        if "Restart session" in line]
tracebacks = [out["traceback"] for out in outputs if out.get("traceback")]
assert len(said) == 1 and "jax 0.7.2 -> " in said[0] and not tracebacks, (said, tracebacks)
EOF

"$py" -m pytest -q -p no:cacheprovider tests/test_notebook.py
"$py" -c "import numba, numpy, tensorflow as tf; print('colab_check: numba', numba.__version__, 'numpy', numpy.__version__, 'tensorflow', tf.__version__)"
echo "colab_check: passed in $((SECONDS - start)) s"
