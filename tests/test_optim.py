import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rcot_jax import optim
from rcot_jax.configs import default

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name,torch_cls", [("rmsprop", "RMSprop"), ("adam", "Adam")])
def test_optimizers_match_torch(name, torch_cls):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(50).astype(np.float32)
    grads = rng.standard_normal((4, 50)).astype(np.float32) * np.logspace(-6, 1, 50, dtype=np.float32)
    opt = optim.make_optimizer(name, 1e-2)
    w, state = jnp.asarray(w0), opt.init(jnp.asarray(w0))
    tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = getattr(torch.optim, torch_cls)([tw], lr=1e-2)
    for g in grads:
        updates, state = opt.update(jnp.asarray(g), state, w)
        w = optax.apply_updates(w, updates)
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_step_decay_is_counted_in_train_steps():
    config = default.get_config("tiny")
    config.optim.name = "adam"
    config.optim.decay_every_steps = 3
    t_sched = optim.step_decay(config.optim.lr_map, 3)
    assert [float(t_sched(s)) for s in (0, 2, 3, 6)] == pytest.approx([5e-5, 5e-5, 5e-6, 5e-7])
    for gp_update, per_step in (("separate", 2), ("joint", 1)):
        config.critic.gp_update = gp_update
        config.critic.n_critic = 2
        assert optim.critic_updates_per_step(config) == 2 * per_step
        _, f_opt = optim.make_optimizers(config)
        # The critic's learning rate (visible through its first Adam update of a unit gradient) drops at train
        # step 3, i.e. after 3 * updates-per-step optimiser updates.
        state = f_opt.init(jnp.zeros(1))
        sizes = []
        for _ in range(4 * 2 * per_step):
            u, state = f_opt.update(jnp.ones(1), state)
            sizes.append(float(jnp.abs(u[0])))
        k = 2 * per_step
        np.testing.assert_allclose(sizes[:3 * k], 1e-4, rtol=1e-3)
        np.testing.assert_allclose(sizes[3 * k:], 1e-5, rtol=1e-3)


def test_bad_optimizer_config_names_the_key():
    with pytest.raises(ValueError, match="config.optim.name='sgd'"):
        optim.make_optimizer("sgd", 1e-3)
    config = default.get_config("tiny")
    config.critic.gp_update = "both"
    with pytest.raises(ValueError, match="config.critic.gp_update='both'"):
        optim.make_optimizers(config)
