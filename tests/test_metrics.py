"""PSNR / SSIM profiles against scikit-image, a BT.601 formula, the official RCOT formula, NAFNet's 3-D SSIM, and JAX
vs NumPy; the inputs they take (floats in [0, 1], uint8, uint16, greyscale) and refuse."""
import jax
import numpy as np
import pytest
from skimage import color, data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rcot_jax import metrics


def _pair(seed, shape):
    rng = np.random.default_rng(seed)
    clean = rng.random(shape)
    return clean, np.clip(clean + 0.1 * rng.standard_normal(shape), 0, 1)


def _astronaut(shape=(48, 45), sigma=0.05):
    """A real photograph (a crop with flat background and texture) and a noisy copy."""
    clean = data.astronaut()[20:20 + shape[0], 170:170 + shape[1]] / 255.0
    rng = np.random.default_rng(7)
    return clean, np.clip(clean + sigma * rng.standard_normal(clean.shape), 0, 1)


PAIRS = {"random": _pair(0, (40, 37, 3)), "astronaut": _astronaut((96, 96))}


@pytest.mark.parametrize("shape", [(40, 37, 3), (64, 64, 3)])
def test_psnr_and_ssim_match_skimage_on_uint8(shape):
    a, b = _pair(0, shape)
    ua, ub = metrics.to_uint8(a), metrics.to_uint8(b)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(ua, ub, data_range=255), abs=1e-9)
    assert metrics.ssim(a, b) == pytest.approx(structural_similarity(
        ua, ub, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255),
        abs=1e-9)


@pytest.mark.parametrize("name", PAIRS)
def test_rgb_and_allinone_profiles_match_skimage(name):
    a, b = PAIRS[name]
    ua, ub = metrics.to_uint8(a), metrics.to_uint8(b)
    expected_psnr = peak_signal_noise_ratio(ua, ub, data_range=255)
    gaussian = structural_similarity(ua, ub, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     channel_axis=-1, data_range=255)
    default = structural_similarity(ua, ub, channel_axis=-1, data_range=255)  # as DA-RCOT / PromptIR call it
    assert metrics.psnr(a, b, profile="rgb") == pytest.approx(expected_psnr, abs=1e-9)
    assert metrics.psnr(a, b, profile="allinone") == pytest.approx(expected_psnr, abs=1e-9)
    assert metrics.ssim(a, b, profile="rgb") == pytest.approx(gaussian, abs=1e-9)
    assert metrics.ssim(a, b, profile="allinone") == pytest.approx(default, abs=1e-9)
    assert abs(gaussian - default) > 1e-4  # the two SSIMs differ, so the profiles are told apart


def _luma(images_uint8):
    """BT.601 luma as MATLAB's rgb2ycbcr on [0, 1] RGB: Y = 16 + 65.481 R + 128.553 G + 24.966 B."""
    r, g, b = np.moveaxis(images_uint8.astype(np.float64) / 255.0, -1, 0)
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("crop_border", [0, 4])
def test_y_profile_matches_bt601_luma_and_skimage(name, crop_border):
    a, b = PAIRS[name]
    ua, ub = metrics.to_uint8(a), metrics.to_uint8(b)
    ya, yb = _luma(ua), _luma(ub)
    np.testing.assert_allclose(ya, color.rgb2ycbcr(ua)[..., 0], atol=1e-9)  # skimage's YCbCr agrees
    if crop_border:
        ya, yb = ya[crop_border:-crop_border, crop_border:-crop_border], yb[crop_border:-crop_border,
                                                                           crop_border:-crop_border]
    assert metrics.psnr(a, b, profile="y", crop_border=crop_border) == pytest.approx(
        peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-9)
    assert metrics.ssim(a, b, profile="y", crop_border=crop_border) == pytest.approx(structural_similarity(
        ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255), abs=1e-9)
    assert metrics.psnr(a, b, profile="y") != pytest.approx(metrics.psnr(a, b, profile="rgb"), abs=0.1)


def _official_ssim(img1, img2):
    """RCOT evaluate.py's SSIM, written out: OpenCV filter2D with the 2x2 kernel [0.5, 0.5]^T [0.5, 0.5]
    (anchor (1, 1): output (i, j) averages input rows i-1..i and columns j-1..j, reflect-101 border),
    the map cropped [5:-5, 5:-5] and averaged over pixels and channels."""
    def filter2d(x):
        p = np.pad(x, ((1, 0), (1, 0), (0, 0)), mode="reflect")
        return 0.25 * (p[:-1, :-1] + p[:-1, 1:] + p[1:, :-1] + p[1:, 1:])

    x, y = img1.astype(np.float64), img2.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filter2d(x)[5:-5, 5:-5], filter2d(y)[5:-5, 5:-5]
    s11 = filter2d(x * x)[5:-5, 5:-5] - mu1 ** 2
    s22 = filter2d(y * y)[5:-5, 5:-5] - mu2 ** 2
    s12 = filter2d(x * y)[5:-5, 5:-5] - mu1 * mu2
    return (((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))).mean()


