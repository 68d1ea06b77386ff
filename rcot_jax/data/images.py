"""Clean images: real photographs embedded in scikit-image (offline), and a user's own folder.

The embedded files live in ``os.path.dirname(skimage.__file__)/data`` and are read with
``skimage.io.imread`` on the file path (never a fetcher that could download). Only photographs are
used; synthetic images (chessboard, color, logo, horse, phantom, text, colorwheel), the already
motion-blurred ``clock_motion.png`` and ``motorcycle_right.png`` (near duplicate of the left view) are left out.

Every image is returned as float32 (H, W, 3) in [0, 1]: greyscale is replicated to 3 channels, alpha is
dropped, and the bottom/right edges are cropped so H and W are multiples of 16 (the official RCOT data
code crops to multiples of 16 too, though centred). Embedded images whose longer side exceeds 512 are first
downscaled with ``degradations.bicubic_resize`` to a longer side of 512 and clipped to [0, 1].
"""
import functools
import os

import numpy as np
import skimage
import skimage.io
import skimage.util

from . import degradations

__all__ = ["TRAIN_IMAGES", "HELDOUT_IMAGES", "SKIMAGE_DATA_DIR", "load_embedded", "load_folder"]

SKIMAGE_DATA_DIR = os.path.join(os.path.dirname(skimage.__file__), "data")

HELDOUT_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png")
TRAIN_IMAGES = (
    "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "camera.png",
    "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png", "page.png",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MULTIPLE = 16
MAX_SIDE = 512


def _to_rgb(arr, name):
    """Any image array from imread -> float32 (H, W, 3) in [0, 1]."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] in (2, 4):   # grey + alpha, RGBA: drop alpha
        arr = arr[:, :, :-1]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image {name!r} has unsupported shape {arr.shape}")
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return np.clip(skimage.util.img_as_float32(arr), 0.0, 1.0)


def _crop16(arr, name):
    h, w = (arr.shape[0] // MULTIPLE) * MULTIPLE, (arr.shape[1] // MULTIPLE) * MULTIPLE
    if h == 0 or w == 0:
        raise ValueError(f"image {name!r} of shape {arr.shape} is smaller than {MULTIPLE}x{MULTIPLE}")
    return np.ascontiguousarray(arr[:h, :w])


def _limit_side(arr):
    h, w = arr.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return arr
    scale = MAX_SIDE / max(h, w)
    out_hw = (min(MAX_SIDE, max(1, round(h * scale))), min(MAX_SIDE, max(1, round(w * scale))))
    return np.clip(degradations.bicubic_resize(arr, out_hw), 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _load_embedded_one(fname):
    arr = _to_rgb(skimage.io.imread(os.path.join(SKIMAGE_DATA_DIR, fname)), fname)
    arr = _crop16(_limit_side(arr), fname)
    arr.setflags(write=False)
    return arr


def load_embedded(split):
    """Embedded photographs of a split, 'train' or 'heldout': list of (file name, float32 (H, W, 3) in [0, 1]).

    Arrays are cached in-process and read-only; copy one before modifying it.
    """
    splits = {"train": TRAIN_IMAGES, "heldout": HELDOUT_IMAGES}
    if split not in splits:
        raise ValueError(f"split must be 'train' or 'heldout'; got {split!r}")
    return [(name, _load_embedded_one(name)) for name in splits[split]]


def load_folder(path):
    """A folder of clean images (png/jpg/jpeg/bmp/tif, sorted by name): list of (file name, float32 (H, W, 3)).

    Same channel handling and multiple-of-16 crop as ``load_embedded``; no resizing, no caching.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"image folder {path!r} does not exist or is not a directory")
    names = sorted(f for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
    if not names:
        raise ValueError(f"image folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [(f, _crop16(_to_rgb(skimage.io.imread(os.path.join(path, f)), f), f)) for f in names]
