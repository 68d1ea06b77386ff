import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakes import tiny_t_params
from rcot_jax import models
from rcot_jax.configs import default


def _num_params(module, shape):
    params = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def test_official_parameter_counts():
    assert _num_params(models.RestormerRCOT(), (1, 128, 128, 3)) == 44_600_640
    assert _num_params(models.MPRNetRCOT(), (1, 128, 128, 3)) == 6_728_529
    assert _num_params(models.Critic(patch_size=128), (1, 128, 128, 3)) == 30_588_609


def test_default_config_builds_official_sizes():
    t_model, f_model = models.build_models(default.get_config())
    assert _num_params(t_model, (1, 128, 128, 3)) == 44_600_640
    assert _num_params(f_model, (1, 128, 128, 3)) == 30_588_609


@pytest.fixture(scope="module")
def tiny():
    return default.get_config("tiny")


def _tiny_map(config, backbone, **overrides):
    config = config.copy_and_resolve_references()
    config.model.backbone = backbone
    for k, v in overrides.items():
        setattr(config.model, k, v)
    return models.build_models(config)[0]


@pytest.mark.parametrize("backbone", ["restormer", "mprnet"])
def test_single_pass_equals_first_pass(tiny, backbone):
    x = jax.random.uniform(jax.random.key(0), (2, 16, 24, 3))
    two, params = _tiny_map(tiny, backbone), tiny_t_params(backbone)
    out, first = jax.jit(lambda p, x: two.apply(p, x, return_first_pass=True))(params, x)
    assert out.shape == first.shape == x.shape

    one = _tiny_map(tiny, backbone, two_pass=False)
    one_shapes = jax.eval_shape(one.init, jax.random.key(1), x)
    # The single-pass backbone's parameters are a strict subset of the two-pass map's.
    sub = {"params": {k: params["params"][k] for k in one_shapes["params"]}}
    assert len(sub["params"]) < len(params["params"])
    single = jax.jit(one.apply)(sub, x)
    np.testing.assert_allclose(single, first, atol=1e-6)
    # The second pass is conditioned on the residual: it changes the output.
    assert float(jnp.abs(out - first).max()) > 1e-4


@pytest.mark.parametrize("backbone", ["restormer", "mprnet"])
def test_cond_scale_is_used(tiny, backbone):
    x = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3))
    a, b = _tiny_map(tiny, backbone, cond_scale=0.8), _tiny_map(tiny, backbone, cond_scale=0.0)
    params = tiny_t_params(backbone)
    assert float(jnp.abs(jax.jit(a.apply)(params, x) - jax.jit(b.apply)(params, x)).max()) > 1e-5


def test_critic_output_and_input_size_check():
    critic = models.Critic(patch_size=32)
    x = jnp.ones((3, 32, 32, 3))
    params = jax.jit(critic.init)(jax.random.key(0), x)
    apply = jax.jit(critic.apply)
    assert apply(params, x).shape == (3,)
    with pytest.raises(ValueError, match="patch_size=32"):
        apply(params, jnp.ones((3, 64, 64, 3)))


def test_map_size_checks():
    with pytest.raises(ValueError, match="divisible by 8"):
        models.RestormerRCOT(dim=8).init(jax.random.key(0), jnp.ones((1, 12, 16, 3)))
    with pytest.raises(ValueError, match="divisible by 4"):
        models.MPRNetRCOT(n_feat=8, scale_unetfeats=4).init(jax.random.key(0), jnp.ones((1, 10, 16, 3)))


def _primitives(jaxpr):
    """Names of every primitive in `jaxpr`, sub-jaxprs (remat, custom_vjp, scan) included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names |= _primitives(sub)
    return names


@pytest.mark.parametrize("backbone", ["restormer", "mprnet"])
def test_both_conv_impls_give_the_same_map_and_critic(tiny, backbone):
    """Same parameters and outputs; only the program differs: the gradient penalty's loss (the critic
    differentiated, at T's output) has custom-gradient convolutions under 'custom' and none under 'xla',
    rematerialised blocks included (they trace their convolutions inside `jax.checkpoint`). The gradients of the two
    implementations agree layer by layer, to second order (tests/test_conv.py); compiling them for whole networks
    here would add minutes."""
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    config = tiny.copy_and_resolve_references()
    config.model.backbone, config.model.remat = backbone, "full"
    results = {}
    for impl in ("custom", "xla"):
        config.model.conv_impl = impl
        t_model, f_model = models.build_models(config)
        # T's parameters under 'custom' are those of every test's tiny map (the same key; the input size is free).
        t_params = tiny_t_params(backbone) if impl == "custom" else jax.jit(t_model.init)(jax.random.key(1), x)
        f_params = jax.jit(f_model.init)(jax.random.key(2), x)

        def loss(tp, fp):
            out = t_model.apply(tp, x)
            penalty = jax.grad(lambda y: f_model.apply(fp, y).sum())(out)
            return (jnp.sum(out ** 2) + jnp.sum(penalty ** 2)) / x.size

        outputs = jax.jit(lambda tp, fp: (t_model.apply(tp, x, return_first_pass=True), f_model.apply(fp, x)))
        ops = _primitives(jax.make_jaxpr(loss)(t_params, f_params).jaxpr)
        results[impl] = (t_params, f_params), outputs(t_params, f_params), ops
    (params, custom, custom_ops), (xla_params, xla, xla_ops) = results["custom"], results["xla"]
    assert "custom_vjp_call" in custom_ops and "custom_vjp_call" not in xla_ops
    jax.tree.map(np.testing.assert_array_equal, params, xla_params)
    for a, b in zip(jax.tree.leaves(custom), jax.tree.leaves(xla)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * float(jnp.abs(b).max()))