"""Two-pass RCOT map on the MPRNet stage-1 backbone: the paper's network (the released pretrained weights).

Names follow the official `Net.T_net`. SAM keeps only its image branch (`conv2`): the official forward
discards SAM's feature output, so `conv1`/`conv3` never affect T(x). The residual encoder's CSFF convs, which
the official code constructs but never calls, are left out.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rcot_jax.models import conv
from rcot_jax.models.layers import Conv2d, bilinear_downsample_x2, bilinear_upsample_x2, cast, remat


def prelu(x, slope):
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


class CALayer(nn.Module):
    """Channel attention: global average pool -> 1x1 n -> n/r -> ReLU -> 1x1 n/r -> n -> sigmoid -> scale."""
    reduction: int

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        y = x.mean(axis=(1, 2), keepdims=True, dtype=jnp.promote_types(x.dtype, jnp.float32)).astype(x.dtype)
        y = nn.relu(Conv2d(c // self.reduction, 1, name="conv_du_0")(y))
        return x * jax.nn.sigmoid(Conv2d(c, 1, name="conv_du_2")(y))


class CAB(nn.Module):
    """Channel Attention Block: conv3x3 -> PReLU -> conv3x3 -> channel attention, + input."""
    reduction: int

    @nn.compact
    def __call__(self, x, slope):
        c = x.shape[-1]
        y = Conv2d(c, 3, name="body_0")(x)
        y = Conv2d(c, 3, name="body_2")(prelu(y, slope))
        return CALayer(self.reduction, name="CA")(y) + x


class CABs(nn.Module):
    num_blocks: int
    reduction: int
    remat: str = "none"

    @nn.compact
    def __call__(self, x, slope):
        block = remat(CAB, self.remat)
        for i in range(self.num_blocks):
            x = block(self.reduction, name=str(i))(x, slope)
        return x


class Encoder(nn.Module):
    """Three scales of `cabs` CABs (official: 2); bilinear x0.5 then 1x1 conv adding `scale_unetfeats` channels
    between scales."""
    scale_unetfeats: int
    reduction: int
    cabs: int
    remat: str = "none"

    @nn.compact
    def __call__(self, x, slope):
        s, r, n = self.scale_unetfeats, self.reduction, self.cabs
        enc1 = CABs(n, r, self.remat, name="encoder_level1")(x, slope)
        x = Conv2d(enc1.shape[-1] + s, 1, name="down12")(bilinear_downsample_x2(enc1))
        enc2 = CABs(n, r, self.remat, name="encoder_level2")(x, slope)
        x = Conv2d(enc2.shape[-1] + s, 1, name="down23")(bilinear_downsample_x2(enc2))
        enc3 = CABs(n, r, self.remat, name="encoder_level3")(x, slope)
        return enc1, enc2, enc3


class Decoder(nn.Module):
    """Mirror of the encoder; skips pass through a CAB and are added after bilinear x2 + 1x1 conv."""
    scale_unetfeats: int
    reduction: int
    cabs: int
    remat: str = "none"

    @nn.compact
    def __call__(self, feats, slope):
        enc1, enc2, enc3 = feats
        r, n = self.reduction, self.cabs
        cab = remat(CAB, self.remat)
        dec3 = CABs(n, r, self.remat, name="decoder_level3")(enc3, slope)
        x = Conv2d(enc2.shape[-1], 1, name="up32")(bilinear_upsample_x2(dec3))
        x = x + cab(r, name="skip_attn2")(enc2, slope)
        dec2 = CABs(n, r, self.remat, name="decoder_level2")(x, slope)
        x = Conv2d(enc1.shape[-1], 1, name="up21")(bilinear_upsample_x2(dec2))
        x = x + cab(r, name="skip_attn1")(enc1, slope)
        return CABs(n, r, self.remat, name="decoder_level1")(x, slope)


class MPRNetRCOT(nn.Module):
    """T(x): base pass (shallow features, encoder, decoder, SAM image), residual r = x - first output, residual
    stem + residual encoder e_k, second pass through the same decoder and SAM on e_k + cond_scale * enc_k
    (as in the official code, the scale multiplies the image features) at all three scales.

    Input NHWC with H and W divisible by 4. One PReLU slope is shared by every CAB, as in the official code.
    `dtype` is the computation dtype (bfloat16: mixed precision; parameters and outputs stay float32); `remat`
    a rematerialisation policy for the CABs (`layers.REMAT_POLICIES`).
    """
    n_feat: int = 80
    scale_unetfeats: int = 48
    reduction: int = 4
    cabs_per_scale: int = 2           # CABs at each scale of the encoders and the decoder (official: 2)
    two_pass: bool = True
    cond_scale: float = 0.8
    dtype: Any = None                 # computation dtype; None: the input's
    remat: str = "none"
    conv_impl: str = "auto"           # convolutions: 'auto' | 'xla' | 'custom' (models/conv.py)

    @conv.with_implementation
    @nn.compact
    def __call__(self, deg_img, return_first_pass: bool = False):
        _, h, w, _ = deg_img.shape
        if h % 4 or w % 4:
            raise ValueError(f"MPRNetRCOT: input size {h}x{w} must be divisible by 4")
        n, s, r, k = self.n_feat, self.scale_unetfeats, self.reduction, self.cabs_per_scale
        slope = self.param("prelu", nn.initializers.constant(0.25), ())
        decoder = Decoder(s, r, k, self.remat, name="stage1_decoder")
        sam_conv2 = Conv2d(deg_img.shape[-1], 1, name="sam12_conv2")
        cab = remat(CAB, self.remat)

        fea = cab(r, name="shallow_feat1_1")(Conv2d(n, 3, name="shallow_feat1_0")(cast(deg_img, self.dtype)), slope)
        enc = Encoder(s, r, k, self.remat, name="stage1_encoder")(fea, slope)
        first = sam_conv2(decoder(enc, slope)) + deg_img        # in deg_img's dtype (float32)
        if not self.two_pass:
            return (first, first) if return_first_pass else first

        res = cast(deg_img - first, self.dtype)
        fea = cab(r, name="res_shallow_feat1_1")(Conv2d(n, 3, name="res_shallow_feat1_0")(res), slope)
        res_embedding = Encoder(s, r, k, self.remat, name="stage1_resencoder")(fea, slope)
        fused = tuple(e + self.cond_scale * f for e, f in zip(res_embedding, enc))
        out = sam_conv2(decoder(fused, slope)) + deg_img
        return (out, first) if return_first_pass else out
