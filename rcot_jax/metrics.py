"""Image-quality metrics as restoration papers report them, in named profiles.

Published PSNR / SSIM tables disagree because they measure different things (colour space, SSIM window,
border crop; `reference/field.md` section 3). A profile names one such protocol, so a number can be logged
next to the name of the tables it is comparable with. Every profile first quantises images to uint8
(round(x * 255)), as saved results are; PSNR has data range 255.

Images are float arrays in [0, 1], or uint8 / uint16 arrays read at their dtype's range (x / 255, x / 65535).
Floats outside [0, 1] (or NaN) are refused, never clipped: clip a network's output first, as saving it does. Under
an enclosing `jax.jit`, where values cannot be checked before the computation, `psnr_jax` / `ssim_jax` return NaN
for such an image instead. Greyscale images ([..., H, W, 1]) are their own luma under `y` (BasicSR's
`to_y_channel` leaves one-channel images as they are).

- `rgb` (default): PSNR over RGB; SSIM with the 11 x 11 Gaussian window (sigma 1.5, K1 0.01, K2 0.03,
  Wang et al. 2004) per channel, averaged over channels and over the valid region. Equal to scikit-image's
  `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1, data_range=255)` and to BasicSR `calculate_psnr/ssim(crop_border=0,
  test_y_channel=False)`: the Restormer and MPRNet tables for GoPro deblurring, colour denoising (CBSD68,
  Kodak24) and SOTS dehazing, and the PSNR of NAFNet's (whose SSIM is `nafnet`'s).
- `y`: PSNR / SSIM on the BT.601 luma of MATLAB's `rgb2ycbcr`, Y = 16 + (65.481 R + 128.553 G + 24.966 B)
  for R, G, B in [0, 1], on the 0-255 scale, not rounded (BasicSR `to_y_channel`); SSIM with the
  11 x 11 Gaussian window. Use `crop_border=scale` for super-resolution tables (EDSR, SwinIR, BasicSR) and
  `crop_border=0` for the single-task deraining tables (Restormer, MPRNet, MAXIM on Rain100L/H, Rain13K).
  MATLAB's `rgb2ycbcr` on uint8 images (Restormer's `evaluate_PSNR_SSIM.m`) also rounds Y to integers, which
  this profile does not: that lowers PSNR by about 0.1 dB near 40 dB and 0.02 dB near 31 dB (astronaut with
  Gaussian noise), and SSIM by about 1e-3.
- `allinone`: PSNR over RGB and scikit-image's default SSIM (7 x 7 uniform window, sample covariance, i.e.
  `structural_similarity(..., channel_axis=-1, data_range=255)`): the all-in-one tables of PromptIR, AdaIR,
  MoCE-IR and DA-RCOT. DA-RCOT's `evaluate.py` scores saved uint8 PNGs like this; PromptIR / AdaIR /
  MoCE-IR score the clipped float output with `data_range=1`, which differs only by the quantisation.
- `rcot_official`: what RCOT's own `evaluate.py` computes (`reference/rcot_method.md` 4.3): the same PSNR
  as `rgb`, and an SSIM whose "Gaussian" window is 2 x 2 (uniform, from `cv2.getGaussianKernel(2, 1)`,
  OpenCV anchor: the window covers the pixel and its upper-left neighbours), with the map cropped by
  [5:-5, 5:-5] and averaged over channels. Not comparable with any standard SSIM; for parity with the paper.
- `nafnet`: NAFNet's own `calculate_ssim` (its `ssim3d=True` default, used for its GoPro and SIDD tables) and the
  same PSNR as `rgb`: one SSIM over the H x W x C volume, with the 11 x 11 x 11 Gaussian window (sigma 1.5, the
  product of three 1-D windows), edges replicated on all three axes (a `Conv3d` with `padding_mode='replicate'`),
  so the map is full size and every pixel counts; mean over the map. The window mixes the channels, so colour
  structure both images share counts: on 12 full-size colour photographs with noise or blur it is 0.06-0.47
  above `rgb`'s SSIM (mean +0.25, `experiments/nafnet_ssim.py`). NAFNet takes the data range 1 instead of 255
  when the first image's largest value is at most 1 on the 0-255 scale (an all but black image); this profile
  always uses 255.

`psnr` / `ssim` are the NumPy references (float64). `psnr_jax` / `ssim_jax` compute the same in float32 under
`jax.jit` (profile and crop static) for evaluation on device; they quantise exactly as NumPy does and keep the
window statistics accurate (exact integer window sums for uniform windows, centred values for Gaussian ones).
`crop_border` removes that many pixels from every side before either metric, in every profile.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PROFILES = ("rgb", "y", "allinone", "rcot_official", "nafnet")

_SIGMA, _RADIUS = 1.5, 5
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
_LUMA = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr, BT.601, per unit of R, G, B in [0, 1]
_LUMA_INT = (65481, 128553, 24966)  # the same, times 1000: Y - 16 = (LUMA_INT . RGB_uint8) / 255000
_OFFICIAL_CROP = 5


def _gaussian_taps():
    t = np.arange(-_RADIUS, _RADIUS + 1)
    g = np.exp(-t ** 2 / (2 * _SIGMA ** 2))
    return g / g.sum()


class _Window(NamedTuple):
    space: str             # 'rgb' or 'y'
    taps: np.ndarray       # separable 1-D taps
    uniform: bool          # whether the taps are uniform (exact integer window sums)
    sample_cov: bool       # (co)variances with n - 1
    volume: bool = False   # over H, W and C with replicated edges, full size (nafnet); else per channel, valid only


_WINDOWS = {
    "rgb": _Window("rgb", _gaussian_taps(), False, False),
    "y": _Window("y", _gaussian_taps(), False, False),
    "allinone": _Window("rgb", np.full(7, 1 / 7), True, True),
    "rcot_official": _Window("rgb", np.full(2, 1 / 2), True, False),
    "nafnet": _Window("rgb", _gaussian_taps(), False, False, volume=True),
}


def _check_profile(profile):
    if profile not in PROFILES:
        raise ValueError(f"unknown metric profile {profile!r} (config.eval.metric_profile); "
                         f"valid profiles: {', '.join(PROFILES)}")


def _crop_map(profile):
    """How much of the valid SSIM map each profile keeps: (start, stop) offsets along H and W."""
    if profile == "rcot_official":
        # OpenCV's same-size 2x2 filter puts valid-map pixel k at output k + 1; its [5:-5] keeps valid [4:-5].
        return _OFFICIAL_CROP - 1, _OFFICIAL_CROP
    return 0, 0


def _min_size(profile):
    window = _WINDOWS[profile]
    start, stop = _crop_map(profile)
    return 1 if window.volume else len(window.taps) + start + stop


def _check_channels(shape, profile):
    if _WINDOWS[profile].space == "y" and shape[-1] not in (1, 3):
        raise ValueError(f"the 'y' metric profile takes RGB or greyscale images ([..., H, W, 3] or [..., H, W, 1]), "
                         f"got shape {tuple(shape)}")


def _check_size(shape, profile, crop_border):
    h, w = shape[-3] - 2 * crop_border, shape[-2] - 2 * crop_border
    n = _min_size(profile)
    if min(h, w) < n:
        what = (f"the {n}x{n} window" if profile != "rcot_official"
                else f"{n}x{n} (the official 2x2 window and [5:-5, 5:-5] crop)")
        raise ValueError(f"ssim ({profile}): images of size {h}x{w} are smaller than {what}")


def _crop(x, crop_border):
    return x[..., crop_border:x.shape[-3] - crop_border, crop_border:x.shape[-2] - crop_border, :]


# ----------------------------------------------------------------------------------------------- NumPy


def to_uint8(images):
    """round(clip(x, 0, 1) * 255) as uint8: how a result in [0, 1] is saved (values outside are clipped)."""
    return np.round(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


_INTEGER_RANGES = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


def _is_float(dtype):
    return jnp.issubdtype(dtype, jnp.floating)


def _check_dtype(dtype, fn):
    dtype = np.dtype(dtype)
    if not _is_float(dtype) and dtype not in _INTEGER_RANGES:
        raise ValueError(f"{fn}: {dtype} images are not supported; pass floats in [0, 1], or uint8 / uint16 images "
                         f"(read as x / 255, x / 65535)")


def _check_range(images, fn):
    """Refuses float images with values outside [0, 1] or NaN (integer images are in range by their dtype)."""
    if _is_float(images.dtype) and images.size:
        lo, hi = float(images.min()), float(images.max())
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"{fn}: float images must lie in [0, 1], got values in [{lo:.6g}, {hi:.6g}]; clip "
                             f"them first (as saving a result does) or pass uint8 / uint16 images")


def _as_uint8(images, fn):
    """Images as their saved uint8 values: floats in [0, 1] quantised, uint8 as is, uint16 rounded to 8 bits."""
    x = np.asarray(images)
    _check_dtype(x.dtype, fn)
    _check_range(x, fn)
    if x.dtype == np.uint8:
        return x
    return to_uint8(x / _INTEGER_RANGES[x.dtype] if x.dtype in _INTEGER_RANGES else x)


def _channels(images, profile, crop_border, fn):
    """Quantised, cropped float64 images in the profile's colour space: [..., H, W, 3] or [..., H, W, 1]."""
    x = _crop(_as_uint8(images, fn).astype(np.float64), crop_border)
    if _WINDOWS[profile].space == "y" and x.shape[-1] == 3:
        x = 16.0 + x @ (np.array(_LUMA) / 255.0)
        x = x[..., None]
    return x


