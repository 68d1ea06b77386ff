"""Synthetic degradations and embedded images: contracts, physics, validation. NumPy only, no JAX."""
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, signal

from rcot_jax.data import degradations as D
from rcot_jax.data import sources

NAMES = ("noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight", "sr_x4")


def _img(seed=0, h=64, w=64):
    """A random image with both smooth structure and fine texture, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = D.bicubic_resize(rng.random((h // 8, w // 8, 3), dtype=np.float32), (h, w))
    return np.clip(0.7 * coarse + 0.3 * rng.random((h, w, 3), dtype=np.float32), 0, 1).astype(np.float32)


def _on_grid(x):
    return np.allclose(x * 255, np.round(x * 255), atol=1e-3)


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


# ------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
    img = _img(1)
    out = D.degrade(name, img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.random.seed(1)  # the global state must not matter
    again = D.degrade(name, img, np.random.default_rng(0))
    np.random.seed(2)
    assert np.array_equal(out, again)
    other = D.degrade(name, img, np.random.default_rng(1))
    if name == "sr_x4":
        assert np.array_equal(out, other)  # deterministic: rng unused
    else:
        assert not np.array_equal(out, other)
    assert not np.array_equal(out, img)


def test_registry_names_and_unknown():
    assert tuple(D.DEGRADATIONS) == NAMES
    img = _img(2)
    for name in NAMES:
        assert D.DEGRADATIONS[name](img, np.random.default_rng(3)).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="noise15.*noise25.*noise50.*rain.*haze.*blur.*lowlight.*sr_x4"):
        D.degrade("snow", img, np.random.default_rng(0))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8), np.float32), r"img.*\(8, 8\)"),
    (np.zeros((8, 8, 4), np.float32), r"img.*\(8, 8, 4\)"),
    (np.zeros((8, 8, 3), np.uint8), "img.*uint8"),
    (np.full((8, 8, 3), 1.5, np.float32), "img.*1.5"),
    (np.full((8, 8, 3), np.nan, np.float32), "img"),
])
@pytest.mark.parametrize("name", NAMES)
def test_bad_images_rejected(name, bad, match):
    with pytest.raises(ValueError, match=match):
        D.degrade(name, bad, np.random.default_rng(0))


@pytest.mark.parametrize("call, match", [
    (lambda img, rng: D.gaussian_noise(img, rng, sigma=0), "sigma.*0"),
    (lambda img, rng: D.gaussian_noise(img, rng, sigma=-5.0), "sigma.*-5"),
    (lambda img, rng: D.motion_blur_kernel(rng, size=2), "size.*2"),
    (lambda img, rng: D.motion_blur(img, rng, size=7.5), "size.*7.5"),
    (lambda img, rng: D.rain_streaks(img, rng, density=0.0), "density.*0.0"),
    (lambda img, rng: D.rain_streaks(img, rng, angle=(30, 10)), r"angle.*\(30, 10\)"),
    (lambda img, rng: D.haze(img, rng, beta_range=(2.0, 1.0)), r"beta_range.*\(2.0, 1.0\)"),
    (lambda img, rng: D.haze(img, rng, airlight_range=(0.5, 1.5)), r"airlight_range"),
    (lambda img, rng: D.low_light(img, rng, gamma="x"), "gamma.*'x'"),
    (lambda img, rng: D.bicubic_down_up(img[:62], rng), r"divisible by scale=4.*\(62, 64, 3\)"),
    (lambda img, rng: D.bicubic_down_up(img[:, :63], rng, scale=4), r"\(64, 63, 3\)"),
    (lambda img, rng: D.bicubic_resize(img, (0, 5)), "out_hw"),
    (lambda img, rng: D.apply_kernel(img, np.ones(3)), "kernel"),
])
def test_bad_params_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call(_img(0), np.random.default_rng(0))


def test_rng_must_be_generator():
    with pytest.raises(TypeError, match="rng"):
        D.gaussian_noise(_img(0), 0)


# ---------------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("sigma", [15.0, 25.0, 50.0])
def test_noise_statistics_on_grey(sigma):
    grey = np.full((256, 256, 3), 0.5, np.float32)  # -> 128 in uint8
    out = D.gaussian_noise(grey, np.random.default_rng(4), sigma=sigma)
    assert _on_grid(out)
    res = out.astype(np.float64) - 128 / 255
    assert abs(res.std() / (sigma / 255) - 1) < 0.05
    # truncation (astype(uint8)) lowers the mean by ~0.5 level; clipping at 0/255 is near symmetric.
    assert abs(res.mean() * 255 + 0.5) < 0.25


def test_noise_truncates_like_official_code():
    img = _img(5)
    sigma = 25.0
    out = D.gaussian_noise(img, np.random.default_rng(6), sigma=sigma)
    noise = np.random.default_rng(6).standard_normal(img.shape) * sigma
    clean = np.round(img * 255).astype(np.uint8)
    noisy = np.clip(clean + noise, 0, 255)
    np.testing.assert_array_equal(np.round(out * 255).astype(np.uint8), noisy.astype(np.uint8))
    rounded = np.round(noisy).astype(np.uint8)
    assert np.mean(np.round(out * 255) != rounded) > 0.3  # rounding would be a different result


# ----------------------------------------------------------------------------------------------- blur
@pytest.mark.parametrize("size", [15, 21, 8])
def test_blur_kernel_properties(size):
    extents = []
    for seed in range(40):
        k = D.motion_blur_kernel(np.random.default_rng(seed), size=size)
        assert k.shape == (size, size) and k.dtype == np.float32
        assert k.min() >= 0 and abs(float(k.sum()) - 1) < 1e-5
        rows, cols = np.indices(k.shape)
        centre = (size - 1) / 2
        assert abs(float((rows * k).sum()) - centre) < 1e-3 and abs(float((cols * k).sum()) - centre) < 1e-3
        support = np.argwhere(k > 1e-3 * k.max())
        extents.append(int((support.max(0) - support.min(0)).max()) + 1)
    assert min(extents) <= 0.5 * size and max(extents) >= size - 3  # short to near full size


def test_blur_keeps_constant_and_quantises():
    const = np.full((48, 40, 3), 0.4, np.float32)
    out = D.motion_blur(const, np.random.default_rng(0))
    np.testing.assert_array_equal(out, np.full_like(const, np.round(0.4 * 255) / 255))
    assert _on_grid(D.motion_blur(_img(3), np.random.default_rng(1)))


def test_blur_removes_high_frequencies():
    rng = np.random.default_rng(7)
    noise = rng.random((64, 64, 3), dtype=np.float32)

    def hf_energy(x):
        f = np.abs(np.fft.fft2(x - x.mean(axis=(0, 1)), axes=(0, 1))) ** 2
        fy, fx = np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")
        return float(f[np.hypot(fy, fx) > 0.25].sum())

    for seed in range(5):
        assert hf_energy(D.motion_blur(noise, np.random.default_rng(seed))) < 0.5 * hf_energy(noise)


@pytest.mark.parametrize("ksize", [5, 4])
def test_apply_kernel_delta_is_identity(ksize):
    img = _img(8)
    delta = np.zeros((ksize, ksize), np.float32)
    delta[(ksize - 1) // 2, (ksize - 1) // 2] = 1  # convolve2d(mode='same') centre convention
    np.testing.assert_allclose(D.apply_kernel(img, delta), img, atol=1e-6)


def test_apply_kernel_matches_direct_convolution():
    rng = np.random.default_rng(9)
    img = rng.random((40, 36, 3)).astype(np.float32)
    k = rng.random((7, 5)).astype(np.float32)  # asymmetric: catches a missing flip
    out = D.apply_kernel(img, k)
    for c in range(3):
        ref = signal.convolve2d(img[:, :, c], k, mode="same")
        np.testing.assert_allclose(out[3:-3, 2:-2, c], ref[3:-3, 2:-2], rtol=1e-5, atol=1e-5)
        # borders: half-sample symmetric padding == ndimage 'reflect' (same centring for odd kernels)
        np.testing.assert_allclose(out[:, :, c], ndimage.convolve(img[:, :, c], k, mode="reflect"),
                                   rtol=1e-5, atol=1e-5)
    # one pixel by hand: out[i, j] = sum_{a,b} img[i + 3 - a, j + 2 - b] k[a, b]
    i, j = 20, 17
    manual = sum(img[i + 3 - a, j + 2 - b, 1] * k[a, b] for a in range(7) for b in range(5))
    assert abs(out[i, j, 1] - manual) < 1e-5


# ----------------------------------------------------------------------------------------------- rain
def test_rain_never_darker_and_light_coverage():
    grey = np.full((160, 160, 3), 0.4, np.float32)
    fractions = []
    for seed in range(10):
        img = _img(seed, 96, 96)
        assert np.all(D.rain_streaks(img, np.random.default_rng(seed)) >= img)
        rainy = D.rain_streaks(grey, np.random.default_rng(seed))
        assert np.all(rainy >= grey)
        frac = float(np.mean(rainy[:, :, 0] - grey[:, :, 0] > 0.1))
        assert 0.01 < frac < 0.15
        fractions.append(frac)
    assert 0.02 < np.mean(fractions) < 0.10


def _autocorr(x, dy, dx):
    x = x - x.mean()
    return float(np.mean(x * np.roll(x, (dy, dx), axis=(0, 1)))) / float(np.mean(x * x))


@pytest.mark.parametrize("angle", [0.0, 30.0, -30.0])
def test_rain_streak_orientation(angle):
    black = np.zeros((128, 128, 3), np.float32)
    rainy, streaks, ang = D.rain_with_params(black, np.random.default_rng(11), angle=angle, length=25.0)
    assert ang == angle
    np.testing.assert_array_equal(rainy[:, :, 0], streaks)
    a = math.radians(angle)
    dy, dx = round(5 * math.cos(a)), round(5 * math.sin(a))  # along the streaks (rows down, cols right)
    along, across = _autocorr(streaks, dy, dx), _autocorr(streaks, -dx, dy)
    mirrored = _autocorr(streaks, dy, -dx)
    assert along > 0.5 and along > 4 * abs(across)
    if angle != 0:
        assert along > 2 * abs(mirrored)  # the sign of the angle is the documented one


def test_rain_angle_per_image_in_default_range():
    angles = [D.rain_with_params(_img(0, 32, 32), np.random.default_rng(s))[2] for s in range(20)]
    assert all(-20 <= a <= 20 for a in angles) and np.std(angles) > 5


# ----------------------------------------------------------------------------------------------- haze
def test_haze_formula_and_transmission():
    for seed in range(5):
        img = _img(seed, 80, 96)
        hazy, t, airlight = D.haze_with_params(img, np.random.default_rng(seed))
        assert t.shape == (80, 96) and t.dtype == np.float32
        assert 0.7 <= airlight <= 1.0
        assert t.min() > 0 and t.max() <= 1
        assert t.min() >= math.exp(-1.8) - 1e-6 and t.max() == 1.0  # depth spans [0, 1]
        np.testing.assert_allclose(hazy, img * t[:, :, None] + airlight * (1 - t[:, :, None]), atol=1e-6)
        assert np.all(np.abs(hazy - airlight) <= np.abs(img - airlight) + 1e-6)
        assert np.abs(hazy - airlight).mean() < np.abs(img - airlight).mean()
        np.testing.assert_array_equal(hazy, D.haze(img, np.random.default_rng(seed)))


@pytest.mark.parametrize("hw", [(160, 160), (64, 200)])
def test_haze_transmission_is_smooth(hw):
    for seed in range(10):
        _, t, _ = D.haze_with_params(np.zeros(hw + (3,), np.float32), np.random.default_rng(seed))
        step = max(np.abs(np.diff(t, axis=0)).max(), np.abs(np.diff(t, axis=1)).max())
        assert step < 6.0 / min(hw)
        assert t.max() - t.min() > 0.1  # not trivially flat


# -------------------------------------------------------------------------------------------- bicubic
def test_bicubic_identity_constant_and_2d():
    img = _img(12, 48, 40)
    np.testing.assert_allclose(D.bicubic_resize(img, (48, 40)), img, atol=1e-6)
    const = np.full((30, 50, 3), 0.3, np.float32)
    for hw in [(37, 53), (200, 150), (8, 12)]:
        out = D.bicubic_resize(const, hw)
        assert out.shape == hw + (3,) and out.dtype == np.float32
        np.testing.assert_allclose(out, 0.3, atol=1e-6)
    grey = img[:, :, 0]
    np.testing.assert_allclose(D.bicubic_resize(grey, (20, 24)), D.bicubic_resize(img, (20, 24))[:, :, 0], atol=1e-6)


def test_bicubic_reproduces_linear_ramp_with_half_pixel_centres():
    ramp = np.tile(np.arange(32, dtype=np.float64)[None, :, None], (8, 1, 1))
    out = D.bicubic_resize(ramp, (8, 96))  # x3 along the width
    expected = (np.arange(96) + 0.5) / 3 - 0.5
    np.testing.assert_allclose(out[0, 6:-6, 0], expected[6:-6], atol=1e-9)


@pytest.mark.parametrize("out_hw, margin", [((256, 192), 12), ((16, 12), 3), ((100, 70), 6)])
def test_bicubic_matches_pil_in_interior(out_hw, margin):
    img = np.random.default_rng(13).random((64, 48, 3)).astype(np.float32)
    ours = D.bicubic_resize(img, out_hw)
    for c in range(3):
        pil = np.asarray(Image.fromarray(img[:, :, c]).resize(out_hw[::-1], Image.Resampling.BICUBIC))
        m = margin
        np.testing.assert_allclose(ours[m:-m, m:-m, c], pil[m:-m, m:-m], atol=2e-5)


def test_bicubic_down_up_smooth_image_small_error():
    yy, xx = np.mgrid[0:128, 0:96] / 128.0
    smooth = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * xx), 0.5 + 0.3 * np.cos(3 * yy), 0.4 + 0.2 * xx * yy], -1)
    smooth = smooth.astype(np.float32)
    out = D.bicubic_down_up(smooth, None, scale=4)
    assert out.shape == smooth.shape and _psnr(out, smooth) > 40
    noisy = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    assert _psnr(D.bicubic_down_up(noisy), noisy) < 15  # fine detail is lost


def test_bicubic_down_up_saves_low_resolution_as_8bit():
    img = _img(14, 64, 48)
    low = np.clip(D.bicubic_resize(img, (16, 12)), 0, 1)
    expected = np.clip(D.bicubic_resize((np.round(low * 255) / 255).astype(np.float32), (64, 48)), 0, 1)
    out = D.bicubic_down_up(img, np.random.default_rng(0), scale=4)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    unquantised = np.clip(D.bicubic_resize(low, (64, 48)), 0, 1)
    assert np.abs(out - unquantised).max() > 0.3 / 255


# ------------------------------------------------------------------------------------------ low light
def test_low_light_noise_is_poisson_gaussian():
    img = np.concatenate([np.full((128, 64, 3), 0.5, np.float32), np.full((128, 64, 3), 1.0, np.float32)], 1)
    a, b, ratio, gamma = 2e-3, 3e-3, 0.3, 2.0
    out = D.low_light(img, np.random.default_rng(15), ratio=ratio, gamma=gamma, shot=a, read=b)
    exposure = ratio * img.mean() / (img ** gamma).mean()
    for half, level in ((out[:, :64], exposure * 0.5 ** gamma), (out[:, 64:], exposure)):
        assert abs(half.mean() - level) < 2e-3
        assert abs(half.std() / math.sqrt(a * level + b * b) - 1) < 0.1


def test_low_light_darkens_by_documented_ratio():
    held = sources.EmbeddedSource("heldout")
    for name, img in zip(held.names, (held[i]["target"] / np.float32(255) for i in range(len(held)))):
        for seed in range(3):
            out = D.low_light(img, np.random.default_rng(seed))
            assert _on_grid(out)
            assert 0.08 < out.mean() / img.mean() < 0.35, name


def test_low_light_is_monotone_and_darker():
    ramp = np.tile(np.linspace(0, 1, 256, dtype=np.float32)[None, :, None], (64, 1, 3))
    for seed in range(3):
        out = D.low_light(ramp, np.random.default_rng(seed))
        blocks = out.reshape(64, 16, 16, 3).mean(axis=(0, 2, 3))
        clean = ramp.reshape(64, 16, 16, 3).mean(axis=(0, 2, 3))
        assert np.all(np.diff(blocks) > -2e-3)
        assert blocks[-1] > blocks[0] + 0.05
        assert np.all(blocks <= clean + 2e-3)
