"""1 device vs 8 devices with the same global batch: same losses and parameters, for both wrappers and both
Fourier variants. Run in float64 so that the comparison checks the reductions, not float32 rounding (which
RMSprop's first, sign-like steps amplify for near-zero gradients; see experiments/equivalence.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakes import run_steps
from rcot_jax import parallel
from rcot_jax.configs import default


def _rel(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    num = sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2) for x, y in zip(la, lb))
    return np.sqrt(num / sum(np.sum(np.asarray(y, np.float64) ** 2) for y in lb))


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


# Both wrappers run the same per-device step: each wrapper, and each variant's reduction over the batch (the
# paper's mean, the official sum), is checked once.
@pytest.mark.parametrize("wrapper,variant", [("shard_map", "paper"), ("pmap", "official")])
def test_eight_devices_equal_one(x64, float64_runs, wrapper, variant):
    """Two steps (the optimisers' states carried) on 8 devices equal two on one: the reference is the plain
    per-device step (axis_name=None, no collectives)."""
    config, state, batch, reference = float64_runs
    assert jax.tree.leaves(state.t_params)[0].dtype == jnp.float64
    cfg = config.copy_and_resolve_references()
    cfg.loss.fourier_variant = variant
    cfg.parallel.wrapper = wrapper
    runs = run_steps(parallel.compile_train_step(cfg, parallel.make_mesh(jax.devices()[:8])), state, batch, 2)
    for (_, got), (_, want) in zip(runs, reference[variant]):
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-9), k
    (new_state, _), (ref_state, _) = runs[-1], reference[variant][-1]
    assert int(new_state.step) == 2
    assert _rel(new_state.t_params, ref_state.t_params) < 1e-5
    assert _rel(new_state.f_params, ref_state.f_params) < 1e-5
    assert _rel((new_state.t_opt_state, new_state.f_opt_state), (ref_state.t_opt_state, ref_state.f_opt_state)) < 1e-5
    # The parameters moved: equality is not the trivial kind.
    assert _rel(new_state.t_params, state.t_params) > 1e-4
    assert _rel(new_state.f_params, state.f_params) > 1e-4


def test_fourier_variants_give_different_steps(float64_runs):
    reference = float64_runs[3]
    assert reference["paper"][0][1]["fourier"] != pytest.approx(reference["official"][0][1]["fourier"], rel=1e-3)


def test_batch_not_divisible_over_devices_is_rejected():
    config = default.get_config("tiny")
    step_fn = parallel.compile_train_step(config, parallel.make_mesh(jax.devices()[:8]))
    images = np.zeros((6, 32, 32, 3), np.float32)
    batch = {"degraded": images, "target": images, "paired": np.ones(6, bool), "de_id": np.zeros(6, np.int32)}
    with pytest.raises(ValueError, match="global batch size=6 is not divisible by the 8 devices"):
        step_fn(None, batch, jax.random.key(0))


def test_unknown_wrapper_is_rejected():
    config = default.get_config("tiny")
    config.parallel.wrapper = "xmap"
    with pytest.raises(ValueError, match="config.parallel.wrapper='xmap'"):
        parallel.compile_train_step(config, parallel.make_mesh())
