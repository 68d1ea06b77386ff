"""Export a trained restoring map to a file other runtimes load, without rcot_jax or its flax modules:

  python -m rcot_jax.export --workdir=W --format=stablehlo --polymorphic --output=map.jax_exported
  python -m rcot_jax.export --workdir=W --format=onnx --height=512 --width=512 --output=map.onnx
  python -m rcot_jax.export --checkpoint=model.pth --config=configs/derain.py --format=onnx ... (an official file)

The map is T's two passes on float32 NHWC images in [0, 1], clipped to [0, 1] (`inference.restoring`), computed in
float32 (a bf16 run's map too); the parameters are inside the file.
- `stablehlo`: `jax.export`, serialized; lowered for `--platforms` (default cpu, cuda and tpu), each with the
  convolutions `conv_impl=auto` gives it (this project's on CPU, XLA's on GPU and TPU). `--polymorphic`:
  symbolic batch, height and width (height and width multiples of 16, as `inference` pads); otherwise
  `--batch_size` x `--height` x `--width`. Load it with `rcot_jax.inference.load_exported(PATH)(image)`, or
  without rcot_jax: `jax.export.deserialize(bytearray(open(PATH, 'rb').read())).call(x)` (the file ends with a
  SHA-256 of the serialization, which jax ignores and load_exported checks).
- `onnx`: opset 18 (`rcot_jax.to_onnx`; XLA's convolutions, as ONNX Conv); input `image` [batch, H, W, 3], output
  `restored`; the batch axis always dynamic, height and width too with `--polymorphic` (multiples of 16), else
  fixed by `--height` / `--width`; its metadata holds a SHA-256 of the graph.
`python -m rcot_jax.restore --exported=PATH` restores images with either. The file is written whole or not at all.
"""
import functools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from rcot_jax import app as rcot_app
from rcot_jax import inference, paths
from rcot_jax import workdir as workdir_lib

FLAGS = flags.FLAGS
FORMATS = ("stablehlo", "onnx")


def _define_flags():
    paths.DEFINE_path("workdir", None, "A training run: its config.json and latest checkpoint.")
    paths.DEFINE_path("checkpoint", None, "Instead of --workdir: a run's checkpoint directory, or an official "
                      ".pth/.safetensors file; needs --config.")
    rcot_app.define_config("With --checkpoint, or a --workdir without config.json: the config describing the "
                           "networks.")
    flags.DEFINE_enum("format", "stablehlo", FORMATS, "stablehlo (jax.export) or onnx.")
    paths.DEFINE_path("output", None, "The file to write (.jax_exported for stablehlo, .onnx for onnx).")
    flags.DEFINE_integer("height", 0, "Input height (a multiple of 16) of a fixed-size export.")
    flags.DEFINE_integer("width", 0, "Input width (a multiple of 16) of a fixed-size export.")
    flags.DEFINE_integer("batch_size", 1, "Batch of a fixed-size stablehlo export (ONNX keeps the batch dynamic).")
    flags.DEFINE_boolean("polymorphic", False, "Symbolic batch, height and width (multiples of 16).")
    flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], "stablehlo: the platforms to lower for.")
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --output.")
    rcot_app.define_jax_flags()
    flags.mark_flags_as_required(["output"])


def input_shape(height, width, batch_size, polymorphic):
    """The input [B, H, W, 3] to export for: symbolic (b, 16*h, 16*w) with `polymorphic`, else the sizes given."""
    if polymorphic:
        if height or width:
            raise ValueError("give either --polymorphic or --height and --width, not both")
        m = inference.MULTIPLE
        return jax.export.symbolic_shape(f"b, {m}*h, {m}*w, 3")
    bad = {k: v for k, v in (("height", height), ("width", width)) if v <= 0 or v % inference.MULTIPLE}
    if bad:
        raise ValueError(", ".join(f"--{k}={v}" for k, v in bad.items()) +
                         f": give positive multiples of {inference.MULTIPLE} (or --polymorphic)")
    if batch_size < 1:
        raise ValueError(f"--batch_size={batch_size}: give at least 1")
    return (batch_size, height, width, 3)


def restoring_fn(model, params, conv_impl):
    """The function an export holds: `inference.restoring` with the parameters closed in, computed in float32
    whatever precision the run trained in, with the convolutions of `conv_impl` ('xla' or 'custom')."""
    return functools.partial(inference.restoring, model.clone(conv_impl=conv_impl, dtype=jnp.float32), params)


def stablehlo(model, params, shape, platforms=("cpu", "cuda", "tpu")):
    """The serialized `jax.export` of the restoring map for inputs of `shape`. Each platform runs the convolutions
    `conv_impl='auto'` gives it, chosen where the export runs (`lax.platform_dependent`): XLA's own on GPU and TPU,
    this project's on CPU, where XLA's grouped (depthwise) convolutions made a 512x512 tile of the paper's map 4.8x
    slower (experiments/benchmarks.md)."""
    cpu, other = restoring_fn(model, params, "custom"), restoring_fn(model, params, "xla")
    fn = jax.jit(lambda x: jax.lax.platform_dependent(x, cpu=cpu, default=other))
    exported = jax.export.export(fn, platforms=tuple(platforms))(jax.ShapeDtypeStruct(shape, jnp.float32))
    return inference.seal(exported.serialize())


def onnx_model(model, params, shape):
    """The serialized ONNX model of the restoring map for inputs of `shape` (the batch left dynamic)."""
    from rcot_jax import to_onnx
    return to_onnx.convert(restoring_fn(model, params, "xla"), shape).SerializeToString()


def write(path, data):
    """Writes `data` to `path` whole or not at all (`workdir.write_atomic`), creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    workdir_lib.write_atomic(path, lambda tmp: pathlib.Path(tmp).write_bytes(data))


def check_output(path, fmt, overwrite):
    if fmt == "onnx" and not path.lower().endswith(".onnx") or fmt != "onnx" and path.lower().endswith(".onnx"):
        raise ValueError(f"--output={path}: name ONNX exports *.onnx and only them (the loader goes by the name)")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"--output={path} exists; --overwrite replaces it")


def main(argv):
    if bool(FLAGS.workdir) == bool(FLAGS.checkpoint):
        raise app.UsageError("give exactly one of --workdir and --checkpoint")
    check_output(FLAGS.output, FLAGS.format, FLAGS.overwrite)
    shape = input_shape(FLAGS.height, FLAGS.width, FLAGS.batch_size, FLAGS.polymorphic)
    from rcot_jax.restore import load_map
    model, params = load_map(FLAGS.workdir, FLAGS.checkpoint, FLAGS.config)
    start = time.perf_counter()
    data = (onnx_model(model, params, shape) if FLAGS.format == "onnx" else
            stablehlo(model, params, shape, FLAGS.platforms))
    write(FLAGS.output, data)
    dims = ("batch", *shape[1:]) if FLAGS.format == "onnx" else shape
    logging.info("Wrote %s (%s, input [%s], %.1f MB) in %.1f s", FLAGS.output, FLAGS.format,
                 ", ".join(map(str, dims)), len(data) / 1e6, time.perf_counter() - start)


if __name__ == "__main__":
    rcot_app.run(main, "rcot_jax.export", _define_flags)