@pytest.mark.parametrize("name", PAIRS)
def test_rcot_official_profile_matches_the_official_formula(name):
    a, b = PAIRS[name]
    ua, ub = metrics.to_uint8(a), metrics.to_uint8(b)
    bgr_a, bgr_b = ua[..., ::-1], ub[..., ::-1]  # the official code reads BGR with cv2.imread
    assert metrics.psnr(a, b, profile="rcot_official") == pytest.approx(
        peak_signal_noise_ratio(bgr_a, bgr_b), abs=1e-9)  # data range inferred from uint8
    official = _official_ssim(bgr_a, bgr_b)
    assert metrics.ssim(a, b, profile="rcot_official") == pytest.approx(official, abs=1e-12)
    assert abs(official - metrics.ssim(a, b)) > 1e-2


def test_every_profile_is_per_image_and_takes_16_px_images():
    pairs = [_pair(s, (16, 16, 3)) for s in range(3)]
    a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    for profile in metrics.PROFILES:
        np.testing.assert_allclose(metrics.psnr(a, b, profile), [metrics.psnr(x, y, profile) for x, y in pairs])
        np.testing.assert_allclose(metrics.ssim(a, b, profile), [metrics.ssim(x, y, profile) for x, y in pairs])
        assert metrics.ssim(a[0], a[0], profile) == pytest.approx(1.0)
        assert metrics.psnr(a[0], a[0], profile) == np.inf


def test_identical_images_and_too_small_images():
    a, _ = _pair(1, (16, 16, 3))
    assert metrics.ssim(a, a) == pytest.approx(1.0) and metrics.psnr(a, a) == np.inf
    with pytest.raises(ValueError, match="8x8 are smaller than the 11x11 window"):
        metrics.ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(ValueError, match="6x6 are smaller than the 7x7 window"):
        metrics.ssim(a[:6, :6], a[:6, :6], profile="allinone")
    with pytest.raises(ValueError, match=r"10x10 are smaller than 11x11 \(the official"):
        metrics.ssim(a[:10, :10], a[:10, :10], profile="rcot_official")
    with pytest.raises(ValueError, match="8x8 are smaller than the 11x11 window"):
        metrics.ssim(a, a, profile="y", crop_border=4)
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        metrics.ssim_jax(a[:8, :8], a[:8, :8])


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.psnr_jax, metrics.ssim_jax])
def test_unknown_profile_names_the_config_key_and_the_profiles(fn):
    a, _ = _pair(1, (16, 16, 3))
    with pytest.raises(ValueError,
                       match=r"'ycbcr'.*config\.eval\.metric_profile.*rgb, y, allinone, rcot_official, nafnet"):
        fn(a, a, profile="ycbcr")


@pytest.mark.parametrize("profile", metrics.PROFILES)
def test_jax_equals_numpy(profile):
    real, real_noisy = _astronaut()
    rand, rand_noisy = _pair(3, real.shape)
    a = np.stack([real, rand, real]).astype(np.float32)
    b = np.stack([real_noisy, rand_noisy, real]).astype(np.float32)
    crop_border = 4 if profile == "y" else 0
    got_psnr = np.asarray(metrics.psnr_jax(a, b, profile, crop_border=crop_border))
    got_ssim = np.asarray(metrics.ssim_jax(a, b, profile, crop_border=crop_border))
    np.testing.assert_allclose(got_psnr, metrics.psnr(a, b, profile, crop_border=crop_border), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_ssim, metrics.ssim(a, b, profile, crop_border=crop_border), atol=1e-5, rtol=0)
    assert got_psnr[2] == np.inf and got_ssim[2] == pytest.approx(1.0, abs=1e-6)


def test_jax_quantises_float32_exactly_as_numpy():
    """Float32 x * 255 can round onto k + 0.5 when the exact product is not; NumPy rounds the exact one."""
    ties = ((np.arange(255) + 0.5) / 255).astype(np.float32)
    x = np.concatenate([ties + k * np.spacing(ties) for k in range(-8, 9)] + [np.float32([0, 1, -0.1, 1.2])])
    assert (np.round(x * np.float32(255)) != metrics.to_uint8(x)).any()  # the naive float32 path would differ
    np.testing.assert_array_equal(np.asarray(metrics._to_uint8_jax(x)), metrics.to_uint8(x))


def _nafnet_ssim(img1, img2):
    """NAFNet's `calculate_ssim` (ssim3d) written out with PyTorch: a Conv3d over (H, W, C) whose 11x11x11 kernel
    is the outer product of three 1-D Gaussians (sigma 1.5), replicate padding 5, C1/C2 of the 0-255 range, the
    mean of the full map."""
    torch = pytest.importorskip("torch")
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    kernel = torch.tensor(np.einsum("i,j,k->ijk", g, g, g))[None, None]

    def blur(v):
        v = torch.tensor(v)[None, None]
        return torch.nn.functional.conv3d(torch.nn.functional.pad(v, (5,) * 6, mode="replicate"), kernel)[0, 0]

    x, y = (torch.tensor(np.asarray(v, np.float64)) for v in (img1, img2))
    x, y = x.numpy(), y.numpy()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = blur(x), blur(y)
    s11, s22, s12 = blur(x * x) - mu1 ** 2, blur(y * y) - mu2 ** 2, blur(x * y) - mu1 * mu2
    return float((((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))).mean())


