"""1 device vs 8 devices with the same global batch: same losses and parameters, for both wrappers and both
Fourier variants. Run in float64 so that the comparison checks the reductions, not float32 rounding (which
RMSprop's first, sign-like steps amplify for near-zero gradients; see experiments/equivalence.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rcot_jax import parallel, steps
from rcot_jax.configs import default
from rcot_jax.state import init_state


def _batch(dtype):
    rng = np.random.default_rng(0)
    clean = rng.random((8, 32, 32, 3))
    degraded = np.clip(clean + 0.2 * rng.standard_normal(clean.shape), 0, 1)
    return {"degraded": degraded.astype(dtype), "target": clean.astype(dtype),
            "paired": np.array([1, 0, 1, 1, 0, 1, 1, 1], bool),
            "de_id": np.array([0, 1, 3, 4, 2, 5, 6, 8], np.int32)}


def _rel(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    num = sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2) for x, y in zip(la, lb))
    return np.sqrt(num / sum(np.sum(np.asarray(y, np.float64) ** 2) for y in lb))


def _two_steps(step_fn, state, batch):
    key = jax.random.key(7)
    state = jax.tree.map(jnp.copy, state)  # the compiled steps donate their input state
    history = []
    for _ in range(2):
        state, metrics = step_fn(state, batch, key)
        history.append({k: float(v) for k, v in metrics.items()})
    return state, history


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def setup(x64):
    config = default.get_config("tiny")
    config.model.backbone = "mprnet"    # no network mixes samples, so the smaller graph checks the same reductions
    config.model.critic_width = 4      # a narrow critic: the float64 steps run in a third of the time
    return config, init_state(config, jax.random.key(1)), _batch(np.float64)


@pytest.fixture(scope="module")
def reference(setup):
    """Two steps of the plain per-device step on one device (axis_name=None, no collectives)."""
    config, state, batch = setup
    out = {}
    for variant in ("paper", "official"):
        cfg = config.copy_and_resolve_references()
        cfg.loss.fourier_variant = variant
        out[variant] = _two_steps(jax.jit(functools.partial(steps.train_step, config=cfg)), state, batch)
    return out


# Both wrappers run the same per-device step: each wrapper, and each variant's reduction over the batch (the
# paper's mean, the official sum), is checked once.
@pytest.mark.parametrize("wrapper,variant", [("shard_map", "paper"), ("pmap", "official")])
def test_eight_devices_equal_one(setup, reference, wrapper, variant):
    config, state, batch = setup
    assert jax.tree.leaves(state.t_params)[0].dtype == jnp.float64
    cfg = config.copy_and_resolve_references()
    cfg.loss.fourier_variant = variant
    cfg.parallel.wrapper = wrapper
    step_fn = parallel.compile_train_step(cfg, parallel.make_mesh(jax.devices()[:8]))
    new_state, history = _two_steps(step_fn, state, batch)
    ref_state, ref_history = reference[variant]
    for got, want in zip(history, ref_history):
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-9), k
    assert int(new_state.step) == 2
    assert _rel(new_state.t_params, ref_state.t_params) < 1e-5
    assert _rel(new_state.f_params, ref_state.f_params) < 1e-5
    assert _rel((new_state.t_opt_state, new_state.f_opt_state), (ref_state.t_opt_state, ref_state.f_opt_state)) < 1e-5
    # The parameters moved: equality is not the trivial kind.
    assert _rel(new_state.t_params, state.t_params) > 1e-4
    assert _rel(new_state.f_params, state.f_params) > 1e-4


def test_fourier_variants_give_different_steps(reference):
    assert reference["paper"][1][0]["fourier"] != pytest.approx(reference["official"][1][0]["fourier"], rel=1e-3)


def test_batch_not_divisible_over_devices_is_rejected():
    config = default.get_config("tiny")
    step_fn = parallel.compile_train_step(config, parallel.make_mesh(jax.devices()[:8]))
    batch = {k: v[:6] for k, v in _batch(np.float32).items()}
    with pytest.raises(ValueError, match="global batch size=6 is not divisible by the 8 devices"):
        step_fn(None, batch, jax.random.key(0))


def test_unknown_wrapper_is_rejected():
    config = default.get_config("tiny")
    config.parallel.wrapper = "xmap"
    with pytest.raises(ValueError, match="config.parallel.wrapper='xmap'"):
        parallel.compile_train_step(config, parallel.make_mesh())
