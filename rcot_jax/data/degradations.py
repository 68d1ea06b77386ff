"""Seeded synthetic degradations for clean RGB images (pure NumPy/SciPy, no JAX).

Contract of every public degradation ``f(img, rng, **params)``:

* ``img``: the clean image, a floating-point array of shape (H, W, 3) with values in [0, 1].
* ``rng``: a ``np.random.Generator``, the only source of randomness (same seed -> identical output).
* ``params``: keyword arguments with defaults. A random parameter is either a number (fixed) or a
  ``(lo, hi)`` pair, drawn uniformly once per image.
* Returns float32 (H, W, 3) in [0, 1]. Bad inputs raise ``ValueError`` naming the argument and value
  (``TypeError`` when ``rng`` is not a Generator).

The models:

``gaussian_noise`` (noise15/25/50)
    Additive white Gaussian noise as in the official RCOT (PromptIR/AirNet) training data: the image is
    quantised to uint8, N(0, sigma^2) on the 0-255 scale is added, the sum is clipped to [0, 255] and
    truncated with ``astype(np.uint8)``.
``motion_blur`` (blur)
    Camera shake, I = k * J: a random trajectory with inertia (in the spirit of Boracchi & Foi, "Modeling
    the performance of image restoration from motion blur", IEEE TIP 2012) is rasterised with bilinear
    splatting into a normalised PSF, which is convolved with each channel (reflect padding); the result is
    quantised to 8-bit levels like GoPro-style blur datasets.
``rain_streaks`` (rain)
    Additive rain layer, I = min(J + S, 1), as in the Rain100L/Rain100H synthesis (Yang et al., "Deep joint
    rain detection and removal from a single image", CVPR 2017: O = B + S): sparse thresholded seeds are
    smeared along one near-vertical direction by a line kernel, slightly blurred and scaled.
``haze`` (haze)
    Koschmieder's atmospheric scattering model, I = J t + A (1 - t), t = exp(-beta d), as used for
    RESIDE (Li et al., "Benchmarking single-image dehazing and beyond", IEEE TIP 2019), with a smooth
    random depth map d in [0, 1] and a grey airlight A.
``bicubic_down_up`` (sr_x4)
    The SR input of RCOT: MATLAB-``imresize`` bicubic downsampling by ``scale`` (antialiased), saved as
    8-bit, then bicubic upsampling back to the original size.
``low_light`` (lowlight)
    Gamma/exposure darkening, I = e J^gamma (gamma-based synthesis as in LLNet, Lore et al., Pattern
    Recognition 2017), plus signal-dependent Poisson-Gaussian sensor noise, var = a I + b^2 (Foi et al.,
    "Practical Poissonian-Gaussian noise modeling and fitting for single-image raw-data", IEEE TIP 2008),
    quantised to 8-bit.

``DEGRADATIONS`` maps the degradation names of ``rcot_jax.ids.DEGRADATION_IDS`` ('noise15', ..., 'sr_x4') to
callables ``(img, rng) -> degraded`` with the defaults; ``degrade(name, img, rng)`` looks one up.
"""
import functools
import math
from numbers import Real

import numpy as np
from scipy import ndimage, signal

from rcot_jax.ids import DEGRADATION_IDS, DegradationId

__all__ = [
    "gaussian_noise", "motion_blur_kernel", "apply_kernel", "motion_blur", "rain_streaks",
    "rain_with_params", "haze", "haze_with_params", "bicubic_resize", "bicubic_down_up", "low_light",
    "DEGRADATIONS", "degrade",
]


