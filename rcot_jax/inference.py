"""The restore path shared by evaluation, `rcot_jax.restore` and notebooks.

A map needs sizes divisible by its downsampling factor, so images are reflect-padded up and cropped back. Large
images are restored in fixed-size overlapping tiles, blended with weights that fall linearly to the tile edges
inside the overlap, so one compiled program serves every image size and memory is bounded by the tile size. The
x8 geometric self-ensemble averages the map's outputs over the 8 flips and rotations of the input. A map exported
by `rcot_jax.export` (StableHLO or ONNX) runs through the same path, without the flax modules.

    restorer = Restorer(t_model, t_params, tile=256, overlap=32)
    out = restorer(image)          # float [H, W, 3] in [0, 1] -> the same size
    out = load_exported("map.jax_exported")(image)
"""
import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

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


def restoring(model, params, x):
    """The restoring map, as every path runs it and `rcot_jax.export` writes it: T's output (both passes) for a batch
    x [B, H, W, 3] in [0, 1], clipped to [0, 1]."""
    return jnp.clip(model.apply(params, x), 0.0, 1.0)


def tile_starts(n, tile, overlap):
    """Start offsets of tiles of length `tile` covering [0, n) with at least `overlap` shared pixels."""
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def blend_weights(tile, overlap):
    """[th, tw] weights for tiles `tile` = (th, tw): 1 in the middle, falling linearly towards the edges over
    `overlap` pixels (never 0)."""
    def ramp(n):
        r = np.minimum(1.0, (np.arange(n) + 0.5) / max(overlap, 1))
        return np.minimum(r, r[::-1])
    return np.outer(ramp(tile[0]), ramp(tile[1])).astype(np.float32)


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
            return restoring(model, params, x)
        return sum(dihedral(restoring(model, params, dihedral(x, k)), k, inverse=True) for k in range(8)) / 8
    sharding = parallel.batch_sharding(mesh)
    return jax.jit(apply, in_shardings=(None, sharding), out_shardings=sharding)


class Restorer:
    """Restores float images [H, W, 3] in [0, 1] of any size with the map `model` (anything with
    `.apply(params, x)`: a flax map or an `ExportedMap`) and its parameters.

    `tile` > 0 (or (th, tw)): overlapping tiles of that size (`overlap` pixels shared), `batch_size` tiles per call
    (rounded up to a multiple of the devices); one compilation for every image. `tile=0`: the whole image padded to
    a multiple of 16 (one compilation per padded size). `ensemble`: the x8 self-ensemble (8x the compute)."""

    def __init__(self, model, params, tile=256, overlap=32, batch_size=4, ensemble=False, devices=None):
        tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
        if any(tile) and (any(t % MULTIPLE for t in tile) or not 0 <= overlap < min(tile)):
            raise ValueError(f"tile={tile[0] if tile[0] == tile[1] else tile} must be a multiple of {MULTIPLE} "
                             f"and overlap={overlap} in [0, tile)")
        self.mesh = parallel.make_mesh(devices or jax.local_devices())
        self.params = jax.device_put(params, parallel.replicated(self.mesh))
        self.tile, self.overlap, self.ensemble = (tile if any(tile) else None), overlap, ensemble
        self.batch_size = parallel.round_up(batch_size, self.mesh)
        self.apply = _compiled_apply(model, ensemble, self.mesh)
        self.weights = blend_weights(tile, overlap) if self.tile else None

    def _run(self, x):
        return np.asarray(self.apply(self.params, x), np.float32)

    def __call__(self, image, progress=None):
        image = np.asarray(image, np.float32)
        h, w = image.shape[:2]
        if not self.tile:
            out = self._run(np.repeat(pad_to(image, padded_shape((h, w), MULTIPLE))[None], len(self.mesh.devices.flat),
                                      axis=0))[0]
            return np.clip(crop_to(out, (h, w)), 0.0, 1.0)
        th, tw = self.tile
        padded = pad_to(image, (max(h, th), max(w, tw)))
        ph, pw = padded.shape[:2]
        boxes = [(y, x) for y in tile_starts(ph, th, self.overlap) for x in tile_starts(pw, tw, self.overlap)]
        acc = np.zeros((ph, pw, 3), np.float32)
        norm = np.zeros((ph, pw, 1), np.float32)
        for s in range(0, len(boxes), self.batch_size):
            part = boxes[s:s + self.batch_size]
            tiles = np.stack([padded[y:y + th, x:x + tw] for y, x in part] +
                             [np.zeros((th, tw, 3), np.float32)] * (self.batch_size - len(part)))
            out = self._run(tiles)
            for (y, x), o in zip(part, out):
                acc[y:y + th, x:x + tw] += o * self.weights[:, :, None]
                norm[y:y + th, x:x + tw] += self.weights[:, :, None]
            if progress:
                progress(len(part))
        return np.clip(crop_to(acc / norm, (h, w)), 0.0, 1.0)

    def num_tiles(self, hw):
        if not self.tile:
            return 1
        return len(tile_starts(max(hw[0], self.tile[0]), self.tile[0], self.overlap)) * \
            len(tile_starts(max(hw[1], self.tile[1]), self.tile[1], self.overlap))


