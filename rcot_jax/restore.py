"""Restore your own images with a trained (or converted) model:

  python -m rcot_jax.restore --workdir=W --input=photo.jpg --output=restored/
  python -m rcot_jax.restore --workdir=W --input=folder/ --output=restored/ --tile=512 --overlap=64 --ensemble
  python -m rcot_jax.restore --checkpoint=model.pth --config=configs/derain.py --input=... --output=...
  python -m rcot_jax.restore --exported=map.jax_exported --input=... --output=...   (or map.onnx)

`--workdir` takes the run's config and its latest checkpoint; `--checkpoint` a checkpoint directory of a run or an
official RCOT file (.pth/.safetensors, with `--config` describing its networks); `--exported` a file
`rcot_jax.export` wrote (a fixed-size export sets the tile and batch). PNG, JPEG, TIFF, BMP and WebP of
any size and mode: the output has the input's size, mode and format (greyscale stays greyscale (the restored
image's luma), RGBA keeps its alpha, 16-bit PNG/TIFF stay 16-bit; CMYK comes out RGB). The map does not take the
degradation id (it only sets the training cost's exponent), so one command serves any degradation the model knows.
Unreadable inputs are named and skipped; existing outputs are kept unless `--overwrite`.
"""
import os
import sys

import numpy as np
from absl import app, flags, logging
from PIL import Image, ImageOps

from rcot_jax import app as rcot_app
from rcot_jax import paths

FLAGS = flags.FLAGS


def _define_flags():
    """The command's flags (defined only when it runs, so importing this module defines none)."""
    paths.DEFINE_path("input", None, "An image file or a folder of images.")
    paths.DEFINE_path("output", None, "The folder to write the restored images to (same file names).")
    paths.DEFINE_path("workdir", None, "A training run: its config.json and latest checkpoint.")
    paths.DEFINE_path("checkpoint", None, "Instead of --workdir: a run's checkpoint directory, or an official "
                        ".pth/.safetensors file; needs --config.")
    paths.DEFINE_path("exported", None, "Instead of --workdir: a map rcot_jax.export wrote (StableHLO, or "
                      "ONNX: *.onnx).")
    rcot_app.define_config("With --checkpoint, or a --workdir without config.json: the config describing the "
                           "networks.")
    flags.DEFINE_integer("tile", 256, "Tile size (a multiple of 16); 0 = the whole image at once. A fixed-size "
                         "--exported map: its size (the default).")
    flags.DEFINE_integer("overlap", 32, "Pixels shared by neighbouring tiles, blended linearly.")
    flags.DEFINE_integer("batch_size", 4, "Tiles per call (rounded up to a multiple of the local devices). A "
                         "fixed-size --exported map: its batch (the default).")
    flags.DEFINE_boolean("ensemble", False, "x8 geometric self-ensemble (8x slower).")
    flags.DEFINE_boolean("overwrite", False, "Replace existing output files.")
    rcot_app.define_jax_flags()
    flags.mark_flags_as_required(["input", "output"])


EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def read_image(path):
    """(RGB float32 [H, W, 3] in [0, 1], how to write the result back: {mode, alpha, bits, info}); `info` holds
    the EXIF (its orientation already applied to the pixels) and ICC profile to write back."""
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile
        arr = tifffile.imread(path)
        if arr.dtype == np.uint16 and arr.ndim == 3 and arr.shape[2] in (3, 4):     # Pillow reads these as 8-bit
            rgb = arr[:, :, :3].astype(np.float32) / 65535.0
            return rgb, {"mode": "RGB" if arr.shape[2] == 3 else "RGBA", "alpha": arr[:, :, 3:] if
                         arr.shape[2] == 4 else None, "bits": 16, "info": {}}
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im.load()
        info = {k: im.info[k] for k in ("exif", "icc_profile") if im.info.get(k)}
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            grey = np.asarray(im, np.float32) / 65535.0
            return np.repeat(grey[:, :, None], 3, axis=2), {"mode": "L", "alpha": None, "bits": 16, "info": info}
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = {"1": "L", "L": "L", "LA": "LA", "RGBA": "RGBA", "PA": "RGBA"}.get(im.mode, "RGB")
        alpha = np.asarray(im.getchannel("A")) if mode in ("LA", "RGBA") else None
        rgb = np.asarray(im.convert("RGB"), np.float32) / 255.0
    return rgb, {"mode": mode, "alpha": alpha, "bits": 8, "info": info}