# ----------------------------------------------------------------------------------------------- helpers
def _check_img(img, name="img"):
    """Validate a clean (H, W, 3) float image in [0, 1]; return it as float32."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3); got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a float array in [0, 1]; got dtype {arr.dtype} "
                         "(convert integers with img / 255)")
    lo, hi = float(arr.min()), float(arr.max())
    if not (lo >= 0.0 and hi <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} values must lie in [0, 1]; got min {lo}, max {hi}")
    return arr.astype(np.float32, copy=False)


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator (np.random.default_rng(seed)); got {type(rng).__name__}")


def _range(value, name, low, high, low_open=False):
    """Validate a fixed number or a (lo, hi) range inside [low, high] (low excluded if low_open)."""
    pair = (value, value) if isinstance(value, Real) else tuple(value) if np.ndim(value) == 1 else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, Real) and math.isfinite(v) for v in pair):
        raise ValueError(f"{name} must be a number or a (lo, hi) pair; got {value!r}")
    lo, hi = float(pair[0]), float(pair[1])
    if lo > hi or lo < low or hi > high or (low_open and lo <= low):
        bound = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bound}{low}, {high}] with lo <= hi; got {value!r}")
    return lo, hi


def _draw(rng, lohi):
    return float(rng.uniform(lohi[0], lohi[1]))


def _quantise(x):
    """Round to 8-bit levels (as if saved as uint8) and return float32 in [0, 1]."""
    return (np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def _check_int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------- noise
def gaussian_noise(img, rng, sigma=25.0):
    """Official RCOT noise: uint8(round(255 J)) + N(0, sigma^2), clipped to [0, 255], truncated to uint8, / 255.

    The noise is ``rng.standard_normal(img.shape) * sigma`` (float64), added to the uint8 image.
    """
    img = _check_img(img)
    _check_rng(rng)
    if not isinstance(sigma, Real) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number (0-255 scale); got {sigma!r}")
    clean = np.round(img * 255.0).astype(np.uint8)
    noisy = np.clip(clean + rng.standard_normal(img.shape) * float(sigma), 0, 255).astype(np.uint8)
    return (noisy / np.float32(255.0)).astype(np.float32)


# -------------------------------------------------------------------------------------------------- blur
def _splat(points, size):
    """Bilinear splat of (N, 2) (row, col) points, each of weight 1/N, onto a size x size grid."""
    base = np.floor(points).astype(np.int64)
    frac = points - base
    out = np.zeros((size + 1, size + 1))
    for dr in (0, 1):
        for dc in (0, 1):
            w = (frac[:, 0] if dr else 1 - frac[:, 0]) * (frac[:, 1] if dc else 1 - frac[:, 1])
            np.add.at(out, (base[:, 0] + dr, base[:, 1] + dc), w)
    return out[:size, :size] / len(points)


def motion_blur_kernel(rng, size=15, length=(0.15, 1.0), centripetal=(0.0, 0.2), shake_prob=(0.0, 0.03),
                       n_steps=256):
    """Random camera-shake PSF: float32 (size, size), non-negative, sums to 1, centre of mass at the centre.

    A unit-speed 2-D trajectory is integrated for ``n_steps`` steps. The velocity keeps its direction
    (inertia) and is perturbed each step by a small Gaussian term, a pull towards the start point of
    strength ``centripetal`` (drawn per kernel; larger -> curlier, looping paths), and with probability
    ``shake_prob`` an abrupt jerk. The path is centred on its mean, scaled so its largest Chebyshev distance
    from the mean is ``length`` (fraction, drawn per kernel) of the available half-width ((size - 1) / 2 - 0.5 px),
    and splatted bilinearly with equal weight per sample (constant speed -> uniform exposure along the
    path). Bilinear splatting preserves the first moment, so the centre of mass is exactly the grid centre.
    """
    _check_rng(rng)
    size = _check_int(size, "size", 3)
    n_steps = _check_int(n_steps, "n_steps", 8)
    frac = _draw(rng, _range(length, "length", 0.0, 1.0, low_open=True))
    pull = _draw(rng, _range(centripetal, "centripetal", 0.0, 10.0))
    p_shake = _draw(rng, _range(shake_prob, "shake_prob", 0.0, 1.0))
    anxiety = float(rng.uniform(0.02, 0.15))      # std of the per-step random velocity change
    gauss = (rng.standard_normal(n_steps) + 1j * rng.standard_normal(n_steps)) * anxiety
    jerks = (rng.random(n_steps) < p_shake) * np.exp(2j * np.pi * rng.random(n_steps)) * 2.0
    v = complex(np.exp(2j * np.pi * rng.random()))
    x = 0j
    pos = np.empty(n_steps, np.complex128)
    for t, (g, j) in enumerate(zip(gauss.tolist(), jerks.tolist())):
        v = v + g + j - pull * x / n_steps
        v = v / max(abs(v), 1e-12)
        x = x + v
        pos[t] = x
    pts = np.stack([pos.imag, pos.real], axis=1)
    pts -= pts.mean(axis=0)
    half = (size - 1) / 2.0 - 0.5
    radius = max(float(np.abs(pts).max()), 1e-9)
    pts = pts * (frac * half / radius) + (size - 1) / 2.0
    kernel = _splat(pts, size)
    return (kernel / kernel.sum()).astype(np.float32)


def apply_kernel(img, kernel):
    """Convolve each channel of an (H, W, C) image with a 2-D kernel: 'same' size, reflect padding.

    True convolution, aligned like ``scipy.signal.convolve2d(mode='same')``; borders use half-sample
    symmetric padding (``d c b a | a b c d``, SciPy's 'reflect'). FFT-based; no clipping. Returns float32.
    """
    arr = np.asarray(img)
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"img must be a float array of shape (H, W, C); got shape {arr.shape}, dtype {arr.dtype}")
    k = np.asarray(kernel)
    if k.ndim != 2 or k.size == 0 or not np.all(np.isfinite(k)):
        raise ValueError(f"kernel must be a finite non-empty 2-D array; got shape {k.shape}")
    (kh, kw) = k.shape
    pad = ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0))
    padded = np.pad(arr.astype(np.float32, copy=False), pad, mode="symmetric")
    out = signal.fftconvolve(padded, k.astype(np.float32)[:, :, None], mode="valid", axes=(0, 1))
    return out.astype(np.float32)


def motion_blur(img, rng, size=15):
    """Camera-shake blur: a ``motion_blur_kernel(rng, size)`` PSF applied with ``apply_kernel``, then 8-bit."""
    img = _check_img(img)
    _check_rng(rng)
    kernel = motion_blur_kernel(rng, size=size)
    return _quantise(apply_kernel(img, kernel))


# -------------------------------------------------------------------------------------------------- rain
def _line_kernel(length, angle_deg, blur):
    """Anti-aliased line of the given length through the centre, peak 1, direction (cos a, sin a) (row, col)."""
    half = int(math.ceil(length / 2.0)) + 2
    size = 2 * half + 1
    a = math.radians(angle_deg)
    t = np.linspace(-length / 2.0, length / 2.0, int(math.ceil(4 * length)) + 1)
    pts = np.stack([half + t * math.cos(a), half + t * math.sin(a)], axis=1)
    k = _splat(pts, size)
    if blur > 0:
        k = ndimage.gaussian_filter(k, blur, mode="constant")
    return k / k.max()


def rain_with_params(img, rng, density=(0.0005, 0.0015), length=(10.0, 30.0), angle=(-20.0, 20.0),
                     strength=(0.4, 0.8), blur=0.6):
    """``rain_streaks`` that also returns ``(rainy, streaks (H, W) float32, angle in degrees)``."""
    img = _check_img(img)
    _check_rng(rng)
    dens = _draw(rng, _range(density, "density", 0.0, 1.0, low_open=True))
    ln = _draw(rng, _range(length, "length", 1.0, 1000.0))
    ang = _draw(rng, _range(angle, "angle", -90.0, 90.0))
    amp = _draw(rng, _range(strength, "strength", 0.0, 1.0))
    if not isinstance(blur, Real) or not 0 <= blur <= 10:
        raise ValueError(f"blur must be a number in [0, 10]; got {blur!r}")
    kernel = _line_kernel(ln, ang, float(blur))
    h, w = img.shape[:2]
    u = rng.random((h + kernel.shape[0] - 1, w + kernel.shape[1] - 1), dtype=np.float32)
    # Thresholded seeds (fraction `dens`), each with a brightness uniform in [0.5, 1] (reuses u).
    seeds = np.where(u < dens, 0.5 + 0.5 * u / np.float32(dens), np.float32(0.0))
    streaks = signal.fftconvolve(seeds, kernel.astype(np.float32), mode="valid")
    streaks = (np.clip(streaks, 0.0, 1.0) * amp).astype(np.float32)
    rainy = np.minimum(img + streaks[:, :, None], np.float32(1.0))
    return rainy.astype(np.float32), streaks, ang


def rain_streaks(img, rng, density=(0.0005, 0.0015), length=(10.0, 30.0), angle=(-20.0, 20.0),
                 strength=(0.4, 0.8), blur=0.6):
    """Additive white rain streaks: I = min(J + S, 1), never darker than J.

    ``density``: fraction of seed pixels; ``length``: streak length in pixels; ``angle``: streak direction in
    degrees from vertical (one per image; positive leans the lower end to the right); ``strength``: streak
    brightness; ``blur``: Gaussian sigma (pixels) softening the streak profile. Not quantised.
    """
    return rain_with_params(img, rng, density, length, angle, strength, blur)[0]


# -------------------------------------------------------------------------------------------------- haze
def _depth_map(rng, h, w, coarse=4):
    """Smooth random depth in [0, 1]: a random linear ramp plus bicubic-upsampled coarse noise."""
    phi = rng.uniform(0.0, 2 * np.pi)
    yy = (np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2) / max(h, w)
    xx = (np.arange(w, dtype=np.float32)[None, :] - (w - 1) / 2) / max(h, w)
    ramp = np.float32(math.cos(phi)) * yy + np.float32(math.sin(phi)) * xx
    field = bicubic_resize(rng.random((coarse, coarse, 1), dtype=np.float32), (h, w))[:, :, 0]
    mix = np.float32(rng.uniform(0.3, 0.7))
    d = mix * ramp + (1 - mix) * 0.5 * field
    d = d - d.min()
    return (d / max(float(d.max()), 1e-6)).astype(np.float32)


def haze_with_params(img, rng, beta_range=(0.6, 1.8), airlight_range=(0.7, 1.0)):
    """``haze`` that also returns ``(hazy, t (H, W) float32, A float)`` with hazy == J t + A (1 - t)."""
    img = _check_img(img)
    _check_rng(rng)
    beta = _draw(rng, _range(beta_range, "beta_range", 0.0, 20.0))
    airlight = np.float32(_draw(rng, _range(airlight_range, "airlight_range", 0.0, 1.0)))
    t = np.exp(np.float32(-beta) * _depth_map(rng, *img.shape[:2])).astype(np.float32)
    t3 = t[:, :, None]
    hazy = img * t3 + airlight * (np.float32(1.0) - t3)
    return np.clip(hazy, 0.0, 1.0).astype(np.float32), t, float(airlight)


def haze(img, rng, beta_range=(0.6, 1.8), airlight_range=(0.7, 1.0)):
    """Atmospheric scattering I = J t + A (1 - t), t = exp(-beta d); beta and grey A drawn per image.

    d is a smooth random depth map in [0, 1] (linear ramp in a random direction plus low-frequency noise),
    so t ranges over [exp(-beta), 1]. Not quantised (the formula holds exactly).
    """
    return haze_with_params(img, rng, beta_range, airlight_range)[0]


# ----------------------------------------------------------------------------------------------- bicubic
def _cubic(x):
    """Keys cubic convolution kernel, a = -0.5 (MATLAB imresize / PIL BICUBIC)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=64)
