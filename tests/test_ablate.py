"""The ablation switches, vmapped sweeps and the ablation runner, on the tiny denoising config."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakes import host_copy
from rcot_jax import ablate, losses, models, steps
from rcot_jax.configs import denoise
from rcot_jax.data import pipeline
from rcot_jax.train import BATCH_KEYS
from rcot_jax.state import create_train_state, init_state, jit_init, seed_keys


def _tiny():
    """The tiny denoising config with the MPRNet map: its vmapped step compiles faster than the Restormer's."""
    config = denoise.get_config("tiny")
    config.model.backbone = "mprnet"
    return config


def _batches(config, n):
    it = iter(pipeline.train_dataset(config))
    return [{k: np.asarray(b[k]) for k in BATCH_KEYS} for b in (next(it) for _ in range(n))]


def test_vmapped_variants_take_the_steps_they_take_alone():
    """Variant k of a vmapped sweep (its own seed, cond_scale and map learning rate) equals that variant trained
    alone with the plain step: float32, relative 1e-5 on the losses after 3 steps."""
    config = _tiny()
    runs = [ablate.variant_config(config, ablate.Variant(f"v{s}", {"seed": s, "model.cond_scale": c,
                                                                    "optim.lr_map": lr}))
            for s, c, lr in ((0, 0.0, 4e-4), (1, 0.8, 1e-4))]
    data = [_batches(c, 3) for c in runs]
    keys = [seed_keys(c.seed) for c in runs]
    values = jax.tree.map(lambda *v: np.asarray(v, np.float32), *[steps.config_scalars(c) for c in runs])
    # On the host (`host_copy`: the steps donate their states), and indexed there: one program per leaf shape to
    # index them on the device would take longer to compile than the sweep.
    states = initial = host_copy(jit_init(jax.vmap(lambda k: create_train_state(config, k)))(
        jnp.stack([k[0] for k in keys])))
    sweep = jax.jit(steps.sweep_train_step(config), donate_argnums=0)     # as rcot_jax.ablate compiles it
    for i in range(3):
        batch = {k: np.stack([d[i][k] for d in data]) for k in BATCH_KEYS}
        states, swept = sweep(states, batch, jnp.stack([k[1] for k in keys]), values)
    assert not np.allclose(swept["transport_loss"][0], swept["transport_loss"][1], rtol=1e-3)
    # The plain step, its scalars an argument (the variants' values), so that one compilation serves both.
    step = jax.jit(functools.partial(steps.train_step, config=config))
    for j in range(len(runs)):     # from the same initial states (equal to each variant's own: tests/test_state.py)
        state = jax.tree.map(lambda v: v[j], initial)
        for i in range(3):
            state, alone = step(state, data[j][i], keys[j][1], scalars=jax.tree.map(lambda v: v[j], values))
        for name in ("transport_loss", "cost", "rmse", "fourier", "paired_l1", "gradient_penalty", "psnr"):
            np.testing.assert_allclose(swept[name][j], alone[name], rtol=1e-5, err_msg=f"variant {j}: {name}")


def test_critic_off_and_forced_fourier_exponent():
    """critic.enabled=False: the critic is not updated and the map's loss is cost + lambda_pair * L1 alone;
    loss.fourier_p=1 on noise (whose own exponent is 2) makes the Fourier term the p=1 one."""
    config = _tiny()
    config.critic.enabled = False
    config.loss.fourier_p = 1
    batch = _batches(config, 1)[0]
    state = init_state(config, jax.random.key(0))
    new, m = jax.jit(functools.partial(steps.train_step, config=config))(state, batch, jax.random.key(1))
    for old, updated in zip(jax.tree.leaves(state.f_params), jax.tree.leaves(new.f_params)):
        np.testing.assert_array_equal(old, updated)
    assert float(m["critic_loss"]) == 0 and float(m["gradient_penalty"]) == 0
    np.testing.assert_allclose(m["transport_loss"], m["cost"] + config.loss.lambda_pair * m["paired_l1"], rtol=1e-6)
    t_model, _ = models.build_models(config)
    residual = batch["degraded"] - jax.jit(t_model.apply)(state.t_params, batch["degraded"])
    p1, p2 = (losses.fourier_residual_cost(residual, jnp.full(len(residual), p)) for p in (1, 2))
    np.testing.assert_allclose(m["fourier"], p1, rtol=1e-5)
    assert not np.isclose(float(p1), float(p2), rtol=1e-2)
    assert float(losses.fourier_residual_cost(residual, jnp.full(len(residual), 2), "off")) == 0


