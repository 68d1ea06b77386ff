"""Time the compiled RCOT train step: compile time, median step time, images/s, XLA FLOPs per step.

  python experiments/benchmark_step.py --config=configs/default.py:tiny --devices=8 --steps=10
  python experiments/benchmark_step.py --config=configs/default.py --config.data.batch_size=8

Set XLA_FLAGS=--xla_force_host_platform_device_count=N before running to get N CPU devices.
"""
import functools
import json
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from rcot_jax import parallel, steps

config_flags.DEFINE_config_file("config", "configs/default.py:tiny", "Training config.")
flags.DEFINE_integer("devices", 0, "Devices in the mesh (0: all).")
flags.DEFINE_integer("steps", 10, "Timed steps after the first (compiling) one.")
FLAGS = flags.FLAGS


def main(_):
    config = FLAGS.config
    devices = jax.devices()[:FLAGS.devices or None]
    b, p = config.data.batch_size, config.data.patch_size
    rng = np.random.default_rng(0)
    clean = rng.random((b, p, p, 3), dtype=np.float32)
    batch = {"degraded": np.clip(clean + 0.1 * rng.standard_normal(clean.shape, dtype=np.float32), 0, 1),
             "target": clean, "paired": np.ones(b, bool), "de_id": np.full(b, 5, np.int32)}
    state = steps.create_train_state(config, jax.random.key(config.seed))

    # FLOPs of one step as XLA counts them (the whole global batch on one device).
    single = jax.jit(functools.partial(steps.train_step, config=config))
    cost = single.lower(state, batch, jax.random.key(0)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))

    step = parallel.compile_train_step(config, parallel.make_mesh(devices))
    key = jax.random.key(0)
    t0 = time.perf_counter()
    state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t0
    times = []
    for _ in range(FLAGS.steps):
        t0 = time.perf_counter()
        state, metrics = step(state, batch, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    print(json.dumps({
        "backend": jax.default_backend(), "devices": len(devices), "wrapper": config.parallel.wrapper,
        "backbone": config.model.backbone, "batch": b, "patch": p,
        "first_step_s (compile + run)": round(first, 2), "median_step_s": round(median, 4),
        "images_per_s": round(b / median, 2), "xla_gflops_per_step": round(flops / 1e9, 2),
        "achieved_gflops_per_s": round(flops / 1e9 / median, 2)}, indent=1))


if __name__ == "__main__":
    app.run(main)
