"""Speed and memory of the compiled train step (or of restoring): one JSON record on the last line.

  python -m rcot_jax.benchmark --config=configs/benchmark.py:b [--mode=train|restore] [--steps=10]
  python -m rcot_jax.benchmark --config=configs/benchmark.py:a --config.precision=bf16
  python -m rcot_jax.benchmark --mode=input --config=configs/deblur.py:quick --config.data.source=tfds ...
  python -m rcot_jax.benchmark --mode=sweep --config=configs/denoise.py:quick --variants=4
  python -m rcot_jax.benchmark --mode=aot --config=configs/benchmark.py:a --topology=v5e:2x2 [--per_chip_batch=3]
                               [--find_max_batch]

Times `--steps` calls after a warm-up call (which includes compilation) on synthetic batches of the config's
size, over all local devices (`--devices=N` for fewer). FLOPs are XLA's cost analysis of the whole global
batch's step; the peak is a 4096^2 matmul in the config's precision, measured in the same process. Peak memory
is the device's peak bytes in use where the backend reports it, else the process's maximum RSS.

`--mode=aot` compiles the train step for a TPU slice on this host (rcot_jax/aot.py; needs the `tpu-aot` extra)
and prints per-chip memory, FLOPs and whether it fits; `--find_max_batch` adds the largest per-chip batch that does.
"""
import functools
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from rcot_jax import app as rcot_app
from rcot_jax import configs, models, parallel, paths, steps
from rcot_jax.state import create_train_state, init_state, jit_init, seed_keys

FLAGS = flags.FLAGS


def _define_flags():
    rcot_app.define_config("Config to benchmark (configs/benchmark.py:a|b|c[:bf16]).",
                           configs.resolve_path("configs/benchmark.py:b"))
    flags.DEFINE_enum("mode", "train", ["train", "restore", "input", "sweep", "aot"], "train: the RCOT train step; "
                      "restore: T's forward; input: the input pipeline on the config's data source (no device "
                      "work); sweep: --variants runs in one vmapped step (rcot_jax.ablate) against as many single "
                      "steps, on one device; aot: the train step compiled for the TPU slice --topology on this host "
                      "(no TPU needed).")
    flags.DEFINE_integer("variants", 4, "--mode=sweep: variants in the vmapped step (cond_scale 0 .. 1, seeds 0 ..).")
    flags.DEFINE_integer("steps", 10, "Timed calls after the warm-up call.")
    flags.DEFINE_integer("devices", 0, "Local devices in the mesh (0: all).")
    flags.DEFINE_string("topology", "v5e:2x2", "--mode=aot: the TPU slice, as libtpu names it (v4:2x2x1, v5e:2x2, "
                        "v5e:4x4, v5p:2x2x1, v6e:2x2, ...).")
    flags.DEFINE_integer("per_chip_batch", 0, "--mode=aot: samples per chip (0: config.data.batch_size on each "
                         "chip).")
    flags.DEFINE_boolean("find_max_batch", False, "--mode=aot: also find the largest per-chip batch that fits "
                         "(doubling, then bisection; one compilation each, each in a process of its own, so "
                         "that the search needs one compilation's host memory).")
    paths.DEFINE_path("records", "", "--mode=aot: a JSON-lines file that every compilation's record is appended "
                      "to, and whose records of the same program (lowered step), topology and libtpu are reused "
                      "instead of compiling again.")
    # Off unless asked for: a cached program would leave compilation out of the first call's time.
    rcot_app.define_jax_flags(cache_default="off")


def _gflop(fn, *args):
    """XLA's FLOP count of fn(*args) on one device, from the lowered (unoptimised) HLO."""
    cost = jax.jit(fn).lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) / 1e9