@pytest.mark.slow      # two launches of the runner, each training and evaluating a grid
def test_ablation_runner_writes_results_and_resumes(tmp_path, monkeypatch):
    config = _tiny()
    config.num_train_steps = 2
    config.eval_every_steps = 1
    variants = (ablate.Variant("rcot"), ablate.Variant("cond-0", {"model.cond_scale": 0.0}),
                ablate.Variant("fourier-p2", {"loss.fourier_p": 2}))    # noise's own exponent: the same run
    evals = []
    results = ablate.run_grid(config, variants, tmp_path, seeds=(0,), on_eval=lambda *a: evals.append(a[:3]),
                              command="python -m rcot_jax.ablate ...")
    assert sorted(evals) == [("cond-0", 0, 1), ("cond-0", 0, 2), ("rcot", 0, 1), ("rcot", 0, 2)]
    rows = {r["name"]: r for r in results["variants"]}
    assert rows["fourier-p2"]["same_as"] == "rcot" and rows["fourier-p2"]["psnr_mean"] == rows["rcot"]["psnr_mean"]
    assert rows["rcot"]["runs_in_step"] == 2     # rcot and cond-0 differ only in a scalar: one vmapped step
    for r in rows.values():
        assert [s for s, _, _ in r["curves"]["0"]] == [1, 2] and np.isfinite(r["psnr_mean"]) and r["steps"] == 2
    assert rows["rcot"]["curves"] != rows["cond-0"]["curves"]
    assert json.loads((tmp_path / "results.json").read_text())["variants"] == json.loads(json.dumps(
        results["variants"]))
    table = (tmp_path / "results.md").read_text()
    assert "python -m rcot_jax.ablate ..." in table
    assert all(f"| {name} |" in table for name in rows) and "(same as rcot)" in table
    assert (tmp_path / "psnr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def retrain(*args, **kwargs):
        raise AssertionError("a finished group was trained again")

    monkeypatch.setattr(ablate, "train_group", retrain)
    again = ablate.run_grid(config, variants, tmp_path, seeds=(0,))
    assert again["variants"] == results["variants"]


def test_grid_errors_and_sweeps():
    config = denoise.get_config("tiny")
    with pytest.raises(ValueError, match="variant 'x'.*'loss.lambda_q'"):
        ablate.variant_config(config, ablate.Variant("x", {"loss.lambda_q": 1.0}))
    config.sweep.axis, config.sweep.axis_values, config.sweep.seeds = "model.cond_scale", (0.0, 1.0), (3, 4)
    variants, seeds = ablate.sweep_grid(config)
    assert [v.overrides for v in variants] == [{"model.cond_scale": 0.0}, {"model.cond_scale": 1.0}] and seeds == (3, 4)
    config.sweep.axis, config.sweep.axis_values = "seed", (5, 6, 7)
    assert ablate.sweep_grid(config) == ((ablate.Variant("rcot"),), (5, 6, 7))
    config.sweep.axis = "model.two_pass"
    with pytest.raises(ValueError, match="config.sweep.axis='model.two_pass'"):
        ablate.sweep_grid(config)
    # The paper grid's axes, each a key of the config.
    for v in ablate.GRIDS["paper"]:
        ablate.variant_config(config, v)