def restore(params, image, model, **kwargs):
    """`Restorer(model, params, **kwargs)(image)`: one image, e.g. in a notebook (the compiled map is cached)."""
    return Restorer(model, params, **kwargs)(image)


SEAL = b"\nrcot_jax sha256:"      # what `seal` appends to a jax.export serialization (which ignores trailing bytes)
ONNX_DIGEST = "rcot_jax.graph_sha256"   # the ONNX metadata property holding the digest of the serialized graph


def digest(data):
    return hashlib.sha256(data).hexdigest()


def seal(data):
    """A jax.export serialization with its SHA-256 appended, so a damaged copy is found before it runs (jax reads the
    file as it is: `jax.export.deserialize` stops where the serialization ends)."""
    return data + SEAL + digest(data).encode()


def _check(path, data, expected):
    if expected is not None and digest(data) != expected:
        raise ValueError(f"{path}: damaged (its SHA-256 differs from the one written with it); copy or export it "
                         "again")


class ExportedMap:
    """A restoring map read from a file `rcot_jax.export` wrote, usable as `Restorer`'s model (`.apply(None, x)`):
    StableHLO (`jax.export`, any other name) or ONNX (`.onnx`, run by onnxruntime through a host callback).
    `shape`: the input [B, H, W, 3] it takes, None where the export left a size symbolic. Damaged and truncated
    files are refused with their name (the digest the export wrote is checked)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        if path.lower().endswith(".onnx"):
            self._call, self.shape = _onnx_call(path, data)
        else:
            trailer = len(SEAL) + 64
            if data[-trailer:-64] == SEAL:
                _check(path, data[:-trailer], data[-64:].decode(errors="replace"))
                data = data[:-trailer]
            else:
                logging.warning("%s ends without rcot_jax.export's SHA-256: it cannot be checked", path)
            try:
                exported = jax.export.deserialize(bytearray(data))
                aval, = exported.in_avals
            except Exception as e:      # flatbuffers reports a damaged file as whatever it tripped on
                raise ValueError(f"{path}: not a complete jax.export serialization ({len(data)} bytes; "
                                 f"{type(e).__name__}: {e}); export it again with rcot_jax.export") from None
            self._call = exported.call
            self.shape = tuple(d if isinstance(d, int) else None for d in aval.shape)

    def apply(self, params, x):
        del params      # the parameters are inside the export
        return self._call(x)


def _onnx_call(path, data):
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"{path}: running an ONNX export needs onnxruntime: pip install -e \".[onnx]\"") from None
    import onnx
    try:
        model = onnx.load_from_string(data)
        _check(path, model.graph.SerializeToString(),
               next((p.value for p in model.metadata_props if p.key == ONNX_DIGEST), None))
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a complete ONNX model ({len(data)} bytes; {type(e).__name__}: "
                         f"{str(e).splitlines()[0]}); export it again with rcot_jax.export") from None
    spec = session.get_inputs()[0]

    def run(x):
        return session.run(None, {spec.name: np.asarray(x, np.float32)})[0]

    def call(x):
        return jax.pure_callback(run, jax.ShapeDtypeStruct(x.shape, jnp.float32), x)
    return call, tuple(d if isinstance(d, int) else None for d in spec.shape)


def load_exported(path, tile=None, overlap=32, batch_size=None, ensemble=False, devices=None):
    """A `Restorer` of the export at `path` (see `ExportedMap`) on one device (default: the first local one). An
    export of a fixed size restores in tiles of that size and batch (`tile` and `batch_size` default to them; others
    are refused); a shape-polymorphic one takes any `tile` (default 256, or 0: whole images) and `batch_size`
    (default 4)."""
    exported = ExportedMap(path)
    b, h, w, _ = exported.shape
    fixed = (h, w) if h and w else None
    if ensemble and fixed and h != w:
        raise ValueError(f"{path} takes {h}x{w} inputs: the x8 ensemble rotates tiles and needs a square export")
    if b and batch_size not in (None, b):
        raise ValueError(f"{path} takes batches of {b} only (got batch_size={batch_size})")
    restorer = Restorer(exported, None, tile if tile is not None else fixed or 256, overlap, b or batch_size or 4,
                        ensemble, devices or jax.local_devices()[:1])
    if fixed and restorer.tile != fixed:
        raise ValueError(f"{path} takes {h}x{w} inputs only; restore with tile={h if h == w else (h, w)} "
                         f"(got tile={tile}) or export with --polymorphic")
    return restorer
