"""Layers with PyTorch semantics (padding, initialisation, channel order), NHWC.

The official RCOT networks are PyTorch modules; these layers reproduce their arithmetic exactly so that
training dynamics match and official weights map one to one (a PyTorch OIHW conv weight is this module's
HWIO kernel after a transpose).
"""
import math
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from rcot_jax.models import conv


def torch_default_init(fan_in: int) -> Callable:
    """PyTorch's default for Conv2d/Linear weights and biases: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=float):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv2d(nn.Module):
    """`torch.nn.Conv2d` in NHWC: symmetric explicit padding (default k // 2), groups, optional bias."""
    features: int
    kernel_size: int
    stride: int = 1
    padding: Optional[int] = None
    groups: int = 1
    use_bias: bool = False
    kernel_init: Optional[Callable] = None  # default: PyTorch's

    @nn.compact
    def __call__(self, x):
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(f"Conv2d: channels {in_features}->{self.features} not divisible by groups={self.groups}")
        k = self.kernel_size
        fan_in = in_features // self.groups * k * k
        pad = k // 2 if self.padding is None else self.padding
        kernel = self.param("kernel", self.kernel_init or torch_default_init(fan_in),
                            (k, k, in_features // self.groups, self.features))
        padding = ((pad, pad), (pad, pad))
        kernel = kernel.astype(x.dtype)      # mixed precision: the computation follows the activations' dtype
        depthwise = self.groups == in_features == self.features and self.stride == 1
        if conv.current() == "xla" or (self.groups != 1 and not depthwise):   # other groups: not in RCOT's nets
            y = conv.xla_conv(x, kernel, self.stride, padding, self.groups)
        elif depthwise:
            y = conv.depthwise_conv2d(x, kernel, padding)
        elif k == 1 and self.stride == 1 and pad == 0:
            y = conv.pointwise_conv(x, kernel)
        else:
            y = conv.conv2d(x, kernel, self.stride, padding)
        if self.use_bias:
            y = y + self.param("bias", torch_default_init(fan_in), (self.features,)).astype(x.dtype)
        return checkpoint_name(y, "conv")    # what remat 'dots' keeps, whichever conv_impl


class Linear(nn.Module):
    """`torch.nn.Linear` with PyTorch's default initialisation; computes in x's dtype, accumulates in float32."""
    features: int

    @nn.compact
    def __call__(self, x):
        init = torch_default_init(x.shape[-1])
        kernel = self.param("kernel", init, (x.shape[-1], self.features)).astype(x.dtype)
        y = jnp.matmul(x, kernel, preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
        return (y + self.param("bias", init, (self.features,))).astype(x.dtype)


class LayerNorm(nn.Module):
    """Restormer's 'WithBias' LayerNorm over channels: biased variance, eps 1e-5."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))     # statistics in float32 under bf16
        mu = x32.mean(-1, keepdims=True)
        var = ((x32 - mu) ** 2).mean(-1, keepdims=True)
        y = (x32 - mu) / jnp.sqrt(var + 1e-5)
        y = y * self.param("scale", nn.initializers.ones, (c,)) + self.param("bias", nn.initializers.zeros, (c,))
        return y.astype(x.dtype)


def cast(x, dtype):
    """x in the computation dtype `dtype` (None: unchanged)."""
    return x if dtype is None else x.astype(dtype)


# 'dots' keeps what costs FLOPs to recompute, the convolutions' and matmuls' outputs, and recomputes the rest (norms,
# activations, gating, attention's batched products). The convolutions are named (`Conv2d`): as primitives they
# are `conv_general_dilated` (conv_impl 'xla') or hidden in custom-gradient functions ('custom'), which JAX's
# dots policies do not see; with those alone 'dots' kept nothing more than 'full' on either implementation.
REMAT_POLICIES = {
    "none": None,                                                       # keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,                   # recompute each block in backward
    "dots": jax.checkpoint_policies.save_from_both_policies(                 # keep conv and matmul outputs
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        jax.checkpoint_policies.save_only_these_names("conv")),
}


def remat(module_class, policy: str):
    """`module_class`, rematerialised under `policy` (a key of REMAT_POLICIES): its activations are recomputed
    in the backward pass instead of being kept, trading compute for memory. Parameters are unchanged."""
    if policy not in REMAT_POLICIES:
        raise ValueError(f"config.model.remat={policy!r}, expected one of {tuple(REMAT_POLICIES)}")
    if policy == "none":
        return module_class
    return nn.remat(module_class, policy=REMAT_POLICIES[policy])


def pixel_unshuffle(x, r: int = 2):
    """`torch.nn.PixelUnshuffle(r)` in NHWC: output channel c*r*r + i*r + j holds input pixel (r*h+i, r*w+j) of c."""
    b, h, w, c = x.shape
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle: spatial size {h}x{w} is not divisible by {r}")
    x = x.reshape(b, h // r, r, w // r, r, c)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // r, w // r, c * r * r)


def pixel_shuffle(x, r: int = 2):
    """`torch.nn.PixelShuffle(r)` in NHWC, the inverse of `pixel_unshuffle`."""
    b, h, w, c = x.shape
    if c % (r * r):
        raise ValueError(f"pixel_shuffle: {c} channels are not divisible by {r * r}")
    x = x.reshape(b, h, w, c // (r * r), r, r)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c // (r * r))


def bilinear_downsample_x2(x):
    """`F.interpolate(scale_factor=0.5, mode='bilinear', align_corners=False)`: output pixel o samples input
    coordinate 2o + 0.5, so it is exactly the mean of each 2x2 block (no antialiasing)."""
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"bilinear_downsample_x2: spatial size {h}x{w} must be even")
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample_axis_x2(x, axis):
    # align_corners=False: output 2k samples k - 1/4, output 2k+1 samples k + 1/4; the source is clamped at edges.
    n = x.shape[axis]
    prev = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                           jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def bilinear_upsample_x2(x):
    """`F.interpolate(scale_factor=2, mode='bilinear', align_corners=False)` in NHWC."""
    return _upsample_axis_x2(_upsample_axis_x2(x, 1), 2)