def write_image(path, rgb, meta):
    """Writes `rgb` (float [H, W, 3] in [0, 1]) in the input's mode and bit depth, atomically, with its ICC profile
    and (JPEG, PNG, WebP: where Pillow carries it) its EXIF; not for 16-bit colour TIFF (written by tifffile)."""
    scale, dtype = (65535.0, np.uint16) if meta["bits"] == 16 else (255.0, np.uint8)
    if meta["mode"] in ("L", "LA"):      # ITU-R 601-2 luma, as Pillow's RGB -> L
        pixels = np.round(np.clip(rgb @ np.float32([0.299, 0.587, 0.114]), 0, 1) * scale).astype(dtype)
    else:
        pixels = np.round(np.clip(rgb, 0, 1) * scale).astype(dtype)
    if meta["alpha"] is not None:
        alpha = meta["alpha"] if meta["alpha"].ndim == 3 else meta["alpha"][:, :, None]
        pixels = np.concatenate([pixels if pixels.ndim == 3 else pixels[:, :, None], alpha.astype(dtype)], axis=2)
    stem, ext = os.path.splitext(path)
    tmp = f"{stem}.partial{ext}"
    if meta["bits"] == 16 and pixels.ndim == 3:
        import tifffile
        tifffile.imwrite(tmp, pixels)
    else:
        image = Image.fromarray(pixels)
        options = {"quality": 95} if ext.lower() in (".jpg", ".jpeg") else \
            {"lossless": True} if ext.lower() == ".webp" else {}
        image.save(tmp, **options, **(meta["info"] if ext.lower() != ".bmp" else {}))
    os.replace(tmp, path)


def list_inputs(path):
    """The images `--input` names: the file, or the folder's images (refused when it holds none)."""
    if os.path.isdir(path):
        found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(EXTENSIONS))
        if not found:
            raise FileNotFoundError(f"--input={path}: the folder holds no images "
                                    f"({', '.join(e[1:] for e in EXTENSIONS)})")
        return found
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input={path}: no such file or folder (missing)")
    return [path]


def check_output(inputs, output):
    """Refuses an `--output` folder where a restored image would replace its own input."""
    same = [p for p in inputs if os.path.realpath(os.path.join(output, os.path.basename(p))) == os.path.realpath(p)]
    if same:
        raise ValueError(f"--output={output}: the restored images would replace their inputs ({same[0]}"
                         f"{f' and {len(same) - 1} more' if len(same) > 1 else ''}); choose another folder")


def load_map(workdir=None, checkpoint=None, config=None):
    """(T module, its parameters) of a run (`workdir`, with its config.json, else `config`) or of a checkpoint
    (`checkpoint` + `config`)."""
    import jax
    import ml_collections
    from rcot_jax import models
    from rcot_jax import workdir as workdir_lib
    from rcot_jax.state import create_train_state
    from rcot_jax.weights import checkpoints
    run_config = workdir_lib.read_run_config(workdir) if workdir else None
    if run_config is not None:
        config = ml_collections.ConfigDict(run_config)
    elif config is None:
        raise (FileNotFoundError(f"--workdir={workdir}: no config.json (not a training run); give --config "
                                 "describing its networks") if workdir else
               ValueError("--checkpoint needs --config (the networks it holds)"))
    t_model, _ = models.build_models(config)
    abstract = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0)))
    t_params = checkpoints.init_from(workdir or checkpoint, abstract, config).t_params     # a run or a weights file
    return t_model, t_params


def restore_files(restorer, inputs, output, overwrite=False):
    """Restores each input into `output`; returns (written, skipped existing, failed [(path, message)])."""
    from tqdm import tqdm
    os.makedirs(output, exist_ok=True)
    written, existing, failed = [], [], []
    images = tqdm(inputs, unit="image", disable=len(inputs) < 2)
    for path in images:
        target = os.path.join(output, os.path.basename(path))
        if os.path.exists(target) and not overwrite:
            existing.append(target)
            continue
        try:
            rgb, meta = read_image(path)
        except (OSError, SyntaxError, ValueError) as e:
            failed.append((path, f"{type(e).__name__}: {e}"))
            logging.error("%s: cannot read it (%s); skipped", path, e)
            continue
        with tqdm(total=restorer.num_tiles(rgb.shape[:2]), unit="tile", leave=False,
                  disable=restorer.num_tiles(rgb.shape[:2]) < 2) as bar:
            out = restorer(rgb, progress=bar.update)
        write_image(target, out, meta)
        written.append(target)
    return written, existing, failed


def main(argv):
    if sum(map(bool, (FLAGS.workdir, FLAGS.checkpoint, FLAGS.exported))) != 1:
        raise app.UsageError("give exactly one of --workdir, --checkpoint and --exported")
    from rcot_jax import inference
    inputs = list_inputs(FLAGS.input)
    check_output(inputs, FLAGS.output)
    if FLAGS.exported:
        given = {k: FLAGS[k].value for k in ("tile", "batch_size") if FLAGS[k].present}
        restorer = inference.load_exported(FLAGS.exported, overlap=FLAGS.overlap, ensemble=FLAGS.ensemble, **given)
    else:
        model, params = load_map(FLAGS.workdir, FLAGS.checkpoint, FLAGS.config)
        restorer = inference.Restorer(model, params, FLAGS.tile, FLAGS.overlap, FLAGS.batch_size, FLAGS.ensemble)
    written, existing, failed = restore_files(restorer, inputs, FLAGS.output, FLAGS.overwrite)
    logging.info("Restored %d image(s) into %s%s%s", len(written), FLAGS.output,
                 f"; {len(existing)} kept (exist; --overwrite replaces them)" if existing else "",
                 f"; {len(failed)} unreadable: {', '.join(p for p, _ in failed)}" if failed else "")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    rcot_app.run(main, "rcot_jax.restore", _define_flags)