@functools.lru_cache
def peak_matmul_gflops(dtype, n=4096, repeats=5):
    """Achieved GFLOP/s of an n x n matmul in `dtype` (float32 accumulation), median of `repeats`; measured once
    per process (the records of one process share it)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    matmul(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / np.median(times) / 1e9


def peak_memory_gb(devices):
    stats = [d.memory_stats() or {} for d in devices]
    if all("peak_bytes_in_use" in s for s in stats):
        return max(s["peak_bytes_in_use"] for s in stats) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _time_calls(call, n):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    return first, np.asarray(times)


def synthetic_batch(config):
    b, p = config.data.batch_size, config.data.patch_size
    rng = np.random.default_rng(0)
    clean = rng.random((b, p, p, 3), dtype=np.float32)
    return {"degraded": np.clip(clean + 0.1 * rng.standard_normal(clean.shape, dtype=np.float32), 0, 1),
            "target": clean, "paired": np.ones(b, bool), "de_id": np.full(b, 5, np.int32)}


def run_benchmark(config, mode="train", num_steps=10, devices=None):
    devices = devices or jax.local_devices()
    batch = synthetic_batch(config)
    init_key, key = seed_keys(config.seed)
    state = init_state(config, init_key)
    if mode == "train":
        gflop = _gflop(lambda s, b, k: steps.train_step(s, b, k, config), state, batch, key)
        step = parallel.compile_train_step(config, parallel.make_mesh(devices))
        holder = [state]

        def call():
            holder[0], metrics = step(holder[0], batch, key)
            return metrics
    else:
        t_model, _ = models.build_models(config)
        gflop = _gflop(t_model.apply, state.t_params, batch["degraded"])
        restore = jax.jit(t_model.apply)
        degraded = jax.device_put(batch["degraded"], parallel.batch_sharding(parallel.make_mesh(devices)))

        def call():
            return restore(state.t_params, degraded)
    first, times = _time_calls(call, num_steps)
    median = float(np.median(times))
    peak = peak_matmul_gflops(jnp.bfloat16 if config.precision == "bf16" else jnp.float32)
    return {
        "mode": mode, "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "devices": len(devices), "jax": jax.__version__, "precision": config.precision,
        "backbone": config.model.backbone, "batch": config.data.batch_size, "patch": config.data.patch_size,
        "compile_s": round(first - median, 2), "step_time_median_s": round(median, 4),
        "step_time_p90_s": round(float(np.percentile(times, 90)), 4),
        "images_per_s": round(config.data.batch_size / median, 3), "gflop_per_step": round(gflop, 1),
        "achieved_gflops": round(gflop / median, 1), "peak_gflops": round(peak, 1),
        "peak_fraction": round(gflop / median / peak, 3), "peak_memory_gb": round(peak_memory_gb(devices), 2),
    }


def run_input_benchmark(config, num_batches=50):
    """Throughput of this process's training batches from the config's data source, after 2 warm-up batches
    (which include opening the source and starting `data.num_workers` workers)."""
    from rcot_jax.data import pipeline     # the shell: only this mode reads data
    t0 = time.perf_counter()
    it = iter(pipeline.train_dataset(config))
    for _ in range(2):
        next(it)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    elapsed = time.perf_counter() - t0
    return {
        "mode": "input", "source": config.data.source, "name": config.data.name, "workers": config.data.num_workers,
        "batch": config.data.batch_size, "patch": config.data.patch_size, "batches": num_batches,
        "startup_s": round(startup, 2), "batches_per_s": round(num_batches / elapsed, 2),
        "patches_per_s": round(num_batches * config.data.batch_size / elapsed, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2),
    }


def run_sweep_benchmark(config, num_variants=4, num_steps=10):
    """Time of one vmapped step of K variants (different cond_scale and seed) against K single steps."""
    batch = synthetic_batch(config)
    init_keys, keys = (jnp.stack(k) for k in zip(*(seed_keys(config.seed + i) for i in range(num_variants))))
    values = {k: np.full(num_variants, v, np.float32) for k, v in steps.config_scalars(config).items()}
    values["model.cond_scale"] = np.linspace(0.0, 1.0, num_variants, dtype=np.float32)
    states = jit_init(jax.vmap(lambda k: create_train_state(config, k)))(init_keys)
    stacked = jax.tree.map(lambda a: np.stack([a] * num_variants), batch)
    vmapped = jax.jit(steps.sweep_train_step(config), donate_argnums=0)
    holder = [states]

    def call_vmapped():
        holder[0], metrics = vmapped(holder[0], stacked, keys, values)
        return metrics

    first_v, times_v = _time_calls(call_vmapped, num_steps)
    single = jax.jit(lambda s, b, k: steps.train_step(s, b, k, config), donate_argnums=0)
    one = [init_state(config, init_keys[0])]

    def call_single():
        one[0], metrics = single(one[0], batch, keys[0])
        return metrics

    first_s, times_s = _time_calls(call_single, num_steps)
    vmapped_s, single_s = float(np.median(times_v)), float(np.median(times_s))
    return {
        "mode": "sweep", "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__, "backbone": config.model.backbone, "batch": config.data.batch_size,
        "patch": config.data.patch_size, "variants": num_variants, "vmapped_step_s": round(vmapped_s, 4),
        "single_step_s": round(single_s, 4), "sequential_step_s": round(num_variants * single_s, 4),
        "speedup": round(num_variants * single_s / vmapped_s, 3),
        "compile_vmapped_s": round(first_v - vmapped_s, 1), "compile_single_s": round(first_s - single_s, 1),
    }


def main(argv):
    if FLAGS.mode == "aot":
        from rcot_jax import aot
        try:
            record = aot.aot_record(FLAGS.config, FLAGS.topology, FLAGS.per_chip_batch, FLAGS.find_max_batch,
                                    FLAGS.records, fresh_processes=FLAGS.find_max_batch)
        except (aot.AotError, ValueError) as e:
            sys.exit(f"rcot_jax.benchmark: error: {e}")
    elif FLAGS.mode == "input":
        record = run_input_benchmark(FLAGS.config, FLAGS.steps)
    elif FLAGS.mode == "sweep":
        record = run_sweep_benchmark(FLAGS.config, FLAGS.variants, FLAGS.steps)
    else:
        record = run_benchmark(FLAGS.config, FLAGS.mode, FLAGS.steps, jax.local_devices()[:FLAGS.devices or None])
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    rcot_app.run(main, "rcot_jax.benchmark", _define_flags)
