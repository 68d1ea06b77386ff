"""Official RCOT state-dict keys <-> rcot_jax parameter trees, for RestormerRCOT (`Net_Restormer.T_net`),
MPRNetRCOT (`Net.T_net`) and Critic (`Net_Restormer.F_net`, and `Net.F_net` with `fc_features=2048`).

A conv weight is OIHW there and HWIO here, a linear weight (out, in) there and (in, out) here. Restormer's
decoder-side modules sit under `decoder/` here. MPRNet's one shared PReLU is a scalar here and 22 keys
(`*.body.1.weight`, one per CAB) there. Modules the official forward never calls are absent here: dropped on
import and written on export as freshly initialised (PyTorch's default initialisation, a fixed seed), so the
official modules load the result with `load_state_dict(strict=True)`.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np

from rcot_jax import models
from rcot_jax.models import layers, restormer
from rcot_jax.weights.torch_format import WeightsError


def _restormer_key(path):
    key = ".".join(path[1:] if path[0] == "decoder" else path)
    key = re.sub(r"^((res_)?patch_embed)\.kernel$", r"\1.proj.kernel", key)
    key = re.sub(r"^((res)?(down|up)\d_\d)\.conv\.", r"\1.body.0.", key)
    key = re.sub(r"\.(norm\d)\.scale$", r".\1.body.weight", key)
    key = re.sub(r"\.(norm\d)\.bias$", r".\1.body.bias", key)
    return re.sub(r"kernel$", "weight", key)


def _mprnet_segment(segment):
    segment = re.sub(r"^(shallow_feat1|res_shallow_feat1|body|conv_du)_(\d)$", r"\1.\2", segment)
    return re.sub(r"^sam12_(conv\d)$", r"sam12.\1", segment)


def _mprnet_key(path):
    key = ".".join(_mprnet_segment(s) for s in path)
    key = re.sub(r"\.(down12|down23)\.kernel$", r".\1.down.1.kernel", key)
    key = re.sub(r"\.(up21|up32)\.kernel$", r".\1.up.1.kernel", key)
    return re.sub(r"kernel$", "weight", key)


def _critic_key(path):
    return re.sub(r"kernel$", "weight", ".".join(path).replace("features_", "features."))


def _key_function(model):
    if isinstance(model, models.RestormerRCOT):
        return _restormer_key
    if isinstance(model, models.MPRNetRCOT):
        return _mprnet_key
    if isinstance(model, models.Critic):
        return _critic_key
    raise TypeError(f"no official layout for {type(model).__name__}")


def _leaves(tree):
    """[(path tuple, leaf)] of a nested dict, in order."""
    return [(tuple(k.key for k in path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _cab_paths(tree, prefix=()):
    """Paths of the CABs (subtrees holding `body_0`) in an MPRNet parameter tree."""
    if not isinstance(tree, dict):
        return []
    if "body_0" in tree:
        return [prefix]
    return [p for k, v in tree.items() for p in _cab_paths(v, prefix + (k,))]


def official_keys(model, params):
    """{rcot_jax leaf path: [official keys]}: one key per leaf, except the shared PReLU (one per CAB)."""
    key_of = _key_function(model)
    table = {}
    for path, _ in _leaves(params):
        if path == ("prelu",):
            table[path] = [_mprnet_key(cab) + ".body.1.weight" for cab in _cab_paths(params)]
        else:
            table[path] = [key_of(path)]
    keys = [k for ks in table.values() for k in ks]
    assert len(keys) == len(set(keys)), "two rcot_jax leaves map to one official key"
    return table


def _conv_init(features, kernel, seed_key, cin):
    conv = layers.Conv2d(features, kernel)
    return conv.init(seed_key, jnp.zeros((1, 8, 8, cin)))["params"]


def _unused_tree(model, seed):
    """The parameters (a traceable tree) of the official modules `model` leaves out, see `unused_modules`."""
    rng = iter(jax.random.split(jax.random.key(seed), 16))
    if isinstance(model, models.RestormerRCOT):
        d, c3 = model.dim, 4 * model.dim
        convs = {"chnl_reduce1": (64, 64, 1), "chnl_reduce2": (128, 128, 1), "chnl_reduce3": (320, 256, 1),
                 "reduce_noise_channel_1": (d + 64, d, 1), "reduce_noise_channel_2": (2 * d + 128, 2 * d, 1),
                 "reduce_noise_channel_3": (c3 + 256, c3, 1), "resreduce_noise_level3": (c3 + 192, c3, 1),
                 "res_patch_embed": (3, d, 3)}
        tree = {name: _conv_init(cout, k, next(rng), cin) for name, (cin, cout, k) in convs.items()}
        tree["resdown3_4"] = restormer.Downsample().init(next(rng), jnp.zeros((1, 8, 8, c3)))["params"]
        block = restormer.TransformerBlock(model.heads[2], model.ffn_expansion_factor)
        tree["resnoise_level3"] = block.init(next(rng), jnp.zeros((1, 8, 8, c3 + 192)))["params"]
        return tree
    if isinstance(model, models.MPRNetRCOT):
        n, s = model.n_feat, model.scale_unetfeats
        csff = {f"csff_{side}{i + 1}": _conv_init(n + i * s, 1, next(rng), n + i * s)
                for side in ("enc", "dec") for i in range(3)}
        tree = {"stage1_resencoder": csff, "sam12_conv1": _conv_init(n, 1, next(rng), n),
                "sam12_conv3": _conv_init(n, 1, next(rng), 3)}
        return tree
    return {}


def unused_modules(model, seed=0):
    """Parameter tree (rcot_jax naming, PyTorch's default initial values) of the official modules that `model`
    leaves out because the official forward never calls them."""
    return jax.tree.map(np.asarray, jax.jit(_unused_tree, static_argnums=(0, 1))(model, seed))


def _to_official(path, value):
    value = np.asarray(value)
    if path[-1] == "kernel":
        return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    if path == ("prelu",):
        return value.reshape(1)
    return value


def _official_shape(path, shape):
    if path[-1] == "kernel":
        return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else tuple(shape[::-1])
    return (1,) if path == ("prelu",) else tuple(shape)


def _from_official(path, value):
    if path[-1] == "kernel":
        return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    if path == ("prelu",):
        return value.reshape(())
    return value


def _unflatten(pairs):
    tree = {}
    for path, value in pairs:
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return tree


def _listed(keys, limit=8):
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def to_params(state_dict, model, abstract_params, source):
    """rcot_jax parameters of `model` ({name: array}, the shapes of `abstract_params`) from an official state
    dict. Every leaf is filled exactly once; raises WeightsError naming `source` and the keys on any missing,
    unexpected or misshaped key."""
    table = official_keys(model, abstract_params)
    expected = {k for keys in table.values() for k in keys}
    unused = jax.eval_shape(lambda: _unused_tree(model, 0))
    dropped = {k for keys in official_keys(model, unused).values() for k in keys}
    missing = expected - set(state_dict)
    unexpected = set(state_dict) - expected - dropped
    if missing or unexpected:
        raise WeightsError(f"{source}: does not fit {type(model).__name__}: "
                           + "; ".join(f"{what} {_listed(keys)}" for what, keys in
                                       (("missing", missing), ("unexpected", unexpected)) if keys))
    pairs = []
    for path, leaf in _leaves(abstract_params):
        keys = table[path]
        values = [np.asarray(state_dict[k]) for k in keys]
        for k, v in zip(keys[1:], values[1:]):
            if not np.array_equal(v, values[0]):
                raise WeightsError(f"{source}: {k} differs from {keys[0]}; official MPRNet shares one PReLU")
        expected_shape = _official_shape(path, leaf.shape)
        if values[0].shape != expected_shape:
            raise WeightsError(f"{source}: {keys[0]} has shape {values[0].shape}, expected {expected_shape} "
                               f"(rcot_jax {'/'.join(path)} {tuple(leaf.shape)})")
        if values[0].dtype.kind in "biu":
            raise WeightsError(f"{source}: {keys[0]} has dtype {values[0].dtype}, expected floating point")
        pairs.append((path, _from_official(path, values[0]).astype(leaf.dtype)))
    return _unflatten(pairs)


def from_params(params, model, seed=0):
    """The official state dict {key: float32 array} of `model`'s parameters, with its unused modules as freshly
    initialised (seeded by `seed`), so that the official module loads it with `strict=True`."""
    out = {}
    for tree in (params, unused_modules(model, seed)):
        table = official_keys(model, tree)
        for path, leaf in _leaves(tree):
            for key in table[path]:
                out[key] = _to_official(path, leaf)
    return out


def abstract_params(model, patch_size=None):
    """Shapes and dtypes of `model`'s parameters (the critic's depend on its patch size)."""
    size = patch_size or 8
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))["params"]
