"""The restore path shared by evaluation, `rcot_jax.restore` and notebooks.

A map needs sizes divisible by its downsampling factor, so images are reflect-padded up and cropped back. Large
images are restored in fixed-size overlapping tiles, blended with weights that fall linearly to the tile edges
inside the overlap, so one compiled program serves every image size and memory is bounded by the tile size. The
x8 geometric self-ensemble averages the map's outputs over the 8 flips and rotations of the input.

    restorer = Restorer(t_model, t_params, tile=256, overlap=32)
    out = restorer(image)          # float [H, W, 3] in [0, 1] -> the same size
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rcot_jax import parallel

MULTIPLE = 16         # both maps accept sizes divisible by 8 (three 2x downsamplings); 16 leaves a margin


def padded_shape(hw, multiple):
    """(H, W) rounded up to multiples of `multiple`."""
    return tuple(-(-int(n) // multiple) * multiple for n in hw)


def pad_to(img, hw):
    """img [H, W, C] reflect-padded at the bottom and right to `hw` (repeated reflection where the padding is
    larger than the image)."""
    h, w = img.shape[:2]
    return np.pad(img, ((0, hw[0] - h), (0, hw[1] - w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")


def crop_to(img, hw):
    return img[:hw[0], :hw[1]]


def tile_starts(n, tile, overlap):
    """Start offsets of tiles of length `tile` covering [0, n) with at least `overlap` shared pixels."""
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def blend_weights(tile, overlap):
    """[tile, tile] weights: 1 in the middle, falling linearly towards the edges over `overlap` pixels (never 0)."""
    ramp = np.minimum(1.0, (np.arange(tile) + 0.5) / max(overlap, 1))
    w = np.minimum(ramp, ramp[::-1])
    return np.outer(w, w).astype(np.float32)


def dihedral(x, k, inverse=False):
    """x [..., H, W, C] under the k-th of the 8 flips/rotations (k // 2 quarter turns, then an up-down flip if k
    is odd); `inverse` undoes it."""
    if not inverse:
        x = jnp.rot90(x, k // 2, axes=(-3, -2))
        return x[..., ::-1, :, :] if k % 2 else x
    x = x[..., ::-1, :, :] if k % 2 else x
    return jnp.rot90(x, -(k // 2), axes=(-3, -2))


@functools.lru_cache(maxsize=None)
def _compiled_apply(model, ensemble, mesh):
    """jit(T.apply) over batches sharded on the mesh; with `ensemble`, the mean over the 8 transforms."""
    def apply(params, x):
        if not ensemble:
            return model.apply(params, x)
        return sum(dihedral(model.apply(params, dihedral(x, k)), k, inverse=True) for k in range(8)) / 8
    sharding = parallel.batch_sharding(mesh)
    return jax.jit(apply, in_shardings=(None, sharding), out_shardings=sharding)


class Restorer:
    """Restores float images [H, W, 3] in [0, 1] of any size with the map `model` and its parameters.

    `tile` > 0: overlapping tile x tile tiles (`overlap` pixels shared), `batch_size` tiles per call (rounded up
    to a multiple of the devices); one compilation for every image. `tile=0`: the whole image padded to a
    multiple of 16 (one compilation per padded size). `ensemble`: the x8 self-ensemble (8x the compute)."""

    def __init__(self, model, params, tile=256, overlap=32, batch_size=4, ensemble=False, devices=None):
        if tile and (tile % MULTIPLE or not 0 <= overlap < tile):
            raise ValueError(f"tile={tile} must be a multiple of {MULTIPLE} and overlap={overlap} in [0, tile)")
        self.mesh = parallel.make_mesh(devices or jax.local_devices())
        self.params = jax.device_put(params, parallel.replicated(self.mesh))
        self.tile, self.overlap, self.ensemble = tile, overlap, ensemble
        self.batch_size = parallel.round_up(batch_size, self.mesh)
        self.apply = _compiled_apply(model, ensemble, self.mesh)
        self.weights = blend_weights(tile, overlap) if tile else None

    def _run(self, x):
        return np.asarray(self.apply(self.params, x), np.float32)

    def __call__(self, image, progress=None):
        image = np.asarray(image, np.float32)
        h, w = image.shape[:2]
        if not self.tile:
            out = self._run(np.repeat(pad_to(image, padded_shape((h, w), MULTIPLE))[None], len(self.mesh.devices.flat),
                                      axis=0))[0]
            return np.clip(crop_to(out, (h, w)), 0.0, 1.0)
        t = self.tile
        padded = pad_to(image, (max(h, t), max(w, t)))
        ph, pw = padded.shape[:2]
        boxes = [(y, x) for y in tile_starts(ph, t, self.overlap) for x in tile_starts(pw, t, self.overlap)]
        acc = np.zeros((ph, pw, 3), np.float32)
        norm = np.zeros((ph, pw, 1), np.float32)
        for s in range(0, len(boxes), self.batch_size):
            part = boxes[s:s + self.batch_size]
            tiles = np.stack([padded[y:y + t, x:x + t] for y, x in part] +
                             [np.zeros((t, t, 3), np.float32)] * (self.batch_size - len(part)))
            out = self._run(tiles)
            for (y, x), o in zip(part, out):
                acc[y:y + t, x:x + t] += o * self.weights[:, :, None]
                norm[y:y + t, x:x + t] += self.weights[:, :, None]
            if progress:
                progress(len(part))
        return np.clip(crop_to(acc / norm, (h, w)), 0.0, 1.0)

    def num_tiles(self, hw):
        if not self.tile:
            return 1
        return len(tile_starts(max(hw[0], self.tile), self.tile, self.overlap)) * \
            len(tile_starts(max(hw[1], self.tile), self.tile, self.overlap))


def restore(params, image, model, **kwargs):
    """`Restorer(model, params, **kwargs)(image)`: one image, e.g. in a notebook (the compiled map is cached)."""
    return Restorer(model, params, **kwargs)(image)
