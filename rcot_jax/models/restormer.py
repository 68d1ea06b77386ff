"""Two-pass RCOT map on the Restormer/PromptIR backbone: the network the official `trainer.py` trains.

Names follow the official `Net_Restormer.T_net` so a reader can hold both side by side; the PromptIR
leftovers that its forward pass never uses are left out, and the latent stack, which the official forward
evaluates twice on the same input, is evaluated once (identical value).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rcot_jax.models import conv
from rcot_jax.models.layers import Conv2d, LayerNorm, cast, pixel_shuffle, pixel_unshuffle, remat


class MDTA(nn.Module):
    """Multi-Dconv head Transposed Attention: channel-wise (C/heads x C/heads) attention per head."""
    num_heads: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"MDTA: {c} channels are not divisible by {self.num_heads} heads")
        qkv = Conv2d(3 * c, 1, name="qkv")(x)
        qkv = Conv2d(3 * c, 3, groups=3 * c, name="qkv_dwconv")(qkv)
        # [B, H, W, 3C] -> three [B, heads, C/heads, HW]; channel index = head * (C/heads) + c as in PyTorch.
        q, k, v = (t.reshape(b, h * w, self.num_heads, c // self.num_heads).transpose(0, 2, 3, 1)
                   for t in jnp.split(qkv, 3, axis=-1))

        acc = jnp.promote_types(x.dtype, jnp.float32)   # norms, logits and softmax in float32 under bf16

        def l2_normalize(t):  # torch.nn.functional.normalize(dim=-1)
            t = t.astype(acc)
            return (t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)).astype(x.dtype)

        temperature = self.param("temperature", nn.initializers.ones, (self.num_heads, 1, 1))
        logits = jnp.matmul(l2_normalize(q), l2_normalize(k).swapaxes(-1, -2), preferred_element_type=acc)
        attn = jax.nn.softmax(logits * temperature, axis=-1).astype(x.dtype)
        out = jnp.matmul(attn, v, preferred_element_type=acc).astype(x.dtype)
        return Conv2d(c, 1, name="project_out")(out.transpose(0, 3, 1, 2).reshape(b, h, w, c))


class GDFN(nn.Module):
    """Gated-Dconv Feed-forward Network with exact (erf) GELU gating."""
    ffn_expansion_factor: float

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        hidden = int(c * self.ffn_expansion_factor)
        x = Conv2d(2 * hidden, 1, name="project_in")(x)
        x1, x2 = jnp.split(Conv2d(2 * hidden, 3, groups=2 * hidden, name="dwconv")(x), 2, axis=-1)
        return Conv2d(c, 1, name="project_out")(jax.nn.gelu(x1, approximate=False) * x2)


class TransformerBlock(nn.Module):
    num_heads: int
    ffn_expansion_factor: float

    @nn.compact
    def __call__(self, x):
        x = x + MDTA(self.num_heads, name="attn")(LayerNorm(name="norm1")(x))
        return x + GDFN(self.ffn_expansion_factor, name="ffn")(LayerNorm(name="norm2")(x))


class Blocks(nn.Module):
    """A stack of `num_blocks` transformer blocks (an `nn.Sequential` of TransformerBlocks in the official code)."""
    num_blocks: int
    num_heads: int
    ffn_expansion_factor: float
    remat: str = "none"

    @nn.compact
    def __call__(self, x):
        block = remat(TransformerBlock, self.remat)
        for i in range(self.num_blocks):
            x = block(self.num_heads, self.ffn_expansion_factor, name=str(i))(x)
        return x


class Downsample(nn.Module):
    """conv3x3 n -> n/2, PixelUnshuffle(2): n -> 2n channels at half resolution."""

    @nn.compact
    def __call__(self, x):
        return pixel_unshuffle(Conv2d(x.shape[-1] // 2, 3, name="conv")(x))


class Upsample(nn.Module):
    """conv3x3 n -> 2n, PixelShuffle(2): n -> n/2 channels at double resolution."""

    @nn.compact
    def __call__(self, x):
        return pixel_shuffle(Conv2d(x.shape[-1] * 2, 3, name="conv")(x))


class Decoder(nn.Module):
    """The official decoder with `decoder=True` (PromptIR's "noise_level" blocks kept), refinement and output.

    Called once per pass with shared weights; the skip features come from the first-pass image encoder.
    """
    dim: int
    num_blocks: Sequence[int]
    num_refinement_blocks: int
    heads: Sequence[int]
    ffn_expansion_factor: float
    remat: str = "none"

    @nn.compact
    def __call__(self, latent, skips, inp_img):
        d, nb, hd, ffn = self.dim, self.num_blocks, self.heads, self.ffn_expansion_factor
        block = remat(TransformerBlock, self.remat)

        def blocks(n, heads, name):
            return Blocks(n, heads, ffn, self.remat, name=name)

        out_enc_level1, out_enc_level2, out_enc_level3 = skips
        latent = block(hd[2], ffn, name="noise_level3")(latent)                             # 8d
        latent = Conv2d(4 * d, 1, name="reduce_noise_level3")(latent)                       # 8d -> 4d
        x = jnp.concatenate([Upsample(name="up4_3")(latent), out_enc_level3], axis=-1)      # 2d + 4d
        x = Conv2d(4 * d, 1, name="reduce_chan_level3")(x)
        x = blocks(nb[2], hd[2], "decoder_level3")(x)
        x = block(hd[2], ffn, name="noise_level2")(x)                                       # 4d
        x = Conv2d(4 * d, 1, name="reduce_noise_level2")(x)
        x = jnp.concatenate([Upsample(name="up3_2")(x), out_enc_level2], axis=-1)           # 2d + 2d
        x = Conv2d(2 * d, 1, name="reduce_chan_level2")(x)
        x = blocks(nb[1], hd[1], "decoder_level2")(x)
        x = block(hd[2], ffn, name="noise_level1")(x)                                       # 2d
        x = Conv2d(2 * d, 1, name="reduce_noise_level1")(x)
        x = jnp.concatenate([Upsample(name="up2_1")(x), out_enc_level1], axis=-1)           # d + d
        x = blocks(nb[0], hd[0], "decoder_level1")(x)
        x = blocks(self.num_refinement_blocks, hd[0], "refinement")(x)
        return Conv2d(inp_img.shape[-1], 3, name="output")(x) + inp_img     # in inp_img's dtype (float32)


class RestormerRCOT(nn.Module):
    """T(x): base pass, residual r = x - first output, residual embedding e, second pass with latent + s * e.

    Input NHWC with H and W divisible by 8. `two_pass=False` is the single-pass backbone (the ablation
    baseline). `__call__(x, return_first_pass=True)` also returns the first-pass output. `dtype` is the
    computation dtype (bfloat16: mixed precision; parameters stay float32, outputs are float32); `remat` a
    rematerialisation policy for the transformer blocks (`layers.REMAT_POLICIES`).
    """
    dim: int = 48
    num_blocks: Sequence[int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: Sequence[int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    two_pass: bool = True
    cond_scale: float = 0.8
    dtype: Any = None                 # computation dtype; None: the input's
    remat: str = "none"
    conv_impl: str = "auto"           # convolutions: 'auto' | 'xla' | 'custom' (models/conv.py)

    @conv.with_implementation
    @nn.compact
    def __call__(self, inp_img, return_first_pass: bool = False):
        _, h, w, _ = inp_img.shape
        if h % 8 or w % 8:
            raise ValueError(f"RestormerRCOT: input size {h}x{w} must be divisible by 8")
        d, nb, hd, ffn = self.dim, self.num_blocks, self.heads, self.ffn_expansion_factor

        def blocks(n, heads, name):
            return Blocks(n, heads, ffn, self.remat, name=name)

        patch_embed = Conv2d(d, 3, name="patch_embed")
        down3_4 = Downsample(name="down3_4")
        latent_blocks = blocks(nb[3], hd[3], "latent")
        decoder = Decoder(d, nb, self.num_refinement_blocks, hd, ffn, self.remat, name="decoder")

        out_enc_level1 = blocks(nb[0], hd[0], "encoder_level1")(patch_embed(cast(inp_img, self.dtype)))
        out_enc_level2 = blocks(nb[1], hd[1], "encoder_level2")(Downsample(name="down1_2")(out_enc_level1))
        out_enc_level3 = blocks(nb[2], hd[2], "encoder_level3")(Downsample(name="down2_3")(out_enc_level2))
        latent = latent_blocks(down3_4(out_enc_level3))
        skips = (out_enc_level1, out_enc_level2, out_enc_level3)
        first = decoder(latent, skips, inp_img)
        if not self.two_pass:
            return (first, first) if return_first_pass else first

        # Residual encoder; it shares `patch_embed` and `down3_4` with the image path, as the official code does.
        res = cast(inp_img - first, self.dtype)
        r = blocks(nb[0], hd[0], "resencoder_level1")(patch_embed(res))
        r = blocks(nb[1], hd[1], "resencoder_level2")(Downsample(name="resdown1_2")(r))
        r = blocks(nb[2], hd[2], "resencoder_level3")(Downsample(name="resdown2_3")(r))
        reslatent = blocks(nb[3], hd[3], "reslatent")(down3_4(r))
        out = decoder(latent + self.cond_scale * reslatent, skips, inp_img)
        return (out, first) if return_first_pass else out
