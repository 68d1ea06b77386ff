"""The RCOT train step, written once per device in the pmap style (`axis_name`; None = one device).

One step = `n_critic` critic iterations, then one update of the map T:
  critic (official scheme): a Wasserstein update on mean F(T(x)) - mean F(y) with T fixed, then a
  gradient-penalty update computed with the already-updated critic (`critic.gp_update='joint'`: one update
  on their sum); map: an update on -mean F(T(x)) + lambda_F (RMSE + Fourier term) + lambda_pair * paired L1.
"""
import jax
import jax.numpy as jnp
import optax
from jax import lax

from rcot_jax import losses, models, optim
from rcot_jax.ids import fourier_exponent
from rcot_jax.state import RCOTState

BACKBONES = ("restormer", "mprnet")


def build_models(config):
    """(T, F) flax modules from `config.model` and `config.data.patch_size`."""
    m = config.model
    if m.backbone == "restormer":
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in m.restormer.items()}
        t_model = models.RestormerRCOT(**kwargs, two_pass=m.two_pass, cond_scale=m.cond_scale)
    elif m.backbone == "mprnet":
        t_model = models.MPRNetRCOT(**m.mprnet, two_pass=m.two_pass, cond_scale=m.cond_scale)
    else:
        raise ValueError(f"config.model.backbone={m.backbone!r}, expected one of {BACKBONES}")
    return t_model, models.Critic(patch_size=config.data.patch_size, width=config.model.critic_width)


def create_train_state(config, rng):
    """Fresh parameters (PyTorch-default init for T, the official init for F) and optimiser states."""
    t_model, f_model = build_models(config)
    t_opt, f_opt = optim.make_optimizers(config)
    t_key, f_key = jax.random.split(rng)
    p = config.data.patch_size

    @jax.jit
    def init():
        # T's parameters do not depend on the input size; the critic's fc layer does.
        t_params = t_model.init(t_key, jnp.zeros((1, 8, 8, 3)))
        f_params = f_model.init(f_key, jnp.zeros((1, p, p, 3)))
        return RCOTState(step=jnp.zeros((), jnp.int32), t_params=t_params, f_params=f_params,
                         t_opt_state=t_opt.init(t_params), f_opt_state=f_opt.init(f_params))

    return init()


def _psum(tree, axis_name):
    return tree if axis_name is None else lax.psum(tree, axis_name)


def _per_sample_uniform(key, local_batch, axis_name):
    """U[0, 1] per sample of the global batch, sliced to this device: identical on 1 or N devices."""
    if axis_name is None:
        return jax.random.uniform(key, (local_batch,))
    n = lax.psum(1, axis_name)
    return lax.dynamic_slice_in_dim(jax.random.uniform(key, (local_batch * n,)),
                                    lax.axis_index(axis_name) * local_batch, local_batch)


def train_step(state: RCOTState, batch, rng, config, axis_name=None):
    """One RCOT step on this device's slice of the batch. `rng` may be the same key every step: it is
    folded with `state.step`. Returns (new state, metrics), metrics being global over `axis_name`."""
    t_model, f_model = build_models(config)
    t_opt, f_opt = optim.make_optimizers(config)
    lc = config.loss
    x, y = batch["degraded"], batch["target"]
    paired = batch["paired"].astype(bool)
    p = fourier_exponent(batch["de_id"])
    rng = jax.random.fold_in(rng, state.step)

    def potential(f_params):
        return lambda images: f_model.apply(f_params, images)

    def f_update(f_params, f_opt_state, loss_fn):
        """One critic optimiser step on loss_fn(f_params) -> (loss, logged values)."""
        (_, logged), grads = jax.value_and_grad(loss_fn, has_aux=True)(f_params)
        updates, f_opt_state = f_opt.update(_psum(grads, axis_name), f_opt_state, f_params)
        return optax.apply_updates(f_params, updates), f_opt_state, logged

    # Critic: T is held fixed.
    restored = lax.stop_gradient(t_model.apply(state.t_params, x))
    f_params, f_opt_state = state.f_params, state.f_opt_state
    for i in range(config.critic.n_critic):
        alpha = _per_sample_uniform(jax.random.fold_in(rng, i), x.shape[0], axis_name)

        def w_loss(fp):
            return losses.critic_loss(potential(fp), restored, y, axis_name)

        def gp_loss(fp):
            return losses.gradient_penalty(potential(fp), restored, y, alpha, lc.lambda_gp, axis_name)

        if config.critic.gp_update == "separate":
            f_params, f_opt_state, critic = f_update(f_params, f_opt_state, lambda fp: (w_loss(fp),) * 2)
            f_params, f_opt_state, gp = f_update(f_params, f_opt_state, lambda fp: (gp_loss(fp),) * 2)
        else:
            def joint(fp):
                w, g = w_loss(fp), gp_loss(fp)
                return w + g, (w, g)
            f_params, f_opt_state, (critic, gp) = f_update(f_params, f_opt_state, joint)

    # Map: the updated critic is held fixed (only T's parameters are differentiated).
    def t_loss(t_params):
        out = t_model.apply(t_params, x)
        loss, terms = losses.transport_loss(
            potential(f_params), x, out, y, paired, p, lambda_f=lc.lambda_f, lambda_pair=lc.lambda_pair,
            variant=lc.fourier_variant, axis_name=axis_name)
        return loss, (terms, out)

    (t_value, (terms, out)), t_grads = jax.value_and_grad(t_loss, has_aux=True)(state.t_params)
    updates, t_opt_state = t_opt.update(_psum(t_grads, axis_name), state.t_opt_state, state.t_params)
    t_params = optax.apply_updates(state.t_params, updates)

    metrics = {
        "critic_loss": critic, "gradient_penalty": gp, "wasserstein": -critic,
        "transport_loss": t_value, "cost": terms["cost"], "fourier": terms["fourier"], "rmse": terms["rmse"],
        "paired_l1": terms["paired_l1"],
        "l1": losses.batch_mean(jnp.abs(out - y).mean(axis=(1, 2, 3)), axis_name),
        "psnr": losses.psnr(out, y, axis_name),
    }
    new_state = RCOTState(step=state.step + 1, t_params=t_params, f_params=f_params,
                          t_opt_state=t_opt_state, f_opt_state=f_opt_state)
    return new_state, _psum(metrics, axis_name)
