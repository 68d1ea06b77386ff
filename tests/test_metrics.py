"""PSNR / SSIM on 8-bit RGB against scikit-image's reference implementations."""
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rcot_jax import metrics


def _pair(seed, shape):
    rng = np.random.default_rng(seed)
    clean = rng.random(shape)
    return clean, np.clip(clean + 0.1 * rng.standard_normal(shape), 0, 1)


@pytest.mark.parametrize("shape", [(40, 37, 3), (64, 64, 3)])
def test_psnr_and_ssim_match_skimage_on_uint8(shape):
    a, b = _pair(0, shape)
    ua, ub = metrics.to_uint8(a), metrics.to_uint8(b)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(ua, ub, data_range=255), abs=1e-9)
    assert metrics.ssim(a, b) == pytest.approx(structural_similarity(
        ua, ub, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255),
        abs=1e-9)


def test_batched_metrics_are_per_image():
    pairs = [_pair(s, (32, 32, 3)) for s in range(3)]
    a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    np.testing.assert_allclose(metrics.psnr(a, b), [metrics.psnr(x, y) for x, y in pairs])
    np.testing.assert_allclose(metrics.ssim(a, b), [metrics.ssim(x, y) for x, y in pairs])


def test_identical_images_and_too_small_images():
    a, _ = _pair(1, (16, 16, 3))
    assert metrics.ssim(a, a) == pytest.approx(1.0) and metrics.psnr(a, a) == np.inf
    with pytest.raises(ValueError, match="8x8 are smaller than the 11x11 window"):
        metrics.ssim(a[:8, :8], a[:8, :8])
