"""NHWC convolutions with their own gradients, for speed and memory on XLA:CPU.

JAX differentiates `lax.conv_general_dilated` into convolutions in non-canonical layouts (the kernel gradient
contracts over batch and space), and a depthwise convolution written as shifted products into a backward pass
that keeps k*k shifted copies of its input. Here each gradient is a forward convolution in the canonical
NHWC/HWIO layout or a matmul, at any order of differentiation (the gradient penalty differentiates the critic
twice), and the results equal `lax.conv_general_dilated`'s to float32 rounding:
  conv2d             input gradient: a stride-1 convolution of the output gradient with the flipped kernel
                     (one per output phase for strided convolutions); kernel gradient: patches^T @ grad.
  depthwise_conv2d   a sum of k*k shifted products (XLA fuses it; grouped convolutions are slow on CPU), whose
                     backward keeps only the padded input instead of k*k shifted copies.
  pointwise_conv     1x1 convolutions as matmuls.
Inputs and kernels of any float dtype; bf16 operands accumulate in float32 (`preferred_element_type`).

Kernel gradients contract over the batch and space, the leading axes of both operands. Given the choice, XLA:CPU
writes one operand transposed by its producer (a strided copy, slower than the matmul itself); an optimization
barrier fixes the operands' layout so the contraction reads them in place (measured 2.2x on a 1x1 conv's
gradients). `rcot_jax` keeps XLA:CPU from removing these barriers early (see rcot_jax/__init__.py).

These rules are tuned for XLA:CPU. GPU and TPU compilers have their own convolution kernels and layout
assignment, so there the networks use `xla_conv` (`lax.conv_general_dilated`, grouped for depthwise) and JAX's
own gradients. `IMPLS` names the choice (`config.model.conv_impl`); `implementation(name)` sets it while a
network is traced (the top-level networks do, from their `conv_impl` field); `impl_for(name, platform)`
resolves 'auto'.
"""
import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")
IMPLS = ("auto", "xla", "custom")   # auto: custom on CPU, xla on GPU and TPU
_CURRENT = contextvars.ContextVar("rcot_jax_conv_impl", default="custom")


def impl_for(name, platform):
    """The implementation `name` (one of IMPLS) stands for when compiling for `platform` ('cpu', 'gpu', 'tpu')."""
    if name not in IMPLS:
        raise ValueError(f"config.model.conv_impl={name!r}, expected one of {IMPLS}")
    if name != "auto":
        return name
    return "custom" if platform == "cpu" else "xla"


@contextlib.contextmanager
def implementation(name):
    """Within this block, `Conv2d` layers use `name` (one of IMPLS; 'auto' by the default backend)."""
    token = _CURRENT.set(impl_for(name, jax.default_backend()))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def with_implementation(method):
    """Decorates a network's `__call__`: it is traced under `implementation(self.conv_impl)`."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with implementation(self.conv_impl):
            return method(self, *args, **kwargs)
    return call


def current():
    return _CURRENT.get()


def xla_conv(x, kernel, stride, padding, groups=1):
    """`lax.conv_general_dilated` with the custom functions' dtype rules, differentiated by JAX."""
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_DIMS,
                                    feature_group_count=groups,
                                    preferred_element_type=_acc(x.dtype)).astype(x.dtype)


def _out_size(n, k, stride, pad):
    return (n + pad[0] + pad[1] - k) // stride + 1


def _acc(dtype):
    """Accumulation dtype: float32, or float64 for float64 operands."""
    return jnp.promote_types(dtype, jnp.float32)


def _contract_leading(a, b):
    """sum over n of a[n, i] b[n, o] -> [i, o] for a [..., I], b [..., O] with the same leading shape."""
    a, b = lax.optimization_barrier((a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])))
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=_acc(a.dtype))


@jax.custom_vjp
def _matmul_channels(x, kernel):
    return jnp.einsum("bhwi,io->bhwo", x, kernel, preferred_element_type=_acc(x.dtype)).astype(x.dtype)


def _matmul_channels_fwd(x, kernel):
    return _matmul_channels(x, kernel), (x, kernel)


def _matmul_channels_bwd(residuals, g):
    x, kernel = residuals
    return _matmul_channels(g, kernel.T), _contract_leading(x, g).astype(kernel.dtype)


_matmul_channels.defvjp(_matmul_channels_fwd, _matmul_channels_bwd)


def pointwise_conv(x, kernel):
    """x [B,H,W,I], kernel [1,1,I,O] or [I,O]."""
    return _matmul_channels(x, kernel.reshape(kernel.shape[-2:]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, stride, padding):
    """Cross-correlation of x [B,H,W,I] with kernel [k,k,I,O]; padding ((top, bottom), (left, right))."""
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_DIMS,
                                    preferred_element_type=_acc(x.dtype)).astype(x.dtype)


def _conv2d_fwd(x, kernel, stride, padding):
    return conv2d(x, kernel, stride, padding), (x, kernel)


def _patches(x, kernel_hw, stride, padding, out_hw):
    """[B, H', W', kh*kw*I]: the receptive field of every output pixel, in the kernel's (kh, kw, I) order."""
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    (kh, kw), (ho, wo) = kernel_hw, out_hw
    return jnp.concatenate([xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
                            for i in range(kh) for j in range(kw)], axis=-1)


