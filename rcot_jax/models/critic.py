"""The official potential network F (`F_net(patch_size)`): a fixed-input-size convolutional critic."""
import flax.linen as nn
import jax.numpy as jnp

from rcot_jax.models.layers import Conv2d, Linear

# (kernel, stride, padding, out channels, bias) of the ten convolutions, each followed by LeakyReLU(0.2).
CONV_LAYERS = (
    (5, 1, 2, 64, True), (4, 2, 1, 64, True),
    (3, 1, 1, 128, True), (4, 2, 1, 128, True),
    (3, 1, 1, 256, True), (4, 2, 1, 256, True),
    (3, 1, 1, 512, False), (4, 2, 1, 512, False),
    (3, 1, 1, 512, False), (4, 2, 1, 512, False),
)


class Critic(nn.Module):
    """F(y) -> one scalar per image. Accepts only P x P inputs (P divisible by 32), as the official critic.

    Features are flattened in PyTorch's NCHW order so that official `fc` weights map 1:1.
    """
    patch_size: int = 128

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        if p % 32:
            raise ValueError(f"Critic: patch_size={p} must be divisible by 32")
        if x.shape[1:3] != (p, p):
            raise ValueError(f"Critic(patch_size={p}) got input of spatial size {x.shape[1]}x{x.shape[2]}")
        for i, (k, stride, pad, c, bias) in enumerate(CONV_LAYERS):
            x = Conv2d(c, k, stride=stride, padding=pad, use_bias=bias, kernel_init=nn.initializers.normal(0.02),
                       name=f"features_{2 * i}")(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        num_fea = p * p // 2
        x = Linear(num_fea // 4, name="fc")(x)
        x = nn.leaky_relu(Linear(64, name="fc1")(x), 0.2)
        return Linear(1, name="fc2")(x)[:, 0]
