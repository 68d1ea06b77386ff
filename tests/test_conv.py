"""The custom-gradient convolutions equal `lax.conv_general_dilated` in values, gradients and second-order
gradients (the gradient penalty differentiates the critic twice)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rcot_jax.models import conv

DIMS = ("NHWC", "HWIO", "NHWC")


def reference(x, kernel, stride, padding, groups=1):
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=DIMS,
                                    feature_group_count=groups, precision=lax.Precision.HIGHEST)


def _random(shape, seed, dtype):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _check_all_orders(ours, ref, x, kernel, rtol):
    """Values, first-order gradients wrt both arguments, and the gradient penalty's double gradient, each compiled
    as the steps compile them (and as one program: op by op, each operation would compile on its own)."""
    probe = _random(jax.eval_shape(ref, x, kernel).shape, 7, x.dtype)

    def orders(f):
        first = jax.grad(lambda a, b: jnp.sum(f(a, b) * probe), argnums=(0, 1))
        # d/d(kernel, x) of |d/dx sum(tanh(f))|^2: the input gradient differentiated again
        penalty = jax.grad(lambda a, b: jnp.sum(jax.grad(lambda a_: jnp.sum(jnp.tanh(f(a_, b))))(a) ** 2),
                           argnums=(0, 1))
        return jax.jit(lambda a, b: (f(a, b), *first(a, b), *penalty(a, b)))(x, kernel)

    for got, want in zip(orders(ours), orders(ref)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("hw,cin,cout,k,stride,pad", [
    ((10, 12), 3, 5, 5, 1, 2),     # critic's first layer
    ((9, 11), 4, 6, 3, 1, 1),      # 3x3 (odd sizes)
    ((10, 11), 4, 6, 4, 2, 1),     # critic's stride-2 4x4 (phases of unequal size)
    ((8, 8), 3, 2, 3, 2, 0),       # stride 2 without padding: some input pixels get no gradient
    ((7, 9), 2, 3, 3, 3, 2),       # stride 3, kernel not divisible by the stride
])
def test_conv2d_matches_lax(hw, cin, cout, k, stride, pad):
    padding = ((pad, pad), (pad, pad))
    with jax.enable_x64(True):
        x, kernel = _random((2, *hw, cin), 0, jnp.float64), _random((k, k, cin, cout), 1, jnp.float64)
        _check_all_orders(lambda a, b: conv.conv2d(a, b, stride, padding),
                          lambda a, b: reference(a, b, stride, padding), x, kernel, 1e-10)
    x, kernel = _random((2, *hw, cin), 0, jnp.float32), _random((k, k, cin, cout), 1, jnp.float32)
    _check_all_orders(lambda a, b: conv.conv2d(a, b, stride, padding),
                      lambda a, b: reference(a, b, stride, padding), x, kernel, 2e-4)


def test_depthwise_and_pointwise_match_lax():
    padding = ((1, 1), (1, 1))
    with jax.enable_x64(True):
        x = _random((2, 9, 10, 6), 0, jnp.float64)
        _check_all_orders(lambda a, b: conv.depthwise_conv2d(a, b, padding),
                          lambda a, b: reference(a, b, 1, padding, groups=6), x,
                          _random((3, 3, 1, 6), 1, jnp.float64), 1e-10)
        _check_all_orders(conv.pointwise_conv, lambda a, b: reference(a, b, 1, ((0, 0), (0, 0))), x,
                          _random((1, 1, 6, 4), 2, jnp.float64), 1e-10)


def test_bf16_operands_accumulate_in_float32():
    x, kernel = _random((1, 16, 16, 64), 0, jnp.float32), _random((3, 3, 64, 8), 1, jnp.float32)
    xb, kb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    got = conv.conv2d(xb, kb, 1, ((1, 1), (1, 1)))
    assert got.dtype == jnp.bfloat16
    # The 576-term sums of the rounded operands accumulate in float32: only the output's rounding remains
    # (half a bf16 ulp, 2^-9 relative); accumulating in bf16 would be off by far more.
    want = reference(xb.astype(jnp.float32), kb.astype(jnp.float32), 1, ((1, 1), (1, 1)))
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2 ** -8, atol=1e-6)
    grads = jax.grad(lambda b: conv.conv2d(x.astype(jnp.bfloat16), b.astype(jnp.bfloat16), 1,
                                           ((1, 1), (1, 1))).astype(jnp.float32).sum())(kernel)
    assert grads.dtype == jnp.float32 and np.isfinite(np.asarray(grads)).all()


# conv_impl: 'xla' (XLA's convolutions, JAX's gradients) and 'custom' (this module's rules) are the same function.

@pytest.mark.parametrize("k,stride,pad,groups", [(3, 1, 1, 1), (4, 2, 1, 1), (1, 1, 0, 1), (3, 1, 1, 6)])
def test_xla_and_custom_implementations_agree_to_float32_rounding(k, stride, pad, groups):
    padding = ((pad, pad), (pad, pad))
    x = _random((2, 10, 11, 6), 0, jnp.float32)
    kernel = _random((k, k, 6 // groups, 6), 1, jnp.float32)
    if groups > 1:
        custom = lambda a, b: conv.depthwise_conv2d(a, b, padding)  # noqa: E731
    elif k == 1:
        custom = conv.pointwise_conv
    else:
        custom = lambda a, b: conv.conv2d(a, b, stride, padding)  # noqa: E731
    _check_all_orders(custom, lambda a, b: conv.xla_conv(a, b, stride, padding, groups), x, kernel, 2e-4)


def test_auto_is_custom_on_cpu_and_xla_on_accelerators():
    assert conv.impl_for("auto", "cpu") == "custom"
    assert conv.impl_for("auto", "gpu") == conv.impl_for("auto", "tpu") == "xla"
    assert conv.impl_for("custom", "tpu") == "custom" and conv.impl_for("xla", "cpu") == "xla"
    with pytest.raises(ValueError, match="config.model.conv_impl='lax'"):
        conv.impl_for("lax", "cpu")
