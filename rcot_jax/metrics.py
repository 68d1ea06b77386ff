"""Image-quality metrics as restoration papers report them, in named profiles.

Published PSNR / SSIM tables disagree because they measure different things (colour space, SSIM window,
border crop; `reference/field.md` section 3). A profile names one such protocol, so a number can be logged
next to the name of the tables it is comparable with. Every profile first quantises images to uint8
(round(clip(x, 0, 1) * 255)), as saved results are; PSNR has data range 255.

- `rgb` (default): PSNR over RGB; SSIM with the 11 x 11 Gaussian window (sigma 1.5, K1 0.01, K2 0.03,
  Wang et al. 2004) per channel, averaged over channels and over the valid region. Equal to scikit-image's
  `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1, data_range=255)` and to BasicSR `calculate_psnr/ssim(crop_border=0,
  test_y_channel=False)`: the Restormer / NAFNet / MPRNet tables for GoPro deblurring, colour denoising
  (CBSD68, Kodak24) and SOTS dehazing.
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

`psnr` / `ssim` are the NumPy references (float64). `psnr_jax` / `ssim_jax` compute the same in float32 under
`jax.jit` (profile and crop static) for evaluation on device; they quantise exactly as NumPy does and keep the
window statistics accurate (exact integer window sums for uniform windows, centred values for Gaussian ones).
`crop_border` removes that many pixels from every side before either metric, in every profile.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

PROFILES = ("rgb", "y", "allinone", "rcot_official")

_SIGMA, _RADIUS = 1.5, 5
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
_LUMA = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr, BT.601, per unit of R, G, B in [0, 1]
_LUMA_INT = (65481, 128553, 24966)  # the same, times 1000: Y - 16 = (LUMA_INT . RGB_uint8) / 255000
_OFFICIAL_CROP = 5


def _gaussian_taps():
    t = np.arange(-_RADIUS, _RADIUS + 1)
    g = np.exp(-t ** 2 / (2 * _SIGMA ** 2))
    return g / g.sum()


# profile -> (colour space, SSIM window: separable taps, whether they are uniform, sample covariance)
_WINDOWS = {
    "rgb": ("rgb", _gaussian_taps(), False, False),
    "y": ("y", _gaussian_taps(), False, False),
    "allinone": ("rgb", np.full(7, 1 / 7), True, True),
    "rcot_official": ("rgb", np.full(2, 1 / 2), True, False),
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
    taps = _WINDOWS[profile][1]
    start, stop = _crop_map(profile)
    return len(taps) + start + stop


def _check_size(shape, profile, crop_border):
    h, w = shape[-3] - 2 * crop_border, shape[-2] - 2 * crop_border
    n = _min_size(profile)
    if min(h, w) < n:
        what = (f"the {n}x{n} window" if profile != "rcot_official"
                else f"{n}x{n} (the official 2x2 window and [5:-5, 5:-5] crop)")
        raise ValueError(f"ssim ({profile}): images of size {h}x{w} are smaller than {what}")
    if _WINDOWS[profile][0] == "y" and shape[-1] != 3:
        raise ValueError(f"the 'y' metric profile needs RGB images, got {shape[-1]} channels")


def _crop(x, crop_border):
    return x[..., crop_border:x.shape[-3] - crop_border, crop_border:x.shape[-2] - crop_border, :]


# ----------------------------------------------------------------------------------------------- NumPy


def to_uint8(images):
    return np.round(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _channels(images, profile, crop_border):
    """Quantised, cropped float64 images in the profile's colour space: [..., H, W, 3] or [..., H, W, 1]."""
    x = _crop(to_uint8(images).astype(np.float64), crop_border)
    if _WINDOWS[profile][0] == "y":
        x = 16.0 + x @ (np.array(_LUMA) / 255.0)
        x = x[..., None]
    return x


def psnr(a, b, profile="rgb", *, crop_border=0):
    """PSNR in dB of each image pair: a, b [..., H, W, C] in [0, 1] -> [...]."""
    _check_profile(profile)
    err = (_channels(a, profile, crop_border) - _channels(b, profile, crop_border)) ** 2
    mse = err.mean(axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0 ** 2 / mse)


