"""notebooks/ablations.ipynb: committed without outputs, in sync with its jupytext source notebooks/ablations.py,
and it runs headless from top to bottom (smoke mode: `RCOT_NOTEBOOK_SMOKE=1`) in a kernel of this interpreter."""
import json
import pathlib
import sys
import time

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from fakes import xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "ablations.ipynb"
SOURCE = ROOT / "notebooks" / "ablations.py"
KERNEL = "rcot-notebook-test"


def _cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells]


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert nb.metadata.jupytext.formats == "ipynb,py:percent"
    assert nb.metadata.kernelspec.name == "python3"     # what Colab starts


def test_in_sync_with_jupytext_source():
    assert _cells(nbformat.read(NOTEBOOK, as_version=4)) == _cells(jupytext.read(SOURCE)), (
        "notebooks/ablations.ipynb differs from notebooks/ablations.py: "
        "run `jupytext --to ipynb notebooks/ablations.py`")


def _kernel_for_this_interpreter(directory):
    """A kernel spec that starts ipykernel with sys.executable, found through JUPYTER_PATH."""
    spec = directory / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rcot_jax test", "language": "python"}))


@pytest.mark.slow
def test_runs_headless(tmp_path, monkeypatch):
    _kernel_for_this_interpreter(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("RCOT_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))          # the notebook's run directories
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # One device, as in Colab, and the suite's fastest-compiling XLA:CPU flags (conftest.py; this checks that the
    # notebook runs, not its speed): its few smoke steps take no time, compiling its train steps takes most of the test.
    monkeypatch.setenv("XLA_FLAGS", xla_flags())
    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.time()
    NotebookClient(nb, kernel_name=KERNEL, timeout=300,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()   # raises on a cell's error
    print(f"notebook ran in {time.time() - start:.0f} s")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert len(images) >= 8
    assert any("PSNR" in t for t in tables)       # the ablation's results table
    assert list(tmp_path.glob("rcot_notebook_*/ablation/results.json"))     # run directories under TMPDIR
