"""rcot_jax.inference, the restore path: tiles agree with the whole image, one compilation for every size, the
self-ensemble."""
import numpy as np

from fakes import photo
from rcot_jax import inference, metrics
from rcot_jax.data import degradations


def test_tiles_agree_with_the_whole_image(tiny_map):
    clean = photo((300, 400))
    noisy = degradations.gaussian_noise(clean, np.random.default_rng(0), 25)
    whole = inference.Restorer(*tiny_map, tile=0)(noisy)
    tiled = inference.Restorer(*tiny_map, tile=128, overlap=32)(noisy)
    assert whole.shape == tiled.shape == clean.shape
    assert abs(metrics.psnr(tiled, clean) - metrics.psnr(whole, clean)) < 0.05


def test_one_compilation_for_every_size_and_the_ensemble(tiny_map):
    restorer = inference.Restorer(*tiny_map, tile=64, overlap=16, batch_size=8)
    compiled = restorer.apply._cache_size()         # the jitted map is shared by restorers of the same model
    for hw in ((40, 30), (100, 64), (64, 130), (77, 91)):
        assert restorer(photo(hw)).shape == (*hw, 3)
    assert restorer.apply._cache_size() <= compiled + 1
    x = photo((64, 64))
    ens = inference.Restorer(*tiny_map, tile=0, ensemble=True)
    flipped = ens(np.ascontiguousarray(x[::-1]))[::-1]
    np.testing.assert_allclose(ens(x), flipped, atol=1e-5)     # the ensemble is equivariant to the flips
    model, params = tiny_map
    np.testing.assert_array_equal(inference.restore(params, x, model, tile=0, ensemble=True), ens(x))