def psnr(a, b, profile="rgb", *, crop_border=0):
    """PSNR in dB of each image pair: a, b [..., H, W, C] (floats in [0, 1], uint8 or uint16) -> [...]."""
    _check_profile(profile)
    _check_channels(np.shape(a), profile)
    err = (_channels(a, profile, crop_border, "psnr") - _channels(b, profile, crop_border, "psnr")) ** 2
    mse = err.mean(axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0 ** 2 / mse)


def _filter_valid(x, taps):
    """Separable filter with 1-D taps over axes -3 and -2, keeping only fully covered pixels."""
    n = len(taps)
    h, w = x.shape[-3] - n + 1, x.shape[-2] - n + 1
    x = sum(taps[i] * x[..., i:i + h, :, :] for i in range(n))
    return sum(taps[i] * x[..., :, i:i + w, :] for i in range(n))


def _filter_volume(x, taps, xp=np):
    """Separable filter with 1-D taps over axes -3, -2 and -1, same size, edges replicated (PyTorch's
    `padding_mode='replicate'`)."""
    r = len(taps) // 2
    for axis in (-3, -2, -1):
        x = xp.moveaxis(x, axis, -1)
        padded = xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(r, r)], mode="edge")
        n = x.shape[-1]
        x = xp.moveaxis(sum(t * padded[..., i:i + n] for i, t in enumerate(taps)), -1, axis)
    return x


