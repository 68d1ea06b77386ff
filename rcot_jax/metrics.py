"""Image-quality metrics on 8-bit RGB, as restoration papers report them.

Images are quantised to uint8 first (round(clip(x, 0, 1) * 255)), as saved results are. PSNR is on RGB with
data range 255 (the all-in-one protocol RCOT follows). SSIM is the standard Gaussian-window SSIM (11 x 11,
sigma 1.5, K1 0.01, K2 0.03; Wang et al. 2004) per channel, averaged over channels and over the valid region:
scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
channel_axis=-1, data_range=255)`. (RCOT's own evaluate.py uses a 2 x 2 window; its numbers are not comparable.)
"""
import numpy as np

_SIGMA, _RADIUS = 1.5, 5


def to_uint8(images):
    return np.round(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def psnr(a, b):
    """PSNR in dB of each image pair: a, b [..., H, W, C] in [0, 1] -> [...]."""
    err = (to_uint8(a).astype(np.float64) - to_uint8(b).astype(np.float64)) ** 2
    mse = err.mean(axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0 ** 2 / mse)


def _gaussian_filter_valid(x):
    """Separable 11-tap Gaussian filter over axes -3 and -2, keeping only fully covered pixels."""
    t = np.arange(-_RADIUS, _RADIUS + 1)
    g = np.exp(-t ** 2 / (2 * _SIGMA ** 2))
    g /= g.sum()
    n = 2 * _RADIUS + 1
    h, w = x.shape[-3] - n + 1, x.shape[-2] - n + 1
    x = sum(g[i] * x[..., i:i + h, :, :] for i in range(n))
    return sum(g[i] * x[..., :, i:i + w, :] for i in range(n))


def ssim(a, b):
    """Mean SSIM of each image pair: a, b [..., H, W, C] in [0, 1] (H, W >= 11) -> [...]."""
    x, y = to_uint8(a).astype(np.float64), to_uint8(b).astype(np.float64)
    if min(x.shape[-3:-1]) < 2 * _RADIUS + 1:
        raise ValueError(f"ssim: images of size {x.shape[-3]}x{x.shape[-2]} are smaller than the 11x11 window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _gaussian_filter_valid(x), _gaussian_filter_valid(y)
    vx = _gaussian_filter_valid(x * x) - mx * mx
    vy = _gaussian_filter_valid(y * y) - my * my
    cxy = _gaussian_filter_valid(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(axis=(-3, -2, -1))
