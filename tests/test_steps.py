import functools

import jax
import numpy as np

from rcot_jax import steps
from rcot_jax.configs import default
from rcot_jax.state import create_train_state, init_state


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


def test_the_initialisers_faster_compile_gives_the_same_bits():
    """`state.jit_init` compiles the initialiser at a lower XLA:CPU optimisation level; XLA's default gives the same
    parameters and optimiser states, bit for bit."""
    config = default.get_config("tiny")
    config.model.backbone = "mprnet"
    key = jax.random.key(3)
    default_level = jax.jit(lambda k: create_train_state(config, k)).lower(key).compile(
        compiler_options={"xla_backend_optimization_level": 3})
    leaves = [jax.tree.leaves(s) for s in (init_state(config, key), default_level(key))]
    assert len(leaves[0]) > 100 and all(np.array_equal(a, b) for a, b in zip(*leaves))
