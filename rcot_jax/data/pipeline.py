"""The grain input pipeline: random crops of clean images, degraded on the fly, paired or unpaired.

A training element is one crop: `degraded` and `target` float32 [P, P, 3] in [0, 1], `paired` (whether the
paired term applies), `de_id` (rcot_jax.ids), and for inspection `source` / `target_source` (the training
image each came from). Degradations are drawn per sample from `degradation_names(config.data)`.

Pairing (`data.paired_fraction`): a fixed, seeded subset of round(fraction * n) training images is paired;
a sample cropped from one of them gets its own clean crop as target. Every other sample is unpaired: its
target is an independent random crop, with its own augmentation, of a *different* training image, so a
degraded image is never shown with its own target.

Everything is a function of `config.seed` and the element's position in the stream (grain's `random_map`),
so the stream is the same for any number of threads or workers, and the iterator's state (a position)
restores it exactly.
"""
import os

import grain
import numpy as np

from rcot_jax.data import degradations
from rcot_jax.ids import DegradationId

TASKS = ("deblur", "denoise", "derain", "dehaze", "sr", "lowlight", "allinone")
_TASK_DEGRADATION = {"deblur": "blur", "derain": "rain", "dehaze": "haze", "sr": "sr_x4", "lowlight": "lowlight"}
NOISE_SIGMAS = (15, 25, 50)
DEGRADATION_IDS = {
    "noise15": DegradationId.NOISE_15, "noise25": DegradationId.NOISE_25, "noise50": DegradationId.NOISE_50,
    "rain": DegradationId.RAIN, "haze": DegradationId.HAZE, "blur": DegradationId.BLUR,
    "lowlight": DegradationId.LOW_LIGHT, "sr_x4": DegradationId.SR_X4,
}
# Training crops are degraded with this much clean context on each side, then cut back, so that blur and
# the other spatial degradations see real image content at the crop's border.
MARGIN = 16
EVAL_SEED = 20240721    # the held-out set does not depend on config.seed: every run is scored on the same crops


def degradation_names(data_config):
    """The degradations a task trains on: one, or for 'allinone' those named in `data.mix`."""
    task = data_config.task
    if task == "denoise":
        if data_config.noise_sigma not in NOISE_SIGMAS:
            raise ValueError(f"config.data.noise_sigma={data_config.noise_sigma!r}, expected one of {NOISE_SIGMAS}")
        return (f"noise{data_config.noise_sigma}",)
    if task == "allinone":
        names = tuple(data_config.mix)
        unknown = [n for n in names if n not in DEGRADATION_IDS]
        if not names or unknown:
            raise ValueError(f"config.data.mix={names!r}: expected degradation names from "
                             f"{sorted(DEGRADATION_IDS)}")
        return names
    if task not in _TASK_DEGRADATION:
        raise ValueError(f"config.data.task={task!r}, expected one of {TASKS}")
    return (_TASK_DEGRADATION[task],)


