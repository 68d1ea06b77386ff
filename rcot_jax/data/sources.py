"""Data sources: random-access collections of image records, decoded lazily on access.

Every source follows grain's `RandomAccessDataSource` protocol (`__len__`, `__getitem__`) and returns records

    {"target": uint8 [H, W, 3], "degraded": uint8 [H, W, 3] (paired and unpaired sources), "name": str}

so memory does not grow with the dataset. Besides the protocol a source has `kind` ('clean': targets only, degraded
on the fly by the pipeline; 'paired': aligned (degraded, target) pairs; 'unpaired': degraded images whose targets
come from an unrelated collection of clean images, `source.targets`), `degradation` (the degradation name of a
paired or unpaired source, e.g. 'rain'; None for clean sources) and `sizes` ((H, W) of every record, read without
decoding the pixels).

Decoding (`decode_image`) turns anything Pillow opens into RGB uint8, in a documented way: EXIF orientation is
applied; greyscale is replicated to three channels; alpha is dropped; palette images are expanded; CMYK is
converted to RGB (Adobe's inverted CMYK JPEGs included); 16-bit images are scaled to 8 bits (x / 257, rounded),
never clipped; floating-point images are taken as [0, 1]. A file that cannot be decoded raises `ImageError` naming
the file.

Folders are listed recursively (sorted, hidden files skipped) for the extensions in `IMAGE_EXTENSIONS`. Files are
checked when the source is built, from their headers: an empty file, a file Pillow cannot identify, a degraded
image without its target, a pair whose sizes differ or a file list entry that names no file is a bad input.
`bad_files='error'` (default) stops with an `ImageError` naming the file and the problem; `bad_files='skip'` drops
it and logs the number skipped with the first few names. Two files with the same name but different extensions
are always an error (which one is meant?); targets that no degraded image refers to are unused (logged). A file
whose header is fine but whose data is truncated fails when it is decoded, with an `ImageError` naming it; under
`bad_files='skip'` every file is decoded once when the source is built, so such a file is skipped (and named) too.
"""
import copy
import functools
import io
import os
import re

import numpy as np
import skimage
from absl import logging
from PIL import Image, ImageOps

from rcot_jax.data import degradations

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
BAD_FILE_POLICIES = ("error", "skip")
_SHOWN = 5   # names listed in a log line or an error


