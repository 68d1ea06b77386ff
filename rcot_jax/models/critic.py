"""The official potential network F (`F_net(patch_size)`): a fixed-input-size convolutional critic."""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from rcot_jax.models import conv
from rcot_jax.models.layers import Conv2d, Linear, cast

# (kernel, stride, padding, out channels / width, bias) of the ten convolutions, each followed by LeakyReLU(0.2).
# The official critic has width 64 (channels 64 ... 512).
CONV_LAYERS = (
    (5, 1, 2, 1, True), (4, 2, 1, 1, True),
    (3, 1, 1, 2, True), (4, 2, 1, 2, True),
    (3, 1, 1, 4, True), (4, 2, 1, 4, True),
    (3, 1, 1, 8, False), (4, 2, 1, 8, False),
    (3, 1, 1, 8, False), (4, 2, 1, 8, False),
)


class Critic(nn.Module):
    """F(y) -> one scalar per image. Accepts only P x P inputs (P divisible by 32), as the official critic.

    Features are flattened in PyTorch's NCHW order so that official `fc` weights map 1:1. `width` scales every
    convolution (64 = official); the fully connected layer `fc` maps the P*P/2 features to `fc_features`
    (None: P*P/8 as `Net_Restormer.F_net`; the MPRNet file's `Net.F_net`, P = 256, has 2048). `dtype` is the
    computation dtype (bfloat16: mixed precision); parameters and the output are float32.
    """
    patch_size: int = 128
    width: int = 64
    fc_features: Optional[int] = None
    dtype: Any = None                 # computation dtype; None: the input's
    conv_impl: str = "auto"           # convolutions: 'auto' | 'xla' | 'custom' (models/conv.py)

    @conv.with_implementation
    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        if p % 32:
            raise ValueError(f"Critic: patch_size={p} must be divisible by 32")
        if x.shape[1:3] != (p, p):
            raise ValueError(f"Critic(patch_size={p}) got input of spatial size {x.shape[1]}x{x.shape[2]}")
        x = cast(x, self.dtype)
        for i, (k, stride, pad, mult, bias) in enumerate(CONV_LAYERS):
            x = Conv2d(mult * self.width, k, stride=stride, padding=pad, use_bias=bias,
                       kernel_init=nn.initializers.normal(0.02), name=f"features_{2 * i}")(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        x = Linear(self.fc_features or p * p // 8, name="fc")(x)
        x = nn.leaky_relu(Linear(64, name="fc1")(x), 0.2)
        out = Linear(1, name="fc2")(x)[:, 0]
        return out.astype(jnp.promote_types(out.dtype, jnp.float32))
