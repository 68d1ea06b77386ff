"""The data catalog: one row per kind of source (`SOURCES`, what `config.data.source` names) and one per prepared
dataset (`LAYOUTS`, what `python -m rcot_jax.prepare --dataset=NAME` and `config.data.name` name).

Adding a dataset adds a `Layout` row; adding a kind of source adds a `SOURCES` row. The grain pipeline
(pipeline.py) asks `source(config.data, split, degradation)` for its sources and names no dataset. A prepared
dataset is written by `rcot_jax.data.builders` (a TFDS builder, ArrayRecord files) into
DATA_DIR/rcot_images/NAME/1.0.0 with an index of every record's name and size, and read here without TensorFlow.
"""
import dataclasses
import json
import os

from rcot_jax.data import sources

BUILDER = "rcot_images"
VERSION = "1.0.0"
INDEX = "rcot_index.json"


# ------------------------------------------------------------------------------------------ prepared datasets
@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a dataset's images are under its manual_dir. `splits`: split -> (folder, degraded template, target
    template) for paired data (templates as in `config.data.match`, relative to the folder, without extension), or
    split -> (folder,) for clean images (every image under it)."""
    degradation: str | None      # the degradation the pairs show; None: clean images, degraded on the fly
    splits: dict
    homepage: str
    layout: str                  # the folders a user arranges, for docs/data.md and the error messages
    scale: int = 1               # degraded images are this much smaller than their targets (upsampled here)
    # Other layouts the dataset is distributed in: split -> [(folder, degraded template, target template)], tried
    # after `splits`' when it finds no pair (the authors' archives, the official code's, PromptIR's).
    alternatives: dict = dataclasses.field(default_factory=dict)
    others: str = ""             # those layouts, for docs/data.md and the error messages


_RAIN_SPLITS = {split: (split, "rainy/rain-{id}", "norain/norain-{id}") for split in ("train", "test")}
_RAIN_LAYOUT = "train/rainy/rain-N.png, train/norain/norain-N.png, test/... the same"
_RAIN_OTHERS = {split: [(split, "rainy/rain-{id}", "gt/norain-{id}"), (split, "input/{name}", "target/{name}")]
                for split in ("train", "test")}
_RAIN_OTHER_LAYOUTS = ("the official code's train/rainy/rain-N.png + train/gt/norain-N.png; test/input/NAME + "
                       "test/target/NAME")
_SAME_NAMES = ("", "input/{name}", "target/{name}")       # PromptIR's and Restormer's test sets
LAYOUTS = {
    "gopro": Layout("blur", {"train": ("train", "{seq}/blur/{id}", "{seq}/sharp/{id}"),
                             "test": ("test", "{seq}/blur/{id}", "{seq}/sharp/{id}")},
                    "https://seungjunnah.github.io/Datasets/gopro",
                    "train/GOPR*/blur/*.png, train/GOPR*/sharp/*.png, test/... the same"),
    "rain100l": Layout("rain", _RAIN_SPLITS,
                       "https://github.com/hezhangsprinter/ID-CGAN (Rain100L, via PromptIR's links)", _RAIN_LAYOUT,
                       alternatives=_RAIN_OTHERS, others=_RAIN_OTHER_LAYOUTS),
    "rain100h": Layout("rain", _RAIN_SPLITS, "https://www.icst.pku.edu.cn/struct/Projects/joint_rain_removal.html",
                       _RAIN_LAYOUT, alternatives=_RAIN_OTHERS, others=_RAIN_OTHER_LAYOUTS),
    "reside_ots": Layout("haze", {"train": ("", "hazy/{id}_{beta}_{a}", "clear/{id}")},
                         "https://sites.google.com/view/reside-dehaze-datasets",
                         "hazy/0025_0.8_0.04.jpg, clear/0025.jpg",
                         alternatives={"train": [("", "hazy/{part}/{id}_{beta}_{a}", "clear/{id}"),
                                                 ("", "synthetic/{part}/{id}_{beta}_{a}", "original/{id}")]},
                         others="hazy/partN/0025_0.8_0.04.jpg + clear/0025.jpg; as distributed: "
                                "synthetic/partN/0025_0.8_0.04.jpg + original/0025.jpg"),
    "sots_outdoor": Layout("haze", {"test": ("", "hazy/{id}_{beta}_{a}", "gt/{id}")},
                           "https://sites.google.com/view/reside-dehaze-datasets",
                           "hazy/0001_0.8_0.2.jpg, gt/0001.png",
                           alternatives={"test": [("", "input/{id}_{beta}_{a}", "target/{id}"), _SAME_NAMES]},
                           others="PromptIR's input/0001_0.8_0.2.jpg + target/0001.png, or input/NAME + "
                                  "target/NAME"),
    "lol": Layout("lowlight", {"train": ("our485", "low/{id}", "high/{id}"),
                               "test": ("eval15", "low/{id}", "high/{id}")},
                  "https://daooshee.github.io/BMVC2018website/",
                  "our485/low/N.png, our485/high/N.png, eval15/low/N.png, eval15/high/N.png"),
    "bsd400_wed": Layout(None, {"train": ("",)}, "BSD400 + Waterloo Exploration Database (PromptIR's links)",
                         "any folders of clean images, e.g. BSD400/*.jpg, WED/*.bmp"),
    "cbsd68": Layout(None, {"test": ("",)}, "https://github.com/clausmichele/CBSD68-dataset",
                     "CBSD68/*.png (clean originals)"),
    "kodak24": Layout(None, {"test": ("",)}, "https://r0k.us/graphics/kodak/", "kodim01.png ... kodim24.png"),
    "div2k_x4": Layout("sr_x4", {"train": ("", "DIV2K_train_LR_bicubic/X4/{id}x4", "DIV2K_train_HR/{id}"),
                                 "test": ("", "DIV2K_valid_LR_bicubic/X4/{id}x4", "DIV2K_valid_HR/{id}")},
                       "https://data.vision.ee.ethz.ch/cvl/DIV2K/",
                       "DIV2K_train_HR/0001.png, DIV2K_train_LR_bicubic/X4/0001x4.png, DIV2K_valid_... the same",
                       scale=4),
}


def layout(name):
    """The row of prepared dataset `name`."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def read_index(name, data_dir=None):
    """(the prepared dataset's folder, {split: [[name, H, W], ...]}); an error if it was not (fully) prepared."""
    layout(name)
    data_dir = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    root = os.path.join(data_dir, BUILDER, name, VERSION)
    if not os.path.exists(os.path.join(root, INDEX)):
        raise FileNotFoundError(f"config.data.name={name!r}: no prepared dataset at {root} (prepare it with "
                                f"python -m rcot_jax.prepare --dataset={name} --manual_dir=DIR "
                                f"--data_dir={data_dir})")
    with open(os.path.join(root, INDEX)) as f:
        return root, json.load(f)


