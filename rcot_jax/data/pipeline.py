"""The grain input pipeline: random crops from the config's sources, paired or unpaired, and the held-out set.

A training element is one crop: `degraded` and `target` float32 [P, P, 3] in [0, 1], `paired` (whether the
paired term applies), `de_id` (rcot_jax.ids), and for inspection `source` / `target_source` (the record index
each came from). A clean source's crops are degraded on the fly, by one of `degradation_names(config.data)` per
sample; a paired source brings its degraded image (cropped at the same place as its target); an unpaired
source's targets come from its unrelated clean images. Several sources (`allinone`'s `data.mix` with prepared
datasets) are interleaved in proportion to their weights.

Pairing (`data.paired_fraction`): a fixed, seeded subset of round(fraction * n) records is paired; a sample
cropped from one of them gets its own target crop. Every other sample is unpaired: its target is an independent
random crop, with its own augmentation, of a *different* record, so a degraded image is never shown with its own
target.

Everything is a function of `config.seed` and the element's position in the stream (grain's `random_map`),
so the stream is the same for any number of threads or workers, and the iterator's state (a position)
restores it exactly.
"""
import os

import grain
import numpy as np
from absl import logging

from rcot_jax import configs, paths
from rcot_jax.data import catalog, degradations
from rcot_jax.ids import DEGRADATION_IDS, degradation_id

TFDS_PREFIX = "tfds:"    # a prepared dataset in data.mix
_TASK_DEGRADATION = {"deblur": "blur", "derain": "rain", "dehaze": "haze", "sr": "sr_x4", "lowlight": "lowlight"}
NOISE_SIGMAS = (15, 25, 50)
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
        names = tuple(n for n in data_config.mix if not n.startswith(TFDS_PREFIX))
        unknown = [n for n in names if n not in DEGRADATION_IDS]
        if not data_config.mix or unknown:
            raise ValueError(f"config.data.mix={tuple(data_config.mix)!r}: expected degradation names from "
                             f"{sorted(DEGRADATION_IDS)} or prepared datasets as '{TFDS_PREFIX}NAME'")
        return names
    if task not in _TASK_DEGRADATION:
        raise ValueError(f"config.data.task={task!r}, expected one of {configs.TASKS}")
    return (_TASK_DEGRADATION[task],)


def _mix(d):
    """Splits `data.mix` (allinone) into synthetic degradation names and 'tfds:NAME' datasets, with their weights
    (`data.mix_weights`, one per entry; empty: equal)."""
    entries = tuple(d.mix)
    weights = tuple(d.mix_weights) or (1.0,) * len(entries)
    if len(weights) != len(entries) or min(weights, default=1) <= 0:
        raise ValueError(f"config.data.mix_weights={tuple(d.mix_weights)!r}: expected one positive weight per "
                         f"entry of config.data.mix={entries!r}")
    names = [(e, w) for e, w in zip(entries, weights) if not e.startswith(TFDS_PREFIX)]
    datasets = [(e[len(TFDS_PREFIX):], w) for e, w in zip(entries, weights) if e.startswith(TFDS_PREFIX)]
    return names, datasets


def _task_degradation(d):
    names = degradation_names(d)
    return names[0] if len(names) == 1 else None


def _components(d, split):
    d = paths.expand_data_paths(d)
    if d.task != "allinone":
        source = catalog.source(d, split, _task_degradation(d))
        return [(source, degradation_names(d) if source.kind == "clean" else (), None, 1.0)]
    synthetic, datasets = _mix(d)
    out = []
    if synthetic:
        source = catalog.source(d, split, _task_degradation(d))
        if source.kind != "clean":
            raise ValueError(f"config.data.mix={tuple(d.mix)!r} names synthetic degradations, which need a clean "
                             f"source; config.data.source={d.source!r} is {source.kind}")
        w = np.asarray([w for _, w in synthetic], np.float64)
        probs = None if np.all(w == w[0]) else w / w.sum()     # None: uniform
        out.append((source, tuple(n for n, _ in synthetic), probs, float(w.sum())))
    tfds_split = d.split if split == "train" else d.eval_split
    for name, w in datasets:
        if split == "eval" and tfds_split not in catalog.prepared_splits(name, d.data_dir or None):
            logging.info("data.mix: %s has no %r split; it is not evaluated", name, tfds_split)
            continue
        out.append((catalog.prepared_source(name, tfds_split, d.data_dir or None), (), None, float(w)))
    return out


