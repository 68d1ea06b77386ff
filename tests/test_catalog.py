"""rcot_jax.data.catalog: its rows and what they name; and the package's import graph (no cycle, a core that
imports no I/O)."""
import ast
import pathlib
import sys

import pytest

from rcot_jax import ids
from rcot_jax.configs import deblur, derain
from rcot_jax.data import catalog, degradations, pipeline, sources

PACKAGE = pathlib.Path(catalog.__file__).parents[1]


def test_every_degradation_name_has_one_id_and_one_function():
    assert list(degradations.DEGRADATIONS) == list(ids.DEGRADATION_IDS)
    assert len(set(ids.DEGRADATION_IDS.values())) == len(ids.DEGRADATION_IDS)
    assert ids.degradation_id("user_pairs") == ids.DegradationId.CUSTOM
    for layout in catalog.LAYOUTS.values():
        assert layout.degradation is None or layout.degradation in ids.DEGRADATION_IDS


def test_each_kind_of_source_names_the_keys_it_needs():
    c = derain.get_config("tiny")
    for kind, keys in [("clean_folder", "config.data.train_dir"),
                       ("paired_folders", "config.data.degraded_dir, config.data.target_dir"),
                       ("unpaired_folders", "config.data.degraded_dir, config.data.target_dir"),
                       ("tfds", "config.data.name")]:
        c.data.source = kind
        with pytest.raises(ValueError, match=f"config.data.source='{kind}' needs {keys}$"):
            catalog.source(c.data, "train")
    c.data.source = "paired_folders"
    with pytest.raises(ValueError, match="needs config.data.eval_degraded_dir, config.data.eval_target_dir"):
        catalog.source(c.data, "eval")
    c.data.source = "folders"
    with pytest.raises(ValueError, match=r"config.data.source='folders', expected one of \('embedded', "):
        catalog.source(c.data, "train")


def test_embedded_photographs_train_and_are_held_out():
    c = deblur.get_config("tiny")
    assert catalog.source(c.data, "train").names == list(sources.EMBEDDED["train"])
    assert catalog.source(c.data, "eval").names == list(sources.EMBEDDED["heldout"])
    with pytest.raises(ValueError, match="unknown dataset 'gopr'; expected one of gopro, "):
        catalog.prepared_source("gopr", "train")
    assert [s.names for s, _ in pipeline.eval_components(c.data)] == [list(sources.EMBEDDED["heldout"])]


def _modules():
    """{module name: path} of every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(module, modules):
    """What `module` imports, at any depth of its code: the modules of the package (`from package import
    module` counts as the module), and the top-level names of everything else."""
    found = set()
    for node in ast.walk(ast.parse(modules[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(module.split(".")[:-node.level] + [node.module])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {i if i in modules else i.split(".")[0] for i in found} - {module}


CORE = ("rcot_jax.models", "rcot_jax.losses", "rcot_jax.optim", "rcot_jax.state", "rcot_jax.steps",
        "rcot_jax.parallel", "rcot_jax.ids")
_FILES_AND_PROCESSES = {"os", "io", "pathlib", "json", "shutil", "tempfile", "subprocess", "socket", "pickle",
                        "glob", "signal", "logging", "time"}
CORE_MAY_IMPORT = {"jax", "flax", "optax", "numpy", "ml_collections"} | (sys.stdlib_module_names - _FILES_AND_PROCESSES)


def test_no_import_cycle_and_the_core_imports_no_io():
    modules = _modules()
    graph, state = {m: _imports(m, modules) for m in modules}, {}

    def visit(m, path):
        if state.get(m) == "open":
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) is None:
            state[m] = "open"
            for n in sorted(graph[m] & modules.keys()):
                visit(n, path + [m])
            state[m] = "done"

    for m in sorted(graph):
        visit(m, [])
    core = {m for m in modules if m.startswith(CORE)}
    for m in core:
        assert graph[m] <= core | CORE_MAY_IMPORT, (m, graph[m] - core - CORE_MAY_IMPORT)
