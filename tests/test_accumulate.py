"""Gradient accumulation (`config.optim.accumulate_steps` = k): the same step as k = 1 on the same batch.

Compared in float64 (the reductions, not rounding: see test_parallel.py) and in float32. The batch makes the
micro-batches' own statistics differ from the batch's (noise levels, paired counts, p = 1 and 2), so a share
computed from a micro-batch alone (its RMSE, its paired count) fails the comparison.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakes import comparison_batch, comparison_config, host_copy, run_steps
from rcot_jax import parallel, steps
from rcot_jax.state import init_state


def _rel(a, b):
    """Relative L2 error over the floating-point leaves (an optimiser's step count would mask the rest)."""
    la, lb = ([x for x in jax.tree.leaves(t) if jnp.issubdtype(x.dtype, jnp.inexact)] for t in (a, b))
    num = sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2) for x, y in zip(la, lb))
    return np.sqrt(num / sum(np.sum(np.asarray(y, np.float64) ** 2) for y in lb))


def _config(k, critic_width=4):
    config = comparison_config(critic_width)
    config.optim.accumulate_steps = k
    return config


def _step(config, state, batch, step_fn=None):
    step_fn = step_fn or jax.jit(functools.partial(steps.train_step, config=config))
    return run_steps(step_fn, state, batch, 1)[0]


def _check(got, want, tol, metrics_abs):
    """Asserts the relative errors of the new state (parameters, optimiser states) and metrics below tol."""
    (new, metrics), (ref, ref_metrics) = got, want
    errors = {"t": _rel(new.t_params, ref.t_params), "f": _rel(new.f_params, ref.f_params),
              "t_opt": _rel(new.t_opt_state, ref.t_opt_state), "f_opt": _rel(new.f_opt_state, ref.f_opt_state)}
    for k, v in ref_metrics.items():
        assert metrics[k] == pytest.approx(v, rel=tol["metrics"], abs=metrics_abs), k
    assert all(errors[k] < tol.get(k, tol["state"]) for k in errors), errors


@pytest.fixture(scope="module")
def setup64(float64_runs):
    """(state, batch, one plain step from it on one device), float64, with 64-bit JAX on."""
    config, state, batch, runs = float64_runs
    assert config.optim.accumulate_steps == 1 and jax.tree.leaves(state.t_params)[0].dtype == jnp.float64
    reference = runs["paper"][0]
    # The parameters moved: equality is not the trivial kind.
    assert _rel(reference[0].t_params, state.t_params) > 1e-4 and _rel(reference[0].f_params, state.f_params) > 1e-4
    with jax.enable_x64(True):
        yield state, batch, reference


F64 = {"state": 1e-9, "metrics": 1e-9}


def test_accumulation_equals_one_step_float64(setup64):
    state, batch, reference = setup64
    _check(_step(_config(4), state, batch), reference, F64, metrics_abs=1e-12)


def test_accumulation_over_devices_float64(setup64):
    """2 micro-batches on each of 2 devices (shard_map) = 1 device, no accumulation."""
    state, batch, reference = setup64
    config = _config(2)
    step_fn = parallel.compile_train_step(config, parallel.make_mesh(jax.devices()[:2]))
    _check(_step(config, state, batch, step_fn), reference, F64, metrics_abs=1e-12)


def test_accumulation_equals_one_step_float32():
    # The tiny config's critic (width 16). The critic's Wasserstein gradient is a difference of two nearly equal
    # terms at initialisation, so its float32 rounding is ~1e-4 relative (F's optimiser state holds its square), and
    # RMSprop's first, sign-like step carries that into F's parameters (~1e-5, as between 1 and 8 devices, see
    # docs/training.md). critic_loss is such a difference too (~3e-8), so only its absolute error is meaningful.
    with jax.enable_x64(False):
        state = host_copy(init_state(_config(1, 16), jax.random.key(1)))
        batch = comparison_batch(np.float32)
        _check(_step(_config(4, 16), state, batch), _step(_config(1, 16), state, batch),
               {"state": 1e-5, "metrics": 1e-5, "f": 1e-4, "f_opt": 1e-3}, metrics_abs=1e-6)


def test_indivisible_batch_is_rejected():
    with jax.enable_x64(False):
        state = init_state(_config(1, 16), jax.random.key(1))
        with pytest.raises(ValueError, match="accumulate_steps=3 does not divide the 8 samples"):
            _step(_config(3, 16), state, comparison_batch(np.float32))