def _filter_valid(x, taps):
    """Separable filter with 1-D taps over axes -3 and -2, keeping only fully covered pixels."""
    n = len(taps)
    h, w = x.shape[-3] - n + 1, x.shape[-2] - n + 1
    x = sum(taps[i] * x[..., i:i + h, :, :] for i in range(n))
    return sum(taps[i] * x[..., :, i:i + w, :] for i in range(n))


def _ssim_from_moments(mx, my, vx, vy, cxy):
    return ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))


def ssim(a, b, profile="rgb", *, crop_border=0):
    """Mean SSIM of each image pair: a, b [..., H, W, C] in [0, 1] -> [...] (H, W >= the profile's window)."""
    _check_profile(profile)
    _check_size(np.shape(a), profile, crop_border)
    _, taps, _, sample_cov = _WINDOWS[profile]
    x, y = _channels(a, profile, crop_border), _channels(b, profile, crop_border)
    mx, my = _filter_valid(x, taps), _filter_valid(y, taps)
    norm = len(taps) ** 2 / (len(taps) ** 2 - 1) if sample_cov else 1.0
    vx = norm * (_filter_valid(x * x, taps) - mx * mx)
    vy = norm * (_filter_valid(y * y, taps) - my * my)
    cxy = norm * (_filter_valid(x * y, taps) - mx * my)
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


def _luma_jax(q):
    """MATLAB rgb2ycbcr's Y on the 0-255 scale from uint8 RGB (as int32), [..., H, W, 1] float32."""
    y_int = q[..., 0] * _LUMA_INT[0] + q[..., 1] * _LUMA_INT[1] + q[..., 2] * _LUMA_INT[2]  # exact, < 2^26
    return (16.0 + y_int.astype(jnp.float32) / 255000.0)[..., None]


@functools.partial(jax.jit, static_argnames=("profile", "crop_border"))
def psnr_jax(a, b, profile="rgb", *, crop_border=0):
    """`psnr` in float32 under jit: a, b [..., H, W, C] in [0, 1] -> [...]."""
    _check_profile(profile)
    d = _crop(_to_uint8_jax(a) - _to_uint8_jax(b), crop_border)  # exact integer differences
    if _WINDOWS[profile][0] == "y":
        d = ((d[..., 0] * _LUMA[0] + d[..., 1] * _LUMA[1] + d[..., 2] * _LUMA[2]) / 255.0)[..., None]
    else:
        d = d.astype(jnp.float32)
    mse = jnp.mean(d * d, axis=(-3, -2, -1))
    return 10.0 * jnp.log10(255.0 ** 2 / mse)


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


def _gaussian_moments(x, y, taps):
    """Window means and (co)variances with float32 weights, on values centred per image and channel."""
    filt = lambda v: _filter_valid(v, [float(t) for t in taps])
    cx, cy = jnp.mean(x, axis=(-3, -2), keepdims=True), jnp.mean(y, axis=(-3, -2), keepdims=True)
    x, y = x - cx, y - cy
    mx, my = filt(x), filt(y)
    return mx + cx, my + cy, filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my


@functools.partial(jax.jit, static_argnames=("profile", "crop_border"))
def ssim_jax(a, b, profile="rgb", *, crop_border=0):
    """`ssim` in float32 under jit: a, b [..., H, W, C] in [0, 1] -> [...]."""
    _check_profile(profile)
    _check_size(a.shape, profile, crop_border)
    space, taps, uniform, sample_cov = _WINDOWS[profile]
    x, y = _crop(_to_uint8_jax(a), crop_border), _crop(_to_uint8_jax(b), crop_border)
    if uniform:  # integer RGB (uniform windows are only used on RGB)
        moments = _uniform_moments(x, y, len(taps), sample_cov)
    elif space == "y":
        moments = _gaussian_moments(_luma_jax(x), _luma_jax(y), taps)
    else:
        moments = _gaussian_moments(x.astype(jnp.float32), y.astype(jnp.float32), taps)
    s = _ssim_from_moments(*moments)
    start, stop = _crop_map(profile)
    s = s[..., start:s.shape[-3] - stop, start:s.shape[-2] - stop, :]
    return jnp.mean(s, axis=(-3, -2, -1))
