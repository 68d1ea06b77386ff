"""Mixed precision (`config.precision='bf16'`) and rematerialisation (`config.model.remat`)."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from fakes import tiny_t_params
from rcot_jax.configs import default
from rcot_jax import models, steps
from rcot_jax.state import init_state


def _batch(config, seed=0):
    b, p = config.data.batch_size, config.data.patch_size
    rng = np.random.default_rng(seed)
    clean = rng.random((b, p, p, 3), dtype=np.float32)
    return {"degraded": np.clip(clean + 0.1 * rng.standard_normal(clean.shape, dtype=np.float32), 0, 1),
            "target": clean, "paired": np.ones(b, bool), "de_id": np.arange(b, dtype=np.int32) % 7}


def _config(**overrides):
    return steps.with_values(default.get_config("tiny"), {"data.batch_size": 2, **overrides})


def test_bf16_step_is_finite_and_keeps_float32_state():
    # The step's casts are the same for both maps (each map's bf16 layers: test_bf16_networks_follow_float32);
    # the MPRNet step compiles in less than half the Restormer's time.
    config = _config(precision="bf16", **{"model.backbone": "mprnet"})
    state = init_state(config, jax.random.key(0))
    step = jax.jit(lambda s, b: steps.train_step(s, b, jax.random.key(1), config))
    for _ in range(2):
        state, metrics = step(state, _batch(config))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    leaves = jax.tree.leaves((state.t_params, state.f_params, state.t_opt_state, state.f_opt_state))
    assert {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("backbone", ["restormer", "mprnet"])
def test_bf16_networks_follow_float32(backbone):
    (t16, f16), (t32, f32) = (models.build_models(_config(precision=p, **{"model.backbone": backbone}))
                              for p in ("bf16", "float32"))
    x = jnp.asarray(_batch(_config())["degraded"])
    t_params, f_params = tiny_t_params(backbone), jax.jit(f32.init)(jax.random.key(1), x)
    out = jax.jit(t16.apply)(t_params, x)
    f16_apply = jax.jit(f16.apply)
    assert out.dtype == jnp.float32 and f16_apply(f_params, out).dtype == jnp.float32
    # bf16 keeps about 3 significant digits: the restored images agree with float32's to that precision.
    np.testing.assert_allclose(out, jax.jit(t32.apply)(t_params, x), atol=0.03)
    np.testing.assert_allclose(f16_apply(f_params, x), jax.jit(f32.apply)(f_params, x), rtol=0.05, atol=0.01)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="config.precision='fp8'"):
        models.build_models(_config(precision="fp8"))


# Each policy once, on each backbone once: the Restormer's gradients through its first pass alone (a subset of the
# same parameters; the second pass runs the same rematerialised blocks), which halves its programs to compile;
# MPRNet's through both passes, whose decoder is called twice.
@pytest.mark.parametrize("backbone,policy,two_pass", [("restormer", "full", False), ("mprnet", "dots", True)])
def test_remat_gives_the_same_gradients(backbone, policy, two_pass):
    batch = _batch(_config())
    x, y = jnp.asarray(batch["degraded"]), jnp.asarray(batch["target"])
    params = tiny_t_params(backbone)           # remat leaves the (two-pass) map's parameters as they are
    two_pass_rematted = models.build_models(_config(**{"model.backbone": backbone, "model.remat": policy}))[0]
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(two_pass_rematted.init,
                                                                           jax.random.key(0), x))
    base, rematted = (models.build_models(_config(**{"model.backbone": backbone, "model.remat": p,
                                                      "model.two_pass": two_pass}))[0] for p in ("none", policy))

    def grads(model):
        return jax.jit(jax.grad(lambda p: jnp.mean(jnp.abs(model.apply(p, x) - y))))(params)

    for got, want in zip(jax.tree.leaves(grads(rematted)), jax.tree.leaves(grads(base))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backbone", ["restormer", "mprnet"])
def test_remat_dots_keeps_the_convolutions_outputs_on_either_implementation(backbone, capsys):
    """'dots' keeps each block's convolution outputs and recomputes the rest. The convolutions are primitives of
    XLA's or of custom-gradient functions, which JAX's dots policies alone do not see: 'dots' then kept nothing more
    than 'full' on either `conv_impl` (the same TPU programs)."""
    x = jnp.zeros((1, 16, 16, 3))

    def kept(policy, impl):
        model = models.build_models(_config(**{"model.backbone": backbone, "model.remat": policy,
                                               "model.conv_impl": impl}))[0]
        params = jax.eval_shape(model.init, jax.random.key(0), x)
        print_saved_residuals(lambda p: jnp.sum(model.apply(p, x)), params)
        lines = capsys.readouterr().out.splitlines()
        return collections.Counter(line.split(" ")[0] for line in lines if "from the argument" not in line)

    def size(residuals):      # elements, from lines such as "f32[1,8,8,16] output of ..."
        return sum(n * np.prod([int(d) for d in shape.split("[")[1][:-1].split(",") if d])
                   for shape, n in residuals.items())

    # Outside the rematerialised blocks each implementation keeps its own residuals; in them, 'dots' keeps the same.
    full, dots = ({impl: kept(policy, impl) for impl in ("custom", "xla")} for policy in ("full", "dots"))
    assert dots["custom"] - full["custom"] == dots["xla"] - full["xla"]
    assert size(full["xla"]) < size(dots["xla"]) < size(kept("none", "xla"))


def test_unknown_remat_policy_is_refused():
    model, _ = models.build_models(_config(**{"model.remat": "some"}))
    with pytest.raises(ValueError, match="config.model.remat='some'"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