def dihedral(img, k):
    """The official augmentation modes 0..7: rotate by 90 * (k // 2) degrees, then flip up-down if k is odd."""
    img = np.rot90(img, k // 2)
    return np.ascontiguousarray(img[::-1] if k % 2 else img)


def _crop(img, size, rng, margin=0):
    """A random size x size crop with up to `margin` extra pixels of context on each side; returns the crop
    and the margin actually kept."""
    h, w, _ = img.shape
    m = max(0, min(margin, (min(h, w) - size) // 2))
    top = rng.integers(0, h - size - 2 * m + 1)
    left = rng.integers(0, w - size - 2 * m + 1)
    return img[top:top + size + 2 * m, left:left + size + 2 * m], m


def degradation_params(data_config):
    """Keyword arguments the config sets for each degradation (the rest keep their defaults)."""
    return {"blur": {"size": data_config.blur_kernel_size}}


def degrade_crop(img, size, name, rng, params, margin=MARGIN):
    """(degraded, clean) size x size crops of `img`, the degradation applied with context around the crop."""
    big, m = _crop(img, size, rng, margin)
    degraded = degradations.degrade(name, np.asarray(big, np.float32), rng, **params.get(name, {}))
    return degraded[m:m + size, m:m + size], big[m:m + size, m:m + size]


def _check_sizes(images, size, key):
    for name, img in images:
        if min(img.shape[:2]) < size:
            raise ValueError(f"image {name!r} is {img.shape[0]}x{img.shape[1]}, smaller than "
                             f"config.data.{key}={size}")


class TrainSample:
    """element (a training-image index) + rng -> one training sample (see the module docstring)."""

    def __init__(self, images, names, params, patch_size, paired_images):
        self.images = [img for _, img in images]
        self.names = tuple(names)
        self.params = params
        self.patch_size = patch_size
        self.paired_images = frozenset(int(i) for i in paired_images)

    def __call__(self, index, rng):
        src, p = int(index), self.patch_size
        name = self.names[rng.integers(len(self.names))]
        degraded, clean = degrade_crop(self.images[src], p, name, rng, self.params)
        k = rng.integers(1, 8)               # never the identity, as the official loader
        if src in self.paired_images:
            tsrc, target = src, dihedral(clean, k)
        else:
            tsrc = int(rng.integers(len(self.images) - 1))
            tsrc += tsrc >= src              # any training image but this one
            target = dihedral(_crop(self.images[tsrc], p, rng)[0], rng.integers(1, 8))
        return {"degraded": dihedral(degraded, k), "target": target.astype(np.float32),
                "paired": np.bool_(src in self.paired_images), "de_id": np.int32(DEGRADATION_IDS[name]),
                "source": np.int32(src), "target_source": np.int32(tsrc)}


def paired_images(num_images, fraction, seed):
    """The fixed, seeded subset of training-image indices whose samples are paired."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"config.data.paired_fraction={fraction!r}, expected a value in [0, 1]")
    return np.sort(np.random.default_rng(seed).permutation(num_images)[:round(fraction * num_images)])


def train_dataset(config, images, process_index=0, process_count=1):
    """An endless grain IterDataset of this process's batches (global batch / process count samples each)."""
    d = config.data
    names = degradation_names(d)
    if d.batch_size % process_count:
        raise ValueError(f"config.data.batch_size={d.batch_size} is not divisible by the {process_count} processes")
    _check_sizes(images, d.patch_size, "patch_size")
    paired = paired_images(len(images), d.paired_fraction, config.seed)
    if len(paired) < len(images) and len(images) < 2:
        raise ValueError("unpaired training needs at least two training images (a target from another image)")
    ds = (grain.MapDataset.range(len(images)).seed(config.seed).shuffle().repeat(None)
          .random_map(TrainSample(images, names, degradation_params(d), d.patch_size, paired)))
    # Process p takes the p-th contiguous share of each global batch, so the global batch (shares concatenated
    # in process order) holds the same samples in the same order as on one process.
    ds = ds.batch(d.batch_size // process_count, drop_remainder=True)[process_index::process_count]
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=min(4, os.cpu_count() or 1),
                                              prefetch_buffer_size=d.prefetch))
    if d.num_workers:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.num_workers))
    return it


def eval_set(config, images):
    """The fixed held-out set: `data.eval_crops` crops per image, each degraded by every training degradation.
    Returns NumPy arrays `degraded`, `target` [N, S, S, 3], `de_id` [N] and the list of degradation names."""
    d = config.data
    names, params = degradation_names(d), degradation_params(d)
    _check_sizes(images, d.eval_size, "eval_size")
    degraded, target, used = [], [], []
    for i, (_, img) in enumerate(images):
        for j in range(d.eval_crops):
            for k, name in enumerate(names):
                rng = np.random.default_rng([EVAL_SEED, i, j, k])
                x, y = degrade_crop(img, d.eval_size, name, rng, params)
                degraded.append(x)
                target.append(y)
                used.append(name)
    return {"degraded": np.stack(degraded).astype(np.float32), "target": np.stack(target).astype(np.float32),
            "de_id": np.array([DEGRADATION_IDS[n] for n in used], np.int32), "names": used}
