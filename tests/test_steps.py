import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rcot_jax import models, steps
from rcot_jax.configs import default
from rcot_jax.state import _INIT_OPTIONS, init_state


def test_mprnet_joint_adam_step_trains():
    """The other code paths of the step: MPRNet map, joint critic update, Adam, two critic iterations."""
    config = default.get_config("tiny")
    config.model.backbone = "mprnet"
    config.critic.gp_update = "joint"
    config.critic.n_critic = 2
    config.optim.name = "adam"
    rng = np.random.default_rng(0)
    clean = rng.random((2, 32, 32, 3)).astype(np.float32)
    batch = {"degraded": np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32),
             "target": clean, "paired": np.array([True, False]), "de_id": np.array([1, 5], np.int32)}
    state = init_state(config, jax.random.key(0))
    step = jax.jit(functools.partial(steps.train_step, config=config))
    new, metrics = step(state, batch, jax.random.key(1))
    assert int(new.step) == 1
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert metrics["wasserstein"] == -metrics["critic_loss"]
    for old, updated in ((state.t_params, new.t_params), (state.f_params, new.f_params)):
        moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(updated))]
        assert sum(moved) > len(moved) // 2
    # Adam's bias-corrected first step moves a parameter by about lr; the critic took two such steps.
    assert int(new.f_opt_state[0].count) == 2 and int(new.t_opt_state[0].count) == 1

    # The step is its two parts: the critic's update with T fixed, then T's against the updated critic.
    @jax.jit
    def parts(state, batch, rng):
        t_model, _ = models.build_models(config)
        restored = t_model.apply(state.t_params, batch["degraded"])
        f_params, f_opt_state, critic = steps.critic_update(state, restored, batch["target"], rng, config)
        return f_params, critic, steps.map_update(state, f_params, batch, restored, config)

    f_params, critic, (t_params, t_opt_state, terms) = parts(state, batch, jax.random.fold_in(jax.random.key(1), 0))
    # critic_loss is a difference of two nearly equal terms at initialisation (~1e-7 here): only its absolute
    # error is meaningful (tests/test_accumulate.py).
    assert float(critic["critic_loss"]) == pytest.approx(float(metrics["critic_loss"]), rel=0, abs=1e-6)
    assert float(terms["transport_loss"]) == pytest.approx(float(metrics["transport_loss"]), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), (f_params, t_params),
                 (new.f_params, new.t_params))     # compiled apart, XLA may round differently
    assert set(terms) >= {"transport_loss", "adversarial", "cost", "fourier", "rmse", "paired_l1", "l1", "psnr"}


def test_the_initialisers_faster_compile_gives_the_same_parameters():
    """`state.jit_init` compiles an initialiser at a lower XLA:CPU optimisation level; XLA's default level gives the
    same parameters: bit for bit with jaxlib 0.10; with 0.12.1 XLA rounds the scaling of some random bits differently
    at levels 1 and 3 (at most 1 ulp of a leaf's largest value). Both under XLA:CPU's default emitters (the suite's
    flags choose faster-compiling ones, with which level 3 takes minutes). On the critic's initialiser, whose
    leaves are drawn by both random initialisers (the official normal(0.02) and PyTorch's uniform) and which
    compiles in half the time of the map's."""
    config = default.get_config("tiny")
    _, f_model = models.build_models(config)
    x, key = jnp.zeros((1, 32, 32, 3)), jax.random.key(3)

    emitters = {"xla_cpu_use_fusion_emitters": True} if "fusion_emitters" in os.environ.get("XLA_FLAGS", "") else {}

    def init(options):
        compiled = jax.jit(f_model.init).lower(key, x).compile(compiler_options={**emitters, **options})
        return jax.tree.leaves(compiled(key, x))

    leaves = init(_INIT_OPTIONS["cpu"]), init({"xla_backend_optimization_level": 3})
    assert len(leaves[0]) > 20
    for a, b in zip(*leaves):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=0, atol=np.spacing(np.abs(a).max()))
