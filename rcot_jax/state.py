"""The training state: a plain pytree of both networks' parameters and optimiser states, and how a seed makes one."""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from rcot_jax import models, optim

# XLA:CPU spends most of an initialiser's compile optimising its ~1,300 random-bit kernels (LLVM at level 3), which
# run once. At level 1 they give the same parameters (bit for bit with jaxlib 0.10, at most 1 ulp apart with 0.12.1:
# tests/test_steps.py) and compile faster (measured: the tiny MPRNet map's parameters 5.6 s instead of 14.2 s, the
# tiny Restormer's whole state 9.2 s instead of 19.2 s, the paper's Restormer's 46 s instead of 57 s).
_INIT_OPTIONS = {"cpu": {"xla_backend_optimization_level": 1}}


@flax.struct.dataclass
class RCOTState:
    step: jnp.ndarray     # int32 scalar: train steps taken
    t_params: Any         # transport map T
    f_params: Any         # potential (critic) F
    t_opt_state: Any
    f_opt_state: Any


# The config sections that a step and its state's initialiser read (with `data.patch_size`): two configs that
# agree on them compile to the same programs.
PROGRAM_SECTIONS = ("model", "loss", "critic", "optim", "precision")


def program_config(config):
    """The part of `config` that the step and the initialiser read, frozen: hashable and compared by value, the key
    of a compiled program shared by the launches of one process (a notebook cell run again, a resumed run, the
    ablation runner). A step or initialiser that read any other key would fail on this config, not share wrongly."""
    return ml_collections.FrozenConfigDict({**{k: config[k] for k in PROGRAM_SECTIONS},
                                            "data": {"patch_size": config.data.patch_size}})


def seed_keys(seed):
    """(init_key, step_key) of a run's seed: `init_key` makes its step-0 state (`create_train_state`), `step_key`
    drives its train steps. Every path that starts a run from a seed (main, ablate, benchmark, convert and
    `init_from` for a missing critic, the notebook) takes its keys from here, so one seed is one run."""
    init_key, step_key = jax.random.split(jax.random.key(seed))
    return init_key, step_key


def create_train_state(config, init_key, t_params=None, f_params=None):
    """The step-0 state: fresh parameters for each network not given (PyTorch-default init for T, the official
    init for F), and fresh optimiser states. Pure: jit it (`jit_init`), or vmap it over keys.

    `t_params` / `f_params`: flax variables ({"params": ...}) to start from instead; a network given is not
    initialised, so its initialiser is not compiled."""
    t_model, f_model = models.build_models(config)
    t_opt, f_opt = optim.make_optimizers(config)
    t_key, f_key = jax.random.split(init_key)
    if t_params is None:   # T's parameters do not depend on the input size; the critic's fc layer does
        t_params = t_model.init(t_key, jnp.zeros((1, 8, 8, 3)))
    if f_params is None:
        p = config.data.patch_size
        f_params = f_model.init(f_key, jnp.zeros((1, p, p, 3)))
    return RCOTState(step=jnp.zeros((), jnp.int32), t_params=t_params, f_params=f_params,
                     t_opt_state=t_opt.init(t_params), f_opt_state=f_opt.init(f_params))


def jit_init(fn, **jit_kwargs):
    """`jax.jit(fn)` for a function that creates train states: compiled faster on a CPU, with the same result."""
    return jax.jit(fn, compiler_options=_INIT_OPTIONS.get(jax.default_backend()), **jit_kwargs)


def init_state(config, init_key, **jit_kwargs):
    """`create_train_state(config, init_key)` compiled (`jit_init`, with `jit_kwargs` such as `out_shardings`)
    and run."""
    return jit_init(lambda key: create_train_state(config, key), **jit_kwargs)(init_key)