def train_components(d):
    """[(source, synthetic degradation names, their probabilities or None, weight)] of the training stream."""
    return _components(d, "train")


def eval_components(d):
    """[(source, synthetic degradation names)] of the held-out set."""
    return [(source, names) for source, names, _, _ in _components(d, "eval")]


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


def _fit(source, size, key):
    """`source` without the records smaller than size x size (logged); an error if none is left."""
    small = [i for i, hw in enumerate(source.sizes) if min(hw) < size]
    if small:
        shown = ", ".join(f"{source.names[i]} ({source.sizes[i][0]}x{source.sizes[i][1]})" for i in small[:5])
        if len(small) == len(source):
            raise ValueError(f"every image is smaller than config.data.{key}={size}: {shown}")
        logging.warning("skipping %d of %d images smaller than config.data.%s=%d: %s", len(small), len(source),
                        key, size, shown)
        small = set(small)
        source = source.keep([i for i in range(len(source)) if i not in small])
    return source


def _float(img):
    return np.asarray(img, np.float32) / 255.0


def _crop_at(img, size, top, left):
    return img[top:top + size, left:left + size]


class TrainSample:
    """element (a record index of `source`) + rng -> one training sample (see the module docstring).

    `names`: the synthetic degradations drawn from for a clean source (with probabilities `probs`); a paired or
    unpaired source brings its own degraded images (`source.degradation` names them)."""

    def __init__(self, source, names, params, patch_size, paired_images, probs=None):
        self.source, self.names, self.probs = source, tuple(names or ()), probs
        self.targets = source.targets if source.kind == "unpaired" else source
        self.params = params
        self.patch_size = patch_size
        self.paired_images = frozenset(int(i) for i in paired_images)

    def _degraded_and_clean(self, record, rng):
        p = self.patch_size
        if self.source.kind == "clean":
            n = len(self.names)
            name = self.names[rng.integers(n) if self.probs is None else rng.choice(n, p=self.probs)]
            degraded, clean = degrade_crop(_float(record["target"]), p, name, rng, self.params)
            return degraded, clean, name
        deg = record["degraded"]
        top, left = rng.integers(0, deg.shape[0] - p + 1), rng.integers(0, deg.shape[1] - p + 1)
        clean = _float(_crop_at(record["target"], p, top, left)) if "target" in record else None
        return _float(_crop_at(deg, p, top, left)), clean, self.source.degradation

    def _other_target(self, src, name, rng):
        """A random target crop from a different image (an unpaired source: any clean image of another name)."""
        n = len(self.targets)
        if self.source.kind == "unpaired":
            tsrc = int(rng.integers(n))
            if os.path.splitext(self.targets.names[tsrc])[0] == os.path.splitext(name)[0]:
                tsrc = (tsrc + 1) % n
        else:
            tsrc = int(rng.integers(n - 1))
            tsrc += tsrc >= src              # any training image but this one
        return tsrc, _float(_crop(self.targets[tsrc]["target"], self.patch_size, rng)[0])

    def __call__(self, index, rng):
        src = int(index)
        record = self.source[src]
        degraded, clean, name = self._degraded_and_clean(record, rng)
        k = rng.integers(1, 8)               # never the identity, as the official loader
        paired = src in self.paired_images
        if paired:
            tsrc, target = src, dihedral(clean, k)
        else:
            tsrc, target = self._other_target(src, record["name"], rng)
            target = dihedral(target, rng.integers(1, 8))
        return {"degraded": dihedral(degraded, k), "target": target.astype(np.float32),
                "paired": np.bool_(paired), "de_id": np.int32(degradation_id(name)),
                "source": np.int32(src), "target_source": np.int32(tsrc)}


