"""rcot_jax.state: one seed gives one run's step-0 state, whichever path starts it."""
import ast
import pathlib
import re

import jax
import numpy as np

from rcot_jax import ablate, parallel, train
from rcot_jax.configs import default
from rcot_jax.state import create_train_state, seed_keys
from rcot_jax.weights import checkpoints

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEED = 7


def _readme_state(config):
    """The README's "Using the core" snippet, run up to the line that makes the state."""
    block = re.search(r"## Using the core\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    lines = block.split("\n")
    upto = next(i for i, line in enumerate(lines) if line.startswith("state = "))
    scope = {}
    exec("\n".join(lines[:upto + 1]).replace('default.get_config("tiny")', "CONFIG"), {"CONFIG": config}, scope)
    return scope["state"], scope["step_key"]


def _notebook_state(config):
    """The notebook's `fresh_run` helper, taken from its source and run."""
    tree = ast.parse((ROOT / "notebooks" / "ablations.py").read_text())
    helper = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "fresh_run")
    scope = {}
    exec("from rcot_jax.state import init_state, seed_keys\n" + ast.unparse(helper), scope)
    return scope["fresh_run"](config)


def test_one_seed_gives_the_same_initial_networks_on_every_path():
    config = default.get_config("tiny")
    config.seed = SEED
    config.model.backbone = "mprnet"      # each path compiles its own initialiser: the faster one to compile
    mesh = parallel.make_mesh()
    main = train.initial_state(config, parallel.replicated(mesh))
    readme, readme_step_key = _readme_state(config)
    notebook, notebook_step_key = _notebook_state(config)
    rcot = ablate.variant_config(config, next(v for v in ablate.GRIDS["paper"] if v.name == "rcot"))
    other_seed = ablate.variant_config(rcot, ablate.Variant("rcot", {"seed": SEED + 1}))
    # A group of two seeds: the runner's vmapped initialiser (one run alone takes the plain one, as `main`).
    ablation, ablation_step_keys, _, take = ablate.start_group([rcot, other_seed], {})
    init_key, step_key = seed_keys(SEED)
    # `convert` of a checkpoint without a critic: the critic a run of this seed starts with
    converted = checkpoints.state_from_params(config, main.t_params["params"])
    for other in (readme, notebook, take(ablation, 0), converted):
        for a, b in zip(jax.tree.leaves((main.t_params, main.f_params)), jax.tree.leaves((other.t_params,
                                                                                          other.f_params))):
            np.testing.assert_array_equal(a, b)
    for key in (readme_step_key, notebook_step_key, take(ablation_step_keys, 0)):
        np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(step_key))
    assert not np.array_equal(jax.random.key_data(init_key), jax.random.key_data(step_key))


def test_given_networks_are_kept_and_only_a_missing_one_is_initialised():
    config = default.get_config("tiny")
    config.model.backbone = "mprnet"      # the faster initialiser to compile
    init_key, _ = seed_keys(0)
    fresh = jax.jit(lambda k: create_train_state(config, k))(init_key)
    t_only = jax.jit(lambda k, t: create_train_state(config, k, t_params=t))(
        init_key, jax.tree.map(lambda a: np.asarray(a) + 1, fresh.t_params))
    for a, b in zip(jax.tree.leaves(t_only.t_params), jax.tree.leaves(fresh.t_params)):
        np.testing.assert_array_equal(a, b + 1)
    for a, b in zip(jax.tree.leaves(t_only.f_params), jax.tree.leaves(fresh.f_params)):
        np.testing.assert_array_equal(a, b)     # the critic a run of this seed starts with
    assert int(t_only.step) == 0
