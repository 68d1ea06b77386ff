"""Official checkpoints <-> rcot_jax run directories (Orbax), and converted parameters as a fresh run's start.

A converted checkpoint is an ordinary training checkpoint at step 0 (`<workdir>/checkpoints/0`): fresh
optimiser states, the data iterator at its start. `--mode=eval` evaluates it, training from that workdir
fine-tunes it, and `config.init_from=<workdir>` starts another run from its parameters.
"""
import os

import jax
from absl import logging

from rcot_jax import models, paths
from rcot_jax import workdir as workdir_lib
from rcot_jax.checkpointing import restore_params
from rcot_jax.state import create_train_state, jit_init, seed_keys
from rcot_jax.weights import files, mapping
from rcot_jax.weights.torch_format import WeightsError


def official_to_params(config, paths):
    """(T params, F params or None) of the networks `config` builds, from official checkpoint file(s)."""
    t_model, f_model = models.build_models(config)
    t_sd, f_sd, sources = files.networks(paths)
    if t_sd is None:
        raise WeightsError(f"{', '.join(map(str, paths))}: no transport map (T_net) state dict found")
    t_params = mapping.to_params(t_sd, t_model, mapping.abstract_params(t_model), sources["map"])
    f_params = None
    if f_sd is not None:
        f_abstract = mapping.abstract_params(f_model, config.data.patch_size)
        f_params = mapping.to_params(f_sd, f_model, f_abstract, sources["critic"])
    return t_params, f_params


def state_from_params(config, t_params, f_params=None):
    """A step-0 train state holding these parameters (when `f_params` is None, the critic a run of
    `config.seed` starts with) and fresh optimiser states; only a missing critic is initialised."""
    wrap = (lambda params: None if params is None else {"params": params})
    return jit_init(lambda key, t, f: create_train_state(config, key, t, f))(
        seed_keys(config.seed)[0], wrap(t_params), wrap(f_params))


def params_to_official(config, state, seed=0):
    """(T's official state dict, F's official state dict) of a train state."""
    t_model, f_model = models.build_models(config)
    return (mapping.from_params(jax.device_get(state.t_params["params"]), t_model, seed),
            mapping.from_params(jax.device_get(state.f_params["params"]), f_model, seed))


def checkpoint_dir(path):
    """The Orbax step directory that `path` (a workdir, its `checkpoints/` or one step of it) stands for: the
    latest step."""
    path = os.path.abspath(paths.expand(path))
    if os.path.isdir(os.path.join(path, "state")):
        return path
    if os.path.isdir(os.path.join(path, workdir_lib.CHECKPOINTS)):
        path = os.path.join(path, workdir_lib.CHECKPOINTS)
    step_dirs = [d for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []
    if not step_dirs:
        raise FileNotFoundError(f"config.init_from={path}: no Orbax checkpoint (a workdir, its checkpoints/ "
                                "or a step directory)")
    return os.path.join(path, max(step_dirs, key=int))


def _init_from_file(path, state, config):
    """`init_from` for an official or exported weights file: T from `path`, F from the critic it holds or else from
    `<stem>_Fnet<ext>` beside it (as `convert --export` writes them); a critic found nowhere stays as it is."""
    stem, ext = os.path.splitext(path)
    critic = f"{stem}_Fnet{ext}"
    t_params, f_params = official_to_params(config, [path, critic] if os.path.isfile(critic) else [path])
    place = lambda new, old: jax.device_put(new, getattr(old, "sharding", None))   # noqa: E731
    replaced = {"t_params": jax.tree.map(place, {"params": t_params}, state.t_params)}
    if f_params is not None:
        replaced["f_params"] = jax.tree.map(place, {"params": f_params}, state.f_params)
    logging.info("Initialised T%s from %s", " and F" if f_params is not None else "", path)
    return state.replace(**replaced)


def init_from(path, state, config=None):
    """`state` (a fresh or abstract train state) with the T and F parameters of the checkpoint at `path` (see
    `checkpoint_dir`), placed like `state`'s (abstract: on the default device); step and optimiser states stay.
    With `config` (the networks'), `path` may also be an official or exported weights file (.pth, .safetensors)."""
    path = paths.expand(path)
    if os.path.isfile(path):
        if config is None:
            raise ValueError(f"config.init_from={path}: a weights file needs the config of its networks")
        return _init_from_file(path, state, config)
    directory = checkpoint_dir(path)
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"t_params": state.t_params, "f_params": state.f_params}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)
                                                           or default), target)
    try:
        restored = restore_params(directory, abstract)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"config.init_from={path}: its parameters do not fit this config's networks: {e}") from e
    logging.info("Initialised T and F from %s", directory)
    return state.replace(**restored)