def _contributions(in_len, out_len):
    """MATLAB imresize weights: (indices (out, P) into [0, in_len), weights (out, P)), symmetric borders."""
    scale = out_len / in_len
    width = 4.0 / scale if scale < 1 else 4.0            # antialiasing: kernel widened by 1/scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)                # 1-based input coordinate of output pixel x
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]       # 1-based
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)                        # drop all-zero tap columns
    idx, w = idx[:, keep], w[:, keep]
    idx.setflags(write=False)
    w.setflags(write=False)
    return idx, w


def _resize_axis(arr, out_len, axis):
    idx, w = _contributions(arr.shape[axis], out_len)
    w = w.astype(arr.dtype)
    shape = [1] * arr.ndim
    shape[axis] = out_len
    out = None
    for p in range(idx.shape[1]):
        term = np.take(arr, idx[:, p], axis=axis) * w[:, p].reshape(shape)
        out = term if out is None else out + term
    return out


def bicubic_resize(img, out_hw):
    """MATLAB ``imresize(img, out_hw, 'bicubic')``: Keys a=-0.5, antialiased when downsampling, symmetric borders.

    Works on (H, W) or (H, W, C) float arrays; keeps the dtype (float32 for float32). No clipping.
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"img must have shape (H, W) or (H, W, C); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"img must be a float array; got dtype {arr.dtype}")
    try:
        oh, ow = (int(v) for v in out_hw)
        ok = len(tuple(out_hw)) == 2 and oh >= 1 and ow >= 1 and all(float(v) == int(v) for v in out_hw)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"out_hw must be a pair of positive integers; got {out_hw!r}")
    return _resize_axis(_resize_axis(arr, oh, 0), ow, 1)


def bicubic_down_up(img, rng=None, scale=4):
    """RCOT SR input: bicubic downsample by ``scale``, clip, save as 8-bit, bicubic upsample back, clip.

    H and W must be divisible by ``scale``. ``rng`` is accepted for a uniform signature and unused.
    """
    img = _check_img(img)
    scale = _check_int(scale, "scale", 1)
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"img height and width must be divisible by scale={scale}; got shape {img.shape}")
    low = _quantise(bicubic_resize(img, (h // scale, w // scale)))
    return np.clip(bicubic_resize(low, (h, w)), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------- low light
def low_light(img, rng, ratio=(0.1, 0.3), gamma=(1.5, 2.5), shot=(1e-4, 2e-3), read=(1e-3, 1e-2)):
    """Low-light capture: I = e J^gamma + Poisson-Gaussian noise, clipped, 8-bit.

    ``gamma`` is drawn per image; the exposure e = min(1, r mean(J) / mean(J^gamma)) makes the clean
    darkened mean a fraction r (``ratio``, drawn per image) of the clean mean (e <= 1, so I <= J before
    noise). Noise: I + sqrt(a I + b^2) N(0, 1), a = ``shot`` (shot-noise gain), b = ``read`` (read-noise std),
    both on the [0, 1] scale and drawn per image.
    """
    img = _check_img(img)
    _check_rng(rng)
    r = _draw(rng, _range(ratio, "ratio", 0.0, 1.0, low_open=True))
    g = _draw(rng, _range(gamma, "gamma", 1.0, 10.0))
    a = _draw(rng, _range(shot, "shot", 0.0, 1.0))
    b = _draw(rng, _range(read, "read", 0.0, 1.0))
    dark = img ** np.float32(g)
    mean_dark = float(dark.mean())
    exposure = min(1.0, r * float(img.mean()) / mean_dark) if mean_dark > 0 else 1.0
    dark = dark * np.float32(exposure)
    std = np.sqrt(dark * np.float32(a) + np.float32(b * b))
    noisy = dark + std * rng.standard_normal(img.shape, dtype=np.float32)
    return _quantise(noisy)


# ------------------------------------------------------------------------------------------------ registry
_BY_ID = {
    DegradationId.NOISE_15: functools.partial(gaussian_noise, sigma=15.0),
    DegradationId.NOISE_25: functools.partial(gaussian_noise, sigma=25.0),
    DegradationId.NOISE_50: functools.partial(gaussian_noise, sigma=50.0),
    DegradationId.RAIN: rain_streaks,
    DegradationId.HAZE: haze,
    DegradationId.BLUR: motion_blur,
    DegradationId.LOW_LIGHT: low_light,
    DegradationId.SR_X4: functools.partial(bicubic_down_up, scale=4),
}
DEGRADATIONS = {name: _BY_ID[i] for name, i in DEGRADATION_IDS.items()}


def degrade(name, img, rng, **params):
    """Apply the registered degradation ``name``: its defaults, overridden by ``params``."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; valid names: {', '.join(DEGRADATIONS)}")
    return DEGRADATIONS[name](img, rng, **params)