@pytest.mark.parametrize("name", PAIRS)
def test_nafnet_profile_matches_its_3d_ssim_and_rgb_psnr(name):
    a, b = PAIRS[name]
    ua, ub = metrics.to_uint8(a), metrics.to_uint8(b)
    expected = _nafnet_ssim(ua, ub)
    assert metrics.ssim(a, b, profile="nafnet") == pytest.approx(expected, abs=1e-12)
    assert float(metrics.ssim_jax(a.astype(np.float32), b.astype(np.float32), "nafnet")) == pytest.approx(
        expected, abs=1e-5)
    assert metrics.psnr(a, b, profile="nafnet") == metrics.psnr(a, b, profile="rgb")
    assert abs(expected - metrics.ssim(a, b)) > 1e-3     # not the 2-D SSIM of `rgb`
    assert metrics.ssim(a[:5, :7], a[:5, :7], profile="nafnet") == pytest.approx(1.0)    # full-size map: any size


def _uint(shape, dtype, seed):
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, top + 1, shape)
    return clean.astype(dtype), np.clip(clean + rng.normal(0, 0.1 * top, shape), 0, top).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_images_are_read_at_their_dtype_range(dtype):
    """uint8 / 255 and uint16 / 65535, then quantised to the 8 bits a saved result has: equal to scikit-image on
    those 8-bit values, in NumPy and JAX (the 8-bit values of uint16 x are round(x / 257))."""
    a, b = _uint((40, 37, 3), dtype, 3)
    eight = (lambda v: v) if dtype == np.uint8 else (lambda v: np.round(v / 257).astype(np.uint8))
    ua, ub = eight(a), eight(b)
    psnr = peak_signal_noise_ratio(ua, ub, data_range=255)
    ssim = structural_similarity(ua, ub, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=255)
    assert metrics.psnr(a, b) == pytest.approx(psnr, abs=1e-9) and psnr < 25
    assert metrics.ssim(a, b) == pytest.approx(ssim, abs=1e-9)
    assert float(metrics.psnr_jax(a, b)) == pytest.approx(psnr, abs=1e-4)
    assert float(metrics.ssim_jax(a, b)) == pytest.approx(ssim, abs=1e-5)
    assert metrics.psnr(a, b) == metrics.psnr(a / np.iinfo(dtype).max, b / np.iinfo(dtype).max)


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.psnr_jax, metrics.ssim_jax])
def test_out_of_range_floats_and_other_dtypes_are_refused(fn):
    a, b = np.full((2, 16, 16, 3), 0.5), np.full((2, 16, 16, 3), 0.25)
    a[1, 2, 3, 0], a[0, 0, 0, 2] = -0.5, 1.0
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"^{name}: float images must lie in \[0, 1\], got values in \[-0.5, 1\]"):
        fn(a, b)
    with pytest.raises(ValueError, match=rf"^{name}: float images must lie in \[0, 1\], got values in \[nan"):
        fn(b, np.where(a > 0.5, np.nan, b))
    with pytest.raises(ValueError, match=rf"^{name}: int32 images are not supported; pass floats in \[0, 1\], or "
                                         r"uint8 / uint16"):
        fn((a * 255).astype(np.int32), b)


def test_under_jit_an_image_out_of_range_scores_nan():
    a, b = _pair(2, (2, 16, 16, 3))
    a[0, 3, 3, 1] = 1.5
    for fn in (metrics.psnr_jax, metrics.ssim_jax):
        got = np.asarray(jax.jit(fn)(a.astype(np.float32), b.astype(np.float32)))
        assert np.isnan(got[0]) and np.isfinite(got[1])


def test_greyscale_images_are_their_own_luma_under_y():
    a, b = (v[..., 1:2] for v in PAIRS["astronaut"])
    ua, ub = metrics.to_uint8(a)[..., 0], metrics.to_uint8(b)[..., 0]
    psnr = peak_signal_noise_ratio(ua, ub, data_range=255)
    ssim = structural_similarity(ua, ub, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255)
    for fn, expected in ((metrics.psnr, psnr), (metrics.ssim, ssim), (metrics.psnr_jax, psnr),
                         (metrics.ssim_jax, ssim)):
        assert float(fn(a.astype(np.float32), b.astype(np.float32), "y")) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match=r"'y' metric profile takes RGB or greyscale images .* got shape "
                                         r"\(96, 96, 2\)"):
        metrics.psnr(PAIRS["astronaut"][0][..., :2], PAIRS["astronaut"][1][..., :2], "y")
