"""Sizes of the official-size exports, and the time of one 512x512 tile through each restore path (random weights:
sizes and speed do not depend on them). One JSON line per map:

  python experiments/export_benchmark.py [MAP[:PATH,...] ...] >> experiments/export_benchmark_results.jsonl

(MAP: restormer, mprnet; PATH: restorer, stablehlo, onnxruntime; default: both maps, every path.)

For the paper's Restormer map (configs/deblur.py) and the official MPRNet map (the same with
`model.backbone=mprnet`): `rcot_jax.export`'s StableHLO (polymorphic, lowered for cpu, cuda and tpu) and ONNX
(512x512, batch dynamic) files, their sizes and export times; then one 512x512 tile (batch 1) through
`inference.Restorer` (the flax map, this CPU's convolutions), `load_exported` of the StableHLO file and of the ONNX
file (onnxruntime, CPU provider, through the same Restorer), each called twice (the first call compiles or
initialises; the second is the time), with the largest difference from the flax map's output.
"""
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

from rcot_jax import export, inference, models
from rcot_jax.configs import deblur

TILE = 512


def timed(fn, x):
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        out = fn(x)
        times.append(round(time.perf_counter() - t0, 2))
    return out, times


def case(backbone, timed_paths):
    config = deblur.get_config()
    config.model.backbone = backbone
    t_model, _ = models.build_models(config)
    params = jax.jit(lambda: t_model.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32)))()
    record = {"map": backbone, "config": "deblur.py" + ("" if backbone == "restormer" else " model.backbone=mprnet"),
              "parameters_m": round(sum(p.size for p in jax.tree.leaves(params)) / 1e6, 2)}
    folder = tempfile.mkdtemp()
    paths = {}
    for fmt, shape, name in (("stablehlo", export.input_shape(0, 0, 1, True), "map.jax_exported"),
                             ("onnx", (1, TILE, TILE, 3), "map.onnx")):
        t0 = time.perf_counter()
        data = export.stablehlo(t_model, params, shape) if fmt == "stablehlo" else \
            export.onnx_model(t_model, params, shape)
        record[f"{fmt}_export_s"] = round(time.perf_counter() - t0, 1)
        paths[fmt] = os.path.join(folder, name)
        export.write_atomic(paths[fmt], data)
        record[f"{fmt}_mb"] = round(len(data) / 1e6, 1)
    x = np.random.default_rng(0).random((1, TILE, TILE, 3), dtype=np.float32)
    restorers = {"restorer": inference.Restorer(t_model, params, tile=TILE, batch_size=1, devices=jax.devices()[:1]),
                 "stablehlo": inference.load_exported(paths["stablehlo"], tile=TILE, batch_size=1),
                 "onnxruntime": inference.load_exported(paths["onnx"], batch_size=1)}
    reference = np.asarray(restorers["restorer"].apply(restorers["restorer"].params, x))   # untimed unless asked
    for name in timed_paths:
        out, (first, second) = timed(restorers[name]._run, x)
        record[f"{name}_first_s"], record[f"{name}_tile_s"] = first, second
        record[f"{name}_max_abs_diff"] = float(np.abs(out - reference).max())
    return record


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["restormer", "mprnet"]:
        backbone, _, paths = arg.partition(":")
        print(json.dumps({"tile": f"{TILE}x{TILE}", **case(backbone, (paths or "restorer,stablehlo,onnxruntime")
                                                           .split(",")), "jax": jax.__version__,
                          "cpus": os.cpu_count()}), flush=True)
