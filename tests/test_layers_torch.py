"""Layer semantics against PyTorch functional ops on random inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

from rcot_jax import models  # noqa: E402
from rcot_jax.models import layers  # noqa: E402
from rcot_jax.models.critic import CONV_LAYERS  # noqa: E402


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


RNG = np.random.default_rng(0)


def test_pixel_unshuffle_and_shuffle_match_torch():
    x = RNG.standard_normal((2, 8, 12, 5)).astype(np.float32)
    np.testing.assert_array_equal(layers.pixel_unshuffle(jnp.asarray(x)), _nhwc(TF.pixel_unshuffle(_nchw(x), 2)))
    y = RNG.standard_normal((2, 4, 6, 20)).astype(np.float32)
    np.testing.assert_array_equal(layers.pixel_shuffle(jnp.asarray(y)), _nhwc(TF.pixel_shuffle(_nchw(y), 2)))


@pytest.mark.parametrize("shape", [(2, 8, 12, 3), (1, 6, 4, 2)])
def test_bilinear_resampling_matches_torch(shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    down = TF.interpolate(_nchw(x), scale_factor=0.5, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(layers.bilinear_downsample_x2(jnp.asarray(x)), _nhwc(down), atol=1e-6)
    up = TF.interpolate(_nchw(x), scale_factor=2, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(layers.bilinear_upsample_x2(jnp.asarray(x)), _nhwc(up), atol=1e-6)


@pytest.mark.parametrize("cin,cout,k,stride,pad,groups,bias", [
    (3, 6, 5, 1, 2, 1, True),     # critic conv 1
    (4, 8, 4, 2, 1, 1, True),     # critic strided 4x4, padding 1
    (6, 6, 3, 1, 1, 6, False),    # depthwise (MDTA / GDFN)
    (4, 6, 1, 1, 0, 1, False),    # 1x1
    (4, 6, 3, 1, 1, 2, True),     # grouped, not depthwise
])
def test_conv2d_matches_torch(cin, cout, k, stride, pad, groups, bias):
    x = RNG.standard_normal((2, 10, 12, cin)).astype(np.float32)
    conv = layers.Conv2d(cout, k, stride=stride, padding=pad, groups=groups, use_bias=bias)
    params = conv.init(jax.random.key(0), jnp.asarray(x))
    y = conv.apply(params, jnp.asarray(x))
    weight = torch.from_numpy(np.asarray(params["params"]["kernel"]).transpose(3, 2, 0, 1).copy())
    b = torch.from_numpy(np.array(params["params"]["bias"])) if bias else None
    ref = TF.conv2d(_nchw(x), weight, b, stride=stride, padding=pad, groups=groups)
    np.testing.assert_allclose(y, _nhwc(ref), atol=2e-5)


def test_conv2d_init_follows_pytorch_default():
    fan_in = 16 * 3 * 3
    params = layers.Conv2d(64, 3, use_bias=True).init(jax.random.key(0), jnp.ones((1, 8, 8, 16)))["params"]
    bound = 1 / np.sqrt(fan_in)
    for leaf in (params["kernel"], params["bias"]):
        assert float(jnp.abs(leaf).max()) <= bound
        assert float(jnp.abs(leaf).max()) > 0.9 * bound
    assert abs(float(params["kernel"].std()) - bound / np.sqrt(3)) < 0.05 * bound


def test_layernorm_matches_torch():
    x = RNG.standard_normal((2, 5, 7, 12)).astype(np.float32) * 3 + 1
    ln = layers.LayerNorm()
    params = ln.init(jax.random.key(0), jnp.asarray(x))
    params = jax.tree.map(lambda p: p + jnp.asarray(RNG.standard_normal(p.shape), jnp.float32), params)
    ref = TF.layer_norm(torch.from_numpy(x), (12,), torch.from_numpy(np.array(params["params"]["scale"])),
                        torch.from_numpy(np.array(params["params"]["bias"])), eps=1e-5)
    np.testing.assert_allclose(ln.apply(params, jnp.asarray(x)), ref.numpy(), atol=1e-5)


def test_exact_gelu_matches_torch():
    x = RNG.standard_normal(100).astype(np.float32) * 3
    np.testing.assert_allclose(jax.nn.gelu(jnp.asarray(x), approximate=False), TF.gelu(torch.from_numpy(x)),
                               atol=1e-6)


def test_critic_matches_torch_with_mapped_weights():
    """Official-layout weights (OIHW convs, NCHW flatten, [out, in] linears) give the same scores."""
    p = 32
    x = RNG.random((2, p, p, 3)).astype(np.float32)
    critic = models.Critic(patch_size=p)
    params = jax.jit(critic.init)(jax.random.key(0), jnp.asarray(x))["params"]
    t = _nchw(x)
    for i, (_, stride, pad, _, bias) in enumerate(CONV_LAYERS):
        layer = params[f"features_{2 * i}"]
        w = torch.from_numpy(np.asarray(layer["kernel"]).transpose(3, 2, 0, 1).copy())
        b = torch.from_numpy(np.array(layer["bias"])) if bias else None
        t = TF.leaky_relu(TF.conv2d(t, w, b, stride=stride, padding=pad), 0.2)
    t = t.reshape(t.shape[0], -1)

    def linear(t, name):
        return TF.linear(t, torch.from_numpy(np.asarray(params[name]["kernel"]).T.copy()),
                         torch.from_numpy(np.array(params[name]["bias"])))

    ref = linear(TF.leaky_relu(linear(linear(t, "fc"), "fc1"), 0.2), "fc2")[:, 0]
    np.testing.assert_allclose(jax.jit(critic.apply)({"params": params}, x), ref.numpy(), rtol=1e-4, atol=1e-5)
