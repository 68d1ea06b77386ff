"""Networks of RCOT: the transport maps T (two backbones) and the potential (critic) F, built from a config."""
import jax
import jax.numpy as jnp

from rcot_jax.models import conv
from rcot_jax.models.critic import Critic
from rcot_jax.models.mprnet import MPRNetRCOT
from rcot_jax.models.restormer import RestormerRCOT

__all__ = ["BACKBONES", "PRECISIONS", "Critic", "MPRNetRCOT", "RestormerRCOT", "build_models", "conv_impl"]

BACKBONES = ("restormer", "mprnet")
# Computation dtype of both networks (None: the input's). 'float64' (parameters too) needs JAX_ENABLE_X64=1: for
# numerical comparisons, e.g. that runs on different device counts take the same steps.
PRECISIONS = {"float32": None, "bf16": jnp.bfloat16, "float64": jnp.float64}


def conv_impl(config, platform=None):
    """'xla' or 'custom': the convolutions `config.model.conv_impl` selects on `platform` (default: JAX's default
    backend; `parallel` passes the mesh's)."""
    return conv.impl_for(config.model.conv_impl, platform or jax.default_backend())


def build_models(config, cond_scale=None):
    """(T, F) flax modules from `config.model` and `config.data.patch_size`; `cond_scale` (a float or a traced
    scalar) instead of `config.model.cond_scale`."""
    m = config.model
    if config.precision not in PRECISIONS:
        raise ValueError(f"config.precision={config.precision!r}, expected one of {tuple(PRECISIONS)}")
    if config.precision == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("config.precision='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1")
    impl = conv_impl(config)
    common = dict(two_pass=m.two_pass, cond_scale=m.cond_scale if cond_scale is None else cond_scale,
                  dtype=PRECISIONS[config.precision],
                  remat=m.remat, conv_impl=impl)
    if m.backbone == "restormer":
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in m.restormer.items()}
        t_model = RestormerRCOT(**kwargs, **common)
    elif m.backbone == "mprnet":
        t_model = MPRNetRCOT(**m.mprnet, **common)
    else:
        raise ValueError(f"config.model.backbone={m.backbone!r}, expected one of {BACKBONES}")
    f_model = Critic(patch_size=config.data.patch_size, width=m.critic_width,
                     fc_features=m.critic_fc_features or None, dtype=PRECISIONS[config.precision], conv_impl=impl)
    return t_model, f_model