def paired_images(num_images, fraction, seed):
    """The fixed, seeded subset of training-image indices whose samples are paired."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"config.data.paired_fraction={fraction!r}, expected a value in [0, 1]")
    return np.sort(np.random.default_rng(seed).permutation(num_images)[:round(fraction * num_images)])


def _component_dataset(config, source, names, probs, seed):
    d = config.data
    source = _fit(source, d.patch_size, "patch_size")
    if source.kind == "unpaired":
        source.targets = _fit(source.targets, d.patch_size, "patch_size")
    fraction = 0.0 if source.kind == "unpaired" else d.paired_fraction
    paired = paired_images(len(source), fraction, seed)
    if len(paired) < len(source) and source.kind != "unpaired" and len(source) < 2:
        raise ValueError("unpaired training needs at least two training images (a target from another image)")
    return (grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat(None)
            .random_map(TrainSample(source, names, degradation_params(d), d.patch_size, paired, probs)))


def train_dataset(config, components=None, process_index=0, process_count=1):
    """An endless grain IterDataset of this process's batches (global batch / process count samples each).

    `components`: [(source, synthetic degradation names, their probabilities or None, weight)], by default
    `train_components(config.data)`. Several components are interleaved in proportion to their weights
    (grain's deterministic `mix`)."""
    d = config.data
    if d.batch_size % process_count:
        raise ValueError(f"config.data.batch_size={d.batch_size} is not divisible by the {process_count} processes")
    components = train_components(d) if components is None else components
    datasets, weights = [], []
    for i, (source, names, probs, weight) in enumerate(components):
        datasets.append(_component_dataset(config, source, names, probs, config.seed + i))
        weights.append(weight)
    ds = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
    # Process p takes the p-th contiguous share of each global batch, so the global batch (shares concatenated
    # in process order) holds the same samples in the same order as on one process.
    ds = ds.batch(d.batch_size // process_count, drop_remainder=True)[process_index::process_count]
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=min(4, os.cpu_count() or 1),
                                              prefetch_buffer_size=d.prefetch))
    if d.num_workers:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.num_workers))
    return it


class EvalSet:
    """The fixed held-out set, random access: item i -> {"degraded", "target": float32 [H, W, 3], "name",
    "degradation"}; `shapes[i]` is its (H, W), known without decoding.

    A clean source is degraded by each of its synthetic degradations with a fixed seed (not the run's): as
    `data.eval_crops` crops of `data.eval_size` per image when the source is the embedded photographs or a clean
    folder and eval_crops > 0, else at full resolution. A paired source is its test split at full resolution."""

    def __init__(self, config, components=None):
        d = config.data
        self.params = degradation_params(d)
        self.items, self.shapes = [], []
        components = eval_components(d) if components is None else components
        for c, (source, names) in enumerate(components):
            crops = d.eval_crops if source.kind == "clean" and getattr(source, "croppable", False) else 0
            if crops:
                source = _fit(source, d.eval_size, "eval_size")
            for i in range(len(source)):
                for j in range(max(crops, 1)):
                    for k, name in enumerate(names or (source.degradation,)):
                        self.items.append((source, i, j if crops else None, k, name))
                        self.shapes.append((d.eval_size,) * 2 if crops else tuple(source.sizes[i]))
        if d.eval_limit:
            self.items, self.shapes = self.items[:d.eval_limit], self.shapes[:d.eval_limit]
        self.degradations = [item[4] or "custom" for item in self.items]
        several = len(set(self.degradations)) > 1
        self.names = [os.path.splitext(source.names[i])[0] + (f"_crop{j}" if j is not None else "") +
                      (f"_{deg}" if several else "") for (source, i, j, _, _), deg in zip(self.items, self.degradations)]
        self.split = d.eval_split if d.source in ("tfds", "paired_folders", "unpaired_folders") else "heldout"
        self.eval_size = d.eval_size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        source, i, j, k, name = self.items[index]
        record = source[i]
        if source.kind == "clean":
            img = _float(record["target"])
            if j is None:
                rng = np.random.default_rng([EVAL_SEED, i, k])
                degraded = degradations.degrade(name, img, rng, **self.params.get(name, {}))
                target = img
            else:
                rng = np.random.default_rng([EVAL_SEED, i, j, k])
                degraded, target = degrade_crop(img, self.eval_size, name, rng, self.params)
        else:
            degraded, target = _float(record["degraded"]), _float(record["target"])
        return {"degraded": np.asarray(degraded, np.float32), "target": np.asarray(target, np.float32),
                "name": record["name"], "degradation": self.degradations[index]}
