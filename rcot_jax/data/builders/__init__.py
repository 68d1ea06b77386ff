"""The paper's datasets as TFDS datasets: one generic builder, one config per row of `catalog.LAYOUTS`.

None of these datasets is in the TFDS catalogue; their authors distribute them by hand (docs/data.md). A user
downloads one, points `--manual_dir` at it and runs `python -m rcot_jax.prepare --dataset=NAME --manual_dir=DIR
--data_dir=DIR`. The builder `rcot_images` has one config per dataset (`rcot_images/gopro`, ...). Records hold the
images encoded as given (PNG/JPEG bytes; DIV2K's low-resolution inputs are bicubic-upsampled to the target size,
as RCOT trains SR, and stored as PNG), the name and the size. Every image is fully decoded once while preparing, so
a prepared dataset holds no unreadable file. Reading (`catalog.prepared_source`) needs no TensorFlow.

Preparation writes into a temporary folder under `data_dir` and renames the finished dataset into place, with an
index of every record's name and size (`rcot_index.json`): an interrupted or failed preparation leaves nothing
that loads.
"""
import contextlib
import functools
import io
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from rcot_jax.data import catalog, degradations, sources
from rcot_jax.data.catalog import BUILDER, INDEX, LAYOUTS, VERSION

_SKIP = "--bad_files=skip"


def split_entries(layout, split, manual_dir, bad_files, file_list=""):
    """[(target path, degraded path or None, name)] of a split, checked from the file headers. Paired splits are
    looked for in the layout's own folders, then in its `alternatives`: the first that pairs anything is used.
    `file_list` (one degraded image per line, as the official lists name them) keeps the pairs it names."""
    folder = os.path.join(manual_dir, layout.splits[split][0])
    if len(layout.splits[split]) == 1:
        return [(path, None, name) for path, _, name, _ in sources.clean_folder(folder, bad_files, "--manual_dir",
                                                                                        _SKIP).entries]
    best = None                                          # (pairs, problems) of the layout with the most pairs
    for sub, d_template, t_template in [layout.splits[split], *layout.alternatives.get(split, [])]:
        folder = os.path.join(manual_dir, sub)
        if not os.path.isdir(folder):
            continue
        found = sources.list_images(folder, "--manual_dir")
        problems = sources.Problems(bad_files, f"--manual_dir={manual_dir} ({split})", _SKIP)
        degraded = found
        if file_list and split == "train":
            listed = sources.read_file_list(file_list, "--file_list")
            degraded = sources.restrict(found, listed, file_list, problems)
        pairs = sources.pair_up(degraded, found, folder, folder, d_template, t_template, problems, layout.scale)
        if pairs and (best is None or len(pairs) > len(best[0])):
            best = pairs, problems
    if best is None:
        present = sorted(os.listdir(manual_dir))
        raise sources.ImageError(
            f"--manual_dir={manual_dir}: no {split} pairs in the layouts this dataset comes in: {layout.layout}"
            + (f"; or {layout.others}" if layout.others else "") + f"; the folder holds {present[:6]}"
            + (f" and {len(present) - 6} more" if len(present) > 6 else ""))
    pairs, problems = best
    problems.settle()
    return [(t, d, name) for t, d, name, _ in pairs]


def _encoded(path, target_hw=None):
    """The file's bytes (after checking that they decode), or, with target_hw, the image upsampled to it as PNG."""
    img = sources.decode_image(path, path)
    if target_hw is None or img.shape[:2] == tuple(target_hw):
        with open(path, "rb") as f:
            return f.read(), img.shape[:2]
    up = degradations.bicubic_resize(img.astype(np.float32) / 255.0, tuple(target_hw))
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(up, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue(), tuple(target_hw)


@functools.cache
def _builder_class():
    import tensorflow_datasets as tfds

    class RcotImages(tfds.core.GeneratorBasedBuilder):
        """Image restoration datasets, paired or clean, prepared from their authors' files (catalog.LAYOUTS)."""
        VERSION = tfds.core.Version(VERSION)
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n, description=f"{l.homepage}; layout: {l.layout}")
                           for n, l in LAYOUTS.items()]
        MANUAL_DOWNLOAD_INSTRUCTIONS = "Download the dataset from its authors (rcot_jax docs/data.md)."
        code_path = None    # no checksums file (nothing is downloaded); also spares tfds its package-path lookup

        def __init__(self, *, bad_files="error", file_list="", **kwargs):
            self._bad_files, self._file_list = bad_files, file_list
            super().__init__(**kwargs)

        def _info(self):
            layout = LAYOUTS[self.builder_config.name]
            features = {"target": tfds.features.Tensor(shape=(), dtype=np.object_), "name": tfds.features.Text(),
                        "height": tfds.features.Scalar(np.int32), "width": tfds.features.Scalar(np.int32)}
            if layout.degradation:
                features["degraded"] = tfds.features.Tensor(shape=(), dtype=np.object_)
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                         homepage=layout.homepage,
                                         metadata=tfds.core.MetadataDict(degradation=layout.degradation))

        def _split_generators(self, dl_manager):
            layout = LAYOUTS[self.builder_config.name]
            manual = os.fspath(dl_manager.manual_dir)
            return {split: self._generate_examples(split_entries(layout, split, manual, self._bad_files,
                                                                 self._file_list))
                    for split in layout.splits}

        def _generate_examples(self, entries):
            for target, degraded, name in entries:
                t_bytes, hw = _encoded(target)
                example = {"target": t_bytes, "name": name, "height": hw[0], "width": hw[1]}
                if degraded is not None:
                    example["degraded"] = _encoded(degraded, hw)[0]
                yield name, example

    return RcotImages


def prepare(name, manual_dir, data_dir, bad_files="error", file_list=""):
    """Prepares dataset `name` from `manual_dir` into `data_dir`/rcot_images/NAME/1.0.0; returns that path.
    `file_list` keeps the training pairs it names (one degraded image per line, e.g. the official lists)."""
    import tensorflow_datasets as tfds
    layout = catalog.layout(name)
    if not os.path.isdir(manual_dir):
        raise ValueError(f"--manual_dir={manual_dir!r} does not exist; expected {layout.layout}")
    final = os.path.join(data_dir, BUILDER, name, VERSION)
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists; delete it to prepare {name} again")
    os.makedirs(data_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-preparing-", dir=data_dir)
    try:
        builder = _builder_class()(config=name, data_dir=tmp, file_format="array_record", bad_files=bad_files,
                                   file_list=file_list)
        # tfds prints "Downloading and preparing dataset Unknown size ..." and the temporary folder's name to
        # stdout, and draws progress bars: nothing is downloaded, and `prepare` logs where the dataset went.
        tfds.disable_progress_bar()
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        built = os.path.join(tmp, BUILDER, name, VERSION)
        index = {}
        for split in layout.splits:
            src = tfds.builder_from_directory(built).as_data_source(split)
            index[split] = [[r["name"].decode(), int(r["height"]), int(r["width"])] for r in
                            (src[i] for i in range(len(src)))]
        with open(os.path.join(built, INDEX), "w") as f:
            json.dump(index, f)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.rename(built, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