def prepared_source(name, split, data_dir=None):
    """A split of a dataset prepared with `python -m rcot_jax.prepare`, as a source."""
    root, index = read_index(name, data_dir)
    if split not in index:
        raise ValueError(f"config.data.name={name!r} has no split {split!r}; it has {sorted(index)}")
    return sources.PreparedSource(root, split, index[split], LAYOUTS[name].degradation)


def prepared_splits(name, data_dir=None):
    """The splits of a prepared dataset."""
    return read_index(name, data_dir)[1].keys()


# ---------------------------------------------------------------------------------------------- kinds of source
# Each row: (config.data, 'train' or 'eval', the task's degradation name or None) -> a source.

_FOLDER_KEYS = {"train": ("degraded_dir", "target_dir"), "eval": ("eval_degraded_dir", "eval_target_dir")}


def _need(d, *keys):
    missing = [k for k in keys if not d[k]]
    if missing:
        raise ValueError(f"config.data.source={d.source!r} needs " + ", ".join(f"config.data.{k}" for k in missing))


def _clean_folder(d, split, degradation):
    """Clean images of `data.train_dir`, degraded on the fly; held out: `data.eval_dir`, else embedded photos."""
    if split == "train":
        _need(d, "train_dir")
        return sources.clean_folder(d.train_dir, d.bad_files, "train_dir")
    return sources.clean_folder(d.eval_dir, d.bad_files, "eval_dir") if d.eval_dir else sources.EmbeddedSource(
        "heldout")


def _embedded(d, split, degradation):
    """Photographs shipped with scikit-image (offline), or `data.train_dir` where one is given."""
    if split == "train" and not d.train_dir:
        return sources.EmbeddedSource("train")
    return _clean_folder(d, split, degradation)


def _paired_folders(d, split, degradation):
    """(degraded, target) pairs of two folders, matched by `data.match`; `data.file_list` keeps the named ones."""
    keys = _FOLDER_KEYS[split]
    _need(d, *keys)
    return sources.paired_folders(d[keys[0]], d[keys[1]], d.match, d.file_list if split == "train" else "",
                                  degradation, d.bad_files, keys)


def _unpaired_folders(d, split, degradation):
    """Degraded images and unrelated clean ones; held out: pairs, as `paired_folders`."""
    if split == "eval":
        return _paired_folders(d, split, degradation)
    _need(d, *_FOLDER_KEYS[split])
    return sources.unpaired_folders(d.degraded_dir, d.target_dir, degradation, d.bad_files)


def _tfds(d, split, degradation):
    """A prepared dataset (`data.name`, `data.split`; held out: `data.eval_name` or the same, `data.eval_split`)."""
    _need(d, "name")
    if split == "train":
        return prepared_source(d.name, d.split, d.data_dir or None)
    return prepared_source(d.eval_name or d.name, d.eval_split, d.data_dir or None)


SOURCES = {"embedded": _embedded, "clean_folder": _clean_folder, "paired_folders": _paired_folders,
           "unpaired_folders": _unpaired_folders, "tfds": _tfds}


def source(d, split, degradation=None):
    """The source `config.data.source` names, for 'train' or 'eval'."""
    if d.source not in SOURCES:
        raise ValueError(f"config.data.source={d.source!r}, expected one of {tuple(SOURCES)}")
    return SOURCES[d.source](d, split, degradation)