class ImageError(ValueError):
    """A file that cannot serve as an image; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------------ decoding
def _to_rgb_uint8(im):
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, np.float64)
        arr = arr / 257.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else arr
    elif im.mode == "F":
        arr = np.clip(np.asarray(im, np.float64), 0.0, 1.0) * 255.0
    else:
        if im.mode == "P":
            im = im.convert("RGBA")
        return np.asarray(im.convert("RGB"), np.uint8)
    grey = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def decode_image(data, name):
    """An encoded image (bytes) or an image file path -> RGB uint8 [H, W, 3] (see the module docstring)."""
    encoded = isinstance(data, (bytes, bytearray))
    if (len(data) if encoded else os.path.getsize(data)) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data) if encoded else data) as im:
            im.load()
            return np.ascontiguousarray(_to_rgb_uint8(ImageOps.exif_transpose(im)))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from None


def image_size(path):
    """(H, W) of an image file from its header (EXIF orientation applied), without decoding the pixels."""
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            w, h = im.size
            transposed = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)   # EXIF orientation: rotated 90 degrees
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return (w, h) if transposed else (h, w)


# ---------------------------------------------------------------------------------------------- bad inputs
class Problems:
    """Collects bad inputs; `settle` raises (policy 'error') or logs what was skipped (policy 'skip')."""

    def __init__(self, policy, what, skip_hint="--config.data.bad_files=skip"):
        if policy not in BAD_FILE_POLICIES:
            raise ValueError(f"config.data.bad_files={policy!r}, expected one of {BAD_FILE_POLICIES}")
        self.policy, self.what, self.skip_hint, self.items = policy, what, skip_hint, []

    def add(self, message):
        self.items.append(message)

    def settle(self):
        if not self.items:
            return
        shown = "; ".join(self.items[:_SHOWN]) + (f"; ... ({len(self.items) - _SHOWN} more)"
                                                    if len(self.items) > _SHOWN else "")
        if self.policy == "error":
            raise ImageError(f"{self.what}: {len(self.items)} bad input(s): {shown} ({self.skip_hint} skips them)")
        logging.warning("%s: skipped %d bad input(s): %s", self.what, len(self.items), shown)


def _where(key):
    return key if key.startswith("-") else f"config.data.{key}"


def list_images(directory, key):
    """{relative path without extension: relative path} of the images under `directory`, recursively; `key` names
    where the folder came from in errors ('train_dir' for config.data.train_dir, or a flag such as '--manual_dir')."""
    directory = os.fspath(directory)
    where = _where(key)
    if not directory or not os.path.isdir(directory):
        raise ImageError(f"{where}={directory!r} does not exist or is not a directory")
    found, ignored = {}, []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(root, f), directory)
            stem, ext = os.path.splitext(rel)
            if f.startswith("."):
                continue
            if ext.lower() not in IMAGE_EXTENSIONS:
                ignored.append(rel)
            elif stem in found:
                raise ImageError(f"{os.path.join(directory, found[stem])} and {os.path.join(directory, rel)}: two "
                                 "images with the same name (which one is meant?)")
            else:
                found[stem] = rel
    if ignored:
        logging.info("%s: ignored %d file(s) without an image extension (%s): %s", directory, len(ignored),
                     " ".join(IMAGE_EXTENSIONS), ", ".join(ignored[:_SHOWN]))
    if not found:
        raise ImageError(f"{where}={directory!r} holds no images ({' '.join(IMAGE_EXTENSIONS)})")
    return found


def _sized(paths, problems):
    """[(path, (H, W))] of the readable ones among `paths`; the others go to `problems`. Under 'skip' each file
    is also decoded in full, so that one truncated after a good header is skipped here, not met mid-run."""
    out = []
    for p in paths:
        try:
            hw = image_size(p)
            if problems.policy == "skip":
                decode_image(p, p)
            out.append((p, hw))
        except ImageError as e:
            problems.add(str(e))
    return out


# ------------------------------------------------------------------------------------------------- sources
class FileSource:
    """Records decoded from files: `entries` is [(target path, degraded path or None, name, (H, W))]."""

    def __init__(self, entries, kind, degradation=None, targets=None, croppable=False):
        self.entries, self.kind, self.degradation = list(entries), kind, degradation
        self.targets, self.croppable = targets, croppable
        self.names = [e[2] for e in self.entries]
        self.sizes = [e[3] for e in self.entries]

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, index):
        target, degraded, name, _ = self.entries[index]
        record = {"name": name}        # decode errors name the file
        if target is not None:
            record["target"] = decode_image(target, target)
        if degraded is not None:
            record["degraded"] = decode_image(degraded, degraded)
        return record

    def keep(self, indices):
        """The same source restricted to `indices` (in that order)."""
        return FileSource([self.entries[i] for i in indices], self.kind, self.degradation, self.targets,
                          self.croppable)


def clean_folder(directory, bad_files="error", key="train_dir", skip_hint="--config.data.bad_files=skip"):
    """Clean images of a folder (recursively); the pipeline degrades them on the fly."""
    found = list_images(directory, key)
    problems = Problems(bad_files, f"{_where(key)}={directory!r}", skip_hint)
    sized = _sized([os.path.join(directory, rel) for rel in found.values()], problems)
    problems.settle()
    return FileSource([(p, None, os.path.relpath(p, directory), hw) for p, hw in sized], "clean", croppable=True)


def _template_regex(template):
    """'rain-{id}' -> a regex over relative paths without extension; each field matches within one path part."""
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+?)" for i, p in enumerate(parts))
    return re.compile(pattern + r"\Z")


def parse_match(match):
    """'rain-{id} -> norain-{id}' -> (degraded template, target template); '' -> the same relative path."""
    if not match:
        return "{path}", "{path}"
    sides = [s.strip() for s in match.split("->")]
    if len(sides) != 2 or not all(sides):
        raise ValueError(f"config.data.match={match!r}: expected 'DEGRADED_TEMPLATE -> TARGET_TEMPLATE', e.g. "
                         "'rain-{id} -> norain-{id}' (file names without extension, relative to the folders)")
    fields = [set(re.findall(r"\{(\w+)\}", s)) for s in sides]
    if not fields[1] <= fields[0]:
        raise ValueError(f"config.data.match={match!r}: the target template uses fields "
                         f"{sorted(fields[1] - fields[0])} that the degraded template does not define")
    return tuple(sides)


def read_file_list(path, key="config.data.file_list"):
    """The names a file list holds (one per line; '#' comments), without extensions, '/'-separated."""
    try:
        with open(path) as f:
            names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError as e:
        raise ValueError(f"{key}={path!r}: {e}") from None
    return [os.path.splitext(n.replace("\\", "/"))[0] for n in names]


def restrict(found, listed, file_list, problems):
    """The entries of `found` that the file list names (as a relative path or a path suffix, either way)."""
    keep = {}
    for name in listed:
        hits = [k for k in found if k == name or k.endswith("/" + name) or name.endswith("/" + k)]
        if not hits:
            problems.add(f"{file_list}: {name!r} names no image")
        keep.update((k, found[k]) for k in hits)
    return keep


def pair_up(degraded, targets, degraded_dir, target_dir, d_template, t_template, problems, scale=1):
    """[(target path, degraded path, name, (H, W))]: each degraded image (of `list_images`) whose name matches
    `d_template` with the target `t_template` names. Degraded images that do not match the template are not
    degraded images (ignored); a missing target, an unreadable file or a size mismatch goes to `problems`. With
    `scale`, degraded images are `scale` times smaller than their targets."""
    regex = _template_regex(d_template)
    entries = []
    for stem, rel in degraded.items():
        m = regex.match(stem)
        if m is None:
            continue
        deg, t_stem = os.path.join(degraded_dir, rel), t_template.format(**m.groupdict())
        if t_stem not in targets:
            problems.add(f"{deg}: no target {t_stem!r} in {target_dir}")
            continue
        target = os.path.join(target_dir, targets[t_stem])
        sizes = dict(_sized([target, deg], problems))
        if len(sizes) < 2:
            continue
        (th, tw), (dh, dw) = sizes[target], sizes[deg]
        if (th // scale, tw // scale) != (dh, dw):
            problems.add(f"{deg}: {dh}x{dw} but its target {target} is {th}x{tw}" +
                         (f" (expected 1/{scale} of it)" if scale > 1 else ""))
            continue
        entries.append((target, deg, stem, sizes[target]))
    return entries


def paired_folders(degraded_dir, target_dir, match="", file_list="", degradation=None, bad_files="error",
                   keys=("degraded_dir", "target_dir")):
    """Aligned pairs: each degraded image with the target image that `match` maps it to (see `parse_match`); many
    degraded images may share one target (RESIDE: '{id}_{beta}_{a} -> {id}')."""
    degraded, targets = list_images(degraded_dir, keys[0]), list_images(target_dir, keys[1])
    where = f"config.data.{keys[0]}={degraded_dir!r}"
    problems = Problems(bad_files, where)
    if file_list:
        degraded = restrict(degraded, read_file_list(file_list), file_list, problems)
    d_template, t_template = parse_match(match)
    entries = pair_up(degraded, targets, degraded_dir, target_dir, d_template, t_template, problems)
    problems.settle()
    if not entries:
        raise ImageError(f"{where}: no image matches a target in config.data.{keys[1]}={target_dir!r} "
                         f"(config.data.match={match!r})")
    used = {e[0] for e in entries}
    unused = [rel for rel in targets.values() if os.path.join(target_dir, rel) not in used]
    if unused and not file_list:
        logging.warning("config.data.%s=%r: %d target(s) without a degraded image are unused: %s", keys[1],
                        target_dir, len(unused), ", ".join(unused[:_SHOWN]))
    return FileSource(entries, "paired", degradation)


def unpaired_folders(degraded_dir, target_dir, degradation=None, bad_files="error"):
    """Degraded images and clean images from two unrelated folders (RCOT's unpaired setting)."""
    found = list_images(degraded_dir, "degraded_dir")
    problems = Problems(bad_files, f"config.data.degraded_dir={degraded_dir!r}")
    sized = _sized([os.path.join(degraded_dir, rel) for rel in found.values()], problems)
    problems.settle()
    targets = clean_folder(target_dir, bad_files, "target_dir")
    return FileSource([(None, p, os.path.relpath(p, degraded_dir), hw) for p, hw in sized], "unpaired",
                      degradation, targets=targets)


# ---------------------------------------------------------------------------------------- embedded photos
# Real photographs shipped with scikit-image (offline; read from its data folder, never a fetcher that could
# download). Synthetic images (chessboard, logo, ...), the motion-blurred clock_motion.png and
# motorcycle_right.png (a near duplicate of the left view) are left out.
SKIMAGE_DATA_DIR = os.path.join(os.path.dirname(skimage.__file__), "data")
EMBEDDED = {
    "train": ("rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "camera.png",
              "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png", "page.png"),
    "heldout": ("astronaut.png", "chelsea.png", "coffee.png"),
}
_EMBEDDED_MAX_SIDE, _EMBEDDED_MULTIPLE = 512, 16


@functools.lru_cache(maxsize=None)
def _embedded_image(fname):
    """An embedded photograph as RGB uint8: downscaled (bicubic) to a longer side of at most 512, then its
    bottom/right edges cropped to multiples of 16."""
    img = decode_image(os.path.join(SKIMAGE_DATA_DIR, fname), fname)
    h, w = img.shape[:2]
    if max(h, w) > _EMBEDDED_MAX_SIDE:
        scale = _EMBEDDED_MAX_SIDE / max(h, w)
        out_hw = tuple(min(_EMBEDDED_MAX_SIDE, max(1, round(n * scale))) for n in (h, w))
        small = degradations.bicubic_resize(img.astype(np.float32) / 255.0, out_hw)
        img = np.round(np.clip(small, 0.0, 1.0) * 255.0).astype(np.uint8)
    m = _EMBEDDED_MULTIPLE
    img = np.ascontiguousarray(img[:img.shape[0] // m * m, :img.shape[1] // m * m])
    img.setflags(write=False)
    return img


class EmbeddedSource:
    """The embedded photographs of a split ('train' or 'heldout'), clean; decoded once and cached."""
    kind, degradation, targets, croppable = "clean", None, None, True

    def __init__(self, split, names=None):
        if split not in EMBEDDED:
            raise ValueError(f"embedded split must be one of {sorted(EMBEDDED)}; got {split!r}")
        self.split, self.names = split, list(EMBEDDED[split] if names is None else names)
        self.sizes = [_embedded_image(n).shape[:2] for n in self.names]

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        return {"target": _embedded_image(self.names[index]), "name": self.names[index]}

    def keep(self, indices):
        return EmbeddedSource(self.split, [self.names[i] for i in indices])


# --------------------------------------------------------------------------------------- prepared datasets
class PreparedSource:
    """A split of a prepared dataset (rcot_jax.data.catalog): ArrayRecord files read with `tfds.data_source` (no
    TensorFlow), the images stored encoded and decoded here on access. `entries`: [[name, H, W]] from its index."""
    croppable, targets = False, None

    def __init__(self, root, split, entries, degradation):
        import tensorflow_datasets as tfds
        self.kind = "paired" if degradation else "clean"
        self.degradation = degradation
        self._source = tfds.builder_from_directory(root).as_data_source(split)
        self.names = [n for n, _, _ in entries]
        self.sizes = [(h, w) for _, h, w in entries]
        self._indices = list(range(len(self.names)))

    def __len__(self):
        return len(self._indices)

    def __getitem__(self, index):
        raw = self._source[self._indices[index]]
        name = raw["name"].decode()
        record = {"name": name, "target": decode_image(raw["target"], f"{name} (target)")}
        if "degraded" in raw:
            record["degraded"] = decode_image(raw["degraded"], name)
        return record

    def keep(self, indices):
        out = copy.copy(self)
        out._indices = [self._indices[i] for i in indices]
        out.names = [self.names[i] for i in indices]
        out.sizes = [self.sizes[i] for i in indices]
        return out
