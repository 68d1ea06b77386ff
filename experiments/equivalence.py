"""Measure how far N devices are from 1 device after two train steps with the same global batch.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/equivalence.py [--x64]

Prints, per wrapper and Fourier variant, the largest relative difference of the step metrics and the relative
L2 differences of T's and F's parameters.
"""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rcot_jax import parallel, steps
from rcot_jax.configs import default
from rcot_jax.state import init_state


def rel(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    num = sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2) for x, y in zip(la, lb))
    return float(np.sqrt(num / sum(np.sum(np.asarray(y, np.float64) ** 2) for y in lb)))


def run(step_fn, state, batch):
    state = jax.tree.map(jnp.copy, state)
    for _ in range(2):
        state, metrics = step_fn(state, batch, jax.random.key(7))
    return state, {k: float(v) for k, v in metrics.items()}


def main():
    dtype = np.float64 if "--x64" in sys.argv else np.float32
    config = default.get_config("tiny")
    rng = np.random.default_rng(0)
    clean = rng.random((8, 32, 32, 3))
    batch = {"degraded": np.clip(clean + 0.2 * rng.standard_normal(clean.shape), 0, 1).astype(dtype),
             "target": clean.astype(dtype), "paired": np.array([1, 0, 1, 1, 0, 1, 1, 1], bool),
             "de_id": np.array([0, 1, 3, 4, 2, 5, 6, 8], np.int32)}
    state = init_state(config, jax.random.key(1))
    for variant in ("paper", "official"):
        config.loss.fourier_variant = variant
        ref_state, ref = run(jax.jit(functools.partial(steps.train_step, config=config)), state, batch)
        for wrapper in ("shard_map", "pmap"):
            config.parallel.wrapper = wrapper
            new_state, got = run(parallel.compile_train_step(config, parallel.make_mesh()), state, batch)
            worst = max(abs(got[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref)
            print(f"{np.dtype(dtype).name} {variant:8s} {wrapper:9s} devices={jax.device_count()} "
                  f"metrics_rel={worst:.2e} t_params_rel={rel(new_state.t_params, ref_state.t_params):.2e} "
                  f"f_params_rel={rel(new_state.f_params, ref_state.f_params):.2e}", flush=True)


if __name__ == "__main__":
    if "--x64" in sys.argv:
        jax.config.update("jax_enable_x64", True)
    main()