def _ssim_from_moments(mx, my, vx, vy, cxy):
    return ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))


def ssim(a, b, profile="rgb", *, crop_border=0):
    """Mean SSIM of each image pair: a, b [..., H, W, C] (floats in [0, 1], uint8 or uint16) -> [...]
    (H, W >= the profile's window)."""
    _check_profile(profile)
    _check_channels(np.shape(a), profile)
    _check_size(np.shape(a), profile, crop_border)
    window = _WINDOWS[profile]
    taps = window.taps
    filt = (lambda v: _filter_volume(v, taps)) if window.volume else (lambda v: _filter_valid(v, taps))
    x, y = _channels(a, profile, crop_border, "ssim"), _channels(b, profile, crop_border, "ssim")
    mx, my = filt(x), filt(y)
    norm = len(taps) ** 2 / (len(taps) ** 2 - 1) if window.sample_cov else 1.0
    vx = norm * (filt(x * x) - mx * mx)
    vy = norm * (filt(y * y) - my * my)
    cxy = norm * (filt(x * y) - mx * my)
    s = _ssim_from_moments(mx, my, vx, vy, cxy)
    start, stop = _crop_map(profile)
    s = s[..., start:s.shape[-3] - stop, start:s.shape[-2] - stop, :]
    return s.mean(axis=(-3, -2, -1))


# ------------------------------------------------------------------------------------------------- JAX


def _to_uint8_jax(images):
    """round(clip(x, 0, 1) * 255) as integers, rounded as NumPy rounds the exact (float64) product.

    In float32, x * 255 can round onto a half-integer the exact product misses; the exact rounding error of
    the product (Dekker's two-product with a Veltkamp split of x) decides which side it is on.
    """
    x = jnp.clip(jnp.asarray(images, jnp.float32), 0.0, 1.0)
    t = x * 255.0
    c = x * 4097.0
    hi = c - (c - x)
    lo = x - hi
    err = (hi * 255.0 - t) + lo * 255.0  # x * 255 == t + err exactly
    floor = jnp.floor(t)
    tie = (t - floor == 0.5) & (err != 0)
    q = jnp.where(tie, floor + (err > 0), jnp.round(t))
    return q.astype(jnp.int32)


