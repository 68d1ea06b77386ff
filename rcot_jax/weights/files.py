"""Checkpoint files -> official state dicts, and back.

Accepted: the official trainer's `torch.save({'epoch': e, 'Tnet': Tnet, 'Fnet': Fnet})` (whole pickled
modules), plain state dicts (also under `state_dict` / `params`, or as {'Tnet': ..., 'Fnet': ...}, with or
without DataParallel's `module.` prefix), and `.safetensors` files (keys optionally prefixed `Tnet.`/`Fnet.`).
"""
import os

import numpy as np

from rcot_jax.weights import torch_format
from rcot_jax.weights.torch_format import ModuleRecord, WeightsError

NETWORK_NAMES = ("Tnet", "Fnet")       # the official trainer's names for the map and the critic
WRAPPER_KEYS = ("state_dict", "params")


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, np.ndarray) for v in obj.values())


def _strip_module_prefix(sd):
    if all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _by_prefix(sd):
    """A flat dict whose keys are all `Tnet.`/`Fnet.`-prefixed -> one state dict per network; else {'': sd}."""
    parts = {}
    for key, value in sd.items():
        name, _, rest = key.partition(".")
        if name not in NETWORK_NAMES or not rest:
            return {"": sd}
        parts.setdefault(name, {})[rest] = value
    return parts


def _parts(obj, path):
    """{name: state dict} found in an unpickled checkpoint object."""
    if isinstance(obj, ModuleRecord):
        return {"": torch_format.state_dict_of(obj)}
    if _is_state_dict(obj):
        return _by_prefix(obj)
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if key in obj:
                return _parts(obj[key], path)
        found = {}
        for name, value in obj.items():
            if isinstance(value, ModuleRecord) or _is_state_dict(value):
                found.update({name if part == "" else part: sd for part, sd in _parts(value, path).items()})
        if found:
            return found
        raise WeightsError(f"{path}: no state dict or pickled module found (top-level keys: {list(obj)[:10]})")
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, expected a state dict or a pickled module")


def read(path):
    """{name: {official key: array}} of the networks in the checkpoint at `path` (name '' when unnamed)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (no such checkpoint file)")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            parts = _by_prefix(load_file(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path}: not a complete safetensors file: {e}") from e
    else:
        parts = _parts(torch_format.read(path), path)
    return {name: _strip_module_prefix(sd) for name, sd in parts.items()}


def is_critic(state_dict):
    return "fc2.weight" in state_dict and any(k.startswith("features.") for k in state_dict)


def networks(paths):
    """(map state dict or None, critic state dict or None, {'map': file, 'critic': file}) from one or several
    checkpoint files; each network is recognised by its keys (the critic's `features.*`, `fc2`)."""
    found, sources = {}, {}
    for path in paths:
        for name, sd in read(path).items():
            role = "critic" if is_critic(sd) else "map"
            if role in found:
                raise WeightsError(f"{path}: a second {role} state dict{f' ({name})' if name else ''}; "
                                   f"the first came from {sources[role]}")
            found[role], sources[role] = sd, f"{path}[{name}]" if name else path
    return found.get("map"), found.get("critic"), sources


def write(path, state_dict):
    """An official-format state dict file: `.safetensors`, else PyTorch's `torch.save` format."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import save_file
        save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, path)
    else:
        torch_format.write(path, state_dict)