def _phase(k, stride, pad_lo, phase, n_in, n_out):
    """Along one axis, input pixels stride*q + phase meet the kernel taps r, r + stride, ... Returns (the slice
    of the flipped kernel holding those taps, the padding of the output gradient, the phase's input size)
    for a stride-1 correlation of the output gradient that gives their input gradient."""
    r = (phase + pad_lo) % stride
    taps = -(-(k - r) // stride)
    n = -(-(n_in - phase) // stride)
    lo = taps - 1 - (phase + pad_lo) // stride
    return slice((k - 1 - r) % stride, None, stride), (lo, n + taps - 1 - lo - n_out), n


def _input_grad(g, kernel, in_hw, stride, padding):
    """d(conv2d)/dx contracted with g: one stride-1 conv2d of g per phase (a, b) of the input grid, with the
    flipped kernel taps that reach it; the phases are interleaved back."""
    flipped = kernel[::-1, ::-1].swapaxes(2, 3)          # [kh, kw, O, I]
    phases = []
    for a in range(stride):
        row = []
        for b in range(stride):
            rows, pad_h, n_h = _phase(kernel.shape[0], stride, padding[0][0], a, in_hw[0], g.shape[1])
            cols, pad_w, n_w = _phase(kernel.shape[1], stride, padding[1][0], b, in_hw[1], g.shape[2])
            sub = flipped[rows, cols]
            row.append(conv2d(_crop(g, (pad_h, pad_w)), sub, 1, _clip((pad_h, pad_w))) if sub.size else
                       jnp.zeros((g.shape[0], n_h, n_w, kernel.shape[2]), g.dtype))
        phases.append(row)
    if stride == 1:
        return phases[0][0]
    # dx[:, s q + a, s r + b] = phases[a][b][:, q, r]; the phases differ in size by at most one pixel.
    hq, wq = -(-in_hw[0] // stride), -(-in_hw[1] // stride)
    grid = jnp.stack([jnp.stack([jnp.pad(p, ((0, 0), (0, hq - p.shape[1]), (0, wq - p.shape[2]), (0, 0)))
                                 for p in row], axis=3) for row in phases], axis=2)   # [B, hq, s, wq, s, I]
    return grid.reshape(g.shape[0], hq * stride, wq * stride, -1)[:, :in_hw[0], :in_hw[1]]


def _crop(x, pad):
    """x cropped where a padding is negative (the conv then takes the non-negative part, `_clip`)."""
    (t, bo), (le, r) = pad
    return x[:, max(-t, 0):x.shape[1] - max(-bo, 0), max(-le, 0):x.shape[2] - max(-r, 0)]


def _clip(pad):
    return tuple((max(lo, 0), max(hi, 0)) for lo, hi in pad)


def _kernel_grad(x, g, kernel_shape, stride, padding):
    return _contract_leading(_patches(x, kernel_shape[:2], stride, padding, g.shape[1:3]), g).reshape(kernel_shape)


def _conv2d_bwd(stride, padding, residuals, g):
    x, kernel = residuals
    dx = _input_grad(g, kernel, x.shape[1:3], stride, padding)
    return dx.astype(x.dtype), _kernel_grad(x, g, kernel.shape, stride, padding).astype(kernel.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv2d(x, kernel, padding):
    """Stride-1 depthwise cross-correlation: x [B,H,W,C], kernel [k,k,1,C]."""
    kh, kw = kernel.shape[:2]
    h, w = _out_size(x.shape[1], kh, 1, padding[0]), _out_size(x.shape[2], kw, 1, padding[1])
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0))).astype(_acc(x.dtype))
    k = kernel.astype(_acc(x.dtype))
    return sum(xp[:, i:i + h, j:j + w, :] * k[i, j, 0] for i in range(kh) for j in range(kw)).astype(x.dtype)


def _depthwise_fwd(x, kernel, padding):
    return depthwise_conv2d(x, kernel, padding), (x, kernel)


def _depthwise_bwd(padding, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    (t, b), (le, r) = padding
    h, w = x.shape[1:3]
    # dx: the output gradient correlated with the flipped kernel ("full" padding, cropped to the input).
    pad = ((kh - 1 - t, h + t - g.shape[1]), (kw - 1 - le, w + le - g.shape[2]))
    dx = depthwise_conv2d(_crop(g, pad), kernel[::-1, ::-1], _clip(pad))
    # dk[i, j, c] = sum over b, h, w of xp[b, h + i, w + j, c] g[b, h, w, c], the sums as matrix-vector
    # products: XLA:CPU reduces the leading axes of a product far slower (transposes, then a reduce-window).
    xp, g = lax.optimization_barrier((jnp.pad(x, ((0, 0), *padding, (0, 0))), g))
    ones = jnp.ones((g.size // g.shape[-1],), _acc(x.dtype))
    dk = [jnp.matmul(ones, (xp[:, i:i + g.shape[1], j:j + g.shape[2]] * g).reshape(ones.size, -1),
                     preferred_element_type=_acc(x.dtype)) for i in range(kh) for j in range(kw)]
    return dx, jnp.stack(dk).reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv2d.defvjp(_depthwise_fwd, _depthwise_bwd)