def _as_uint8_jax(images):
    """`_as_uint8` under jit, as int32: uint16 x -> round(x / 257) exactly (x / 65535 * 255 is never a tie)."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.int32)
    if images.dtype == jnp.uint16:
        return (2 * images.astype(jnp.int32) + 257) // 514
    return _to_uint8_jax(images)


def _luma_jax(q):
    """MATLAB rgb2ycbcr's Y on the 0-255 scale from uint8 RGB (as int32), [..., H, W, 1] float32; a greyscale
    image is its own luma."""
    if q.shape[-1] == 1:
        return q.astype(jnp.float32)
    y_int = q[..., 0] * _LUMA_INT[0] + q[..., 1] * _LUMA_INT[1] + q[..., 2] * _LUMA_INT[2]  # exact, < 2^26
    return (16.0 + y_int.astype(jnp.float32) / 255000.0)[..., None]


def _check_jax_inputs(a, b, profile, fn):
    """The checks NumPy's metrics make: profile, channels, dtype, and the [0, 1] range where the values are known
    (not traced; traced, the jitted metric gives NaN for such an image)."""
    _check_profile(profile)
    for x in (a, b):
        _check_channels(jnp.shape(x), profile)
        _check_dtype(jnp.result_type(x), fn)
        if not isinstance(x, jax.core.Tracer):
            _check_range(jnp.asarray(x), fn)


def _nan_out_of_range(a, b, result):
    """`result` [...], NaN where a float image of `a` or `b` has a value outside [0, 1] or NaN."""
    def bad(x):
        if not _is_float(x.dtype):
            return False
        return ~jnp.all((x >= 0) & (x <= 1), axis=(-3, -2, -1))
    return jnp.where(bad(a) | bad(b), jnp.nan, result)


@functools.partial(jax.jit, static_argnames=("profile", "crop_border"))
def _psnr_jax(a, b, profile, *, crop_border):
    d = _crop(_as_uint8_jax(a) - _as_uint8_jax(b), crop_border)  # exact integer differences
    if _WINDOWS[profile].space == "y" and d.shape[-1] == 3:
        d = ((d[..., 0] * _LUMA[0] + d[..., 1] * _LUMA[1] + d[..., 2] * _LUMA[2]) / 255.0)[..., None]
    else:
        d = d.astype(jnp.float32)
    mse = jnp.mean(d * d, axis=(-3, -2, -1))
    return _nan_out_of_range(a, b, 10.0 * jnp.log10(255.0 ** 2 / mse))


def psnr_jax(a, b, profile="rgb", *, crop_border=0):
    """`psnr` in float32 under jit: a, b [..., H, W, C] (floats in [0, 1], uint8 or uint16) -> [...]."""
    _check_jax_inputs(a, b, profile, "psnr_jax")
    return _psnr_jax(a, b, profile, crop_border=crop_border)


def _box_sum_valid(x, n):
    """Sum over every n x n window of axes -3, -2 (valid windows only), exact for integer input."""
    h, w = x.shape[-3] - n + 1, x.shape[-2] - n + 1
    x = sum(x[..., i:i + h, :, :] for i in range(n))
    return sum(x[..., :, i:i + w, :] for i in range(n))


def _uniform_moments(x, y, n, sample_cov):
    """Window means and (co)variances of integer images from exact int32 window sums."""
    sx, sy = _box_sum_valid(x, n), _box_sum_valid(y, n)
    sxx, syy, sxy = _box_sum_valid(x * x, n), _box_sum_valid(y * y, n), _box_sum_valid(x * y, n)
    count = n * n
    denom = float(count * (count - 1) if sample_cov else count * count)
    f = lambda v: v.astype(jnp.float32)
    return (f(sx) / count, f(sy) / count, f(count * sxx - sx * sx) / denom, f(count * syy - sy * sy) / denom,
            f(count * sxy - sx * sy) / denom)


def _gaussian_moments(x, y, taps, volume):
    """Window means and (co)variances with float32 weights, on values centred per image (and per channel unless
    the window spans the channels)."""
    taps = [float(t) for t in taps]
    filt = (lambda v: _filter_volume(v, taps, jnp)) if volume else (lambda v: _filter_valid(v, taps))
    axes = (-3, -2, -1) if volume else (-3, -2)
    cx, cy = jnp.mean(x, axis=axes, keepdims=True), jnp.mean(y, axis=axes, keepdims=True)
    x, y = x - cx, y - cy
    mx, my = filt(x), filt(y)
    return mx + cx, my + cy, filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my


@functools.partial(jax.jit, static_argnames=("profile", "crop_border"))
def _ssim_jax(a, b, profile, *, crop_border):
    _check_size(a.shape, profile, crop_border)
    window = _WINDOWS[profile]
    x, y = _crop(_as_uint8_jax(a), crop_border), _crop(_as_uint8_jax(b), crop_border)
    if window.uniform:  # integer RGB (uniform windows are only used on RGB)
        moments = _uniform_moments(x, y, len(window.taps), window.sample_cov)
    elif window.space == "y":
        moments = _gaussian_moments(_luma_jax(x), _luma_jax(y), window.taps, window.volume)
    else:
        moments = _gaussian_moments(x.astype(jnp.float32), y.astype(jnp.float32), window.taps, window.volume)
    s = _ssim_from_moments(*moments)
    start, stop = _crop_map(profile)
    s = s[..., start:s.shape[-3] - stop, start:s.shape[-2] - stop, :]
    return _nan_out_of_range(a, b, jnp.mean(s, axis=(-3, -2, -1)))


def ssim_jax(a, b, profile="rgb", *, crop_border=0):
    """`ssim` in float32 under jit: a, b [..., H, W, C] (floats in [0, 1], uint8 or uint16) -> [...]."""
    _check_jax_inputs(a, b, profile, "ssim_jax")
    return _ssim_jax(a, b, profile, crop_border=crop_border)
