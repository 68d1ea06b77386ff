"""The RCOT train step, written once per device in the pmap style (`axis_name`; None = one device).

One step (`train_step`) = `n_critic` critic iterations (`critic_update`), then one update of the map T
(`map_update`):
  critic (official scheme): a Wasserstein update on mean F(T(x)) - mean F(y) with T fixed, then a
  gradient-penalty update computed with the already-updated critic (`critic.gp_update='joint'`: one update
  on their sum); map: an update on -mean F(T(x)) + lambda_F (RMSE + Fourier term) + lambda_pair * paired L1.
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from rcot_jax import losses, models, optim
from rcot_jax.ids import fourier_exponent
from rcot_jax.state import RCOTState

FOURIER_EXPONENTS = (0, 1, 2)     # config.loss.fourier_p: 0 = by degradation (ids.fourier_exponent)
# Scalars a vmapped sweep may vary between variants (besides the seed). The step takes them as an explicit pytree,
# `scalars` {dotted key: value}, by default the config's own (Python floats, folded into the program).
SWEEPABLE = ("loss.lambda_f", "loss.lambda_pair", "loss.lambda_gp", "model.cond_scale", "optim.lr_map",
             "optim.lr_critic")


def config_scalars(config):
    """{key: config's value} of every SWEEPABLE key: the step's default `scalars`."""
    def get(key):
        section, leaf = key.split(".")
        return config[section][leaf]
    return {key: get(key) for key in SWEEPABLE}


def _psum(tree, axis_name):
    return tree if axis_name is None else lax.psum(tree, axis_name)


def _per_sample_uniform(key, local_batch, axis_name):
    """U[0, 1] per sample of the global batch, sliced to this device: identical on 1 or N devices."""
    if axis_name is None:
        return jax.random.uniform(key, (local_batch,))
    n = lax.psum(1, axis_name)
    return lax.dynamic_slice_in_dim(jax.random.uniform(key, (local_batch * n,)),
                                    lax.axis_index(axis_name) * local_batch, local_batch)


def _split(data, k):
    return jax.tree.map(lambda a: a.reshape(k, a.shape[0] // k, *a.shape[1:]), data)


def _accumulate(fn, data, k):
    """Sum of fn(micro-batch) (a pytree) over the k micro-batches that split `data` along its leading axis.

    One micro-batch at a time (`lax.scan`), so only its activations are live; the sum is carried in at least
    float32.
    """
    micro = _split(data, k)
    shapes = jax.eval_shape(fn, jax.tree.map(lambda a: a[0], micro))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32)), shapes)

    def add(total, d):
        return jax.tree.map(lambda t, v: t + v.astype(t.dtype), total, fn(d)), None

    total, _ = lax.scan(add, zeros, micro)
    return jax.tree.map(lambda t, s: t.astype(s.dtype), total, shapes)


def _value_and_grad(loss_fn, params, data, k):
    """((loss, logged), grads) of loss_fn(params, data), summed over k micro-batches."""
    vg = lambda d: jax.value_and_grad(loss_fn, has_aux=True)(params, d)  # noqa: E731
    return vg(data) if k == 1 else _accumulate(vg, data, k)


def _micro(config, batch_size):
    """`losses.MicroBatches` for `config.optim.accumulate_steps` (None: one batch), checked to divide the slice."""
    k = config.optim.accumulate_steps
    if k < 1 or batch_size % k:
        raise ValueError(f"config.optim.accumulate_steps={k} does not divide the {batch_size} samples per "
                         f"device (config.data.batch_size / devices) into equal micro-batches")
    return None if k == 1 else losses.MicroBatches(k)


def critic_update(state: RCOTState, restored, target, rng, config, axis_name=None, scalars=None):
    """The critic's part of a step: `config.critic.n_critic` iterations on F with T held fixed, given T's
    restorations `restored` of this device's slice and their `target`s. Each iteration is the official scheme, a
    Wasserstein update on mean F(T(x)) - mean F(y) then a gradient-penalty update computed with the
    already-updated critic (`critic.gp_update='joint'`: one update on their sum). `rng` is the step's key.
    Returns (F's parameters, F's optimiser state, {"critic_loss", "gradient_penalty"} of the last iteration)."""
    s = scalars or config_scalars(config)
    _, f_model = models.build_models(config)
    _, f_opt = optim.make_optimizers(config, s["optim.lr_map"], s["optim.lr_critic"])
    k, micro = config.optim.accumulate_steps, _micro(config, restored.shape[0])

    def f_update(f_params, f_opt_state, loss_fn, data):
        """One critic optimiser step on loss_fn(f_params, data) -> (loss, logged values)."""
        (_, logged), grads = _value_and_grad(loss_fn, f_params, data, k)
        updates, f_opt_state = f_opt.update(_psum(grads, axis_name), f_opt_state, f_params)
        return optax.apply_updates(f_params, updates), f_opt_state, logged

    f_params, f_opt_state = state.f_params, state.f_opt_state
    critic = gp = jnp.zeros((), jnp.float32)
    for i in range(config.critic.n_critic if config.critic.enabled else 0):
        alpha = _per_sample_uniform(jax.random.fold_in(rng, i), restored.shape[0], axis_name)
        data = {"restored": restored, "target": target, "alpha": alpha}

        def w_loss(fp, d):
            return losses.critic_loss(lambda images: f_model.apply(fp, images), d["restored"], d["target"],
                                      axis_name, micro)

        def gp_loss(fp, d):
            return losses.gradient_penalty(lambda images: f_model.apply(fp, images), d["restored"], d["target"],
                                           d["alpha"], s["loss.lambda_gp"], axis_name, micro)

        if config.critic.gp_update == "separate":
            f_params, f_opt_state, critic = f_update(f_params, f_opt_state, lambda fp, d: (w_loss(fp, d),) * 2, data)
            f_params, f_opt_state, gp = f_update(f_params, f_opt_state, lambda fp, d: (gp_loss(fp, d),) * 2, data)
        else:
            def joint(fp, d):
                w, g = w_loss(fp, d), gp_loss(fp, d)
                return w + g, (w, g)
            f_params, f_opt_state, (critic, gp) = f_update(f_params, f_opt_state, joint, data)
    return f_params, f_opt_state, {"critic_loss": critic, "gradient_penalty": gp}


def map_update(state: RCOTState, f_params, batch, restored, config, axis_name=None, scalars=None):
    """The map's part of a step: one update of T on -mean F(T(x)) + lambda_F (RMSE + Fourier term) + lambda_pair *
    paired L1, with the (updated) critic `f_params` held fixed; only T's parameters are differentiated.
    `restored` is T(x) before the update (its residuals give the whole slice's RMSE before any micro-batch's
    gradient). Returns (T's parameters, T's optimiser state, the transport loss and its terms)."""
    s = scalars or config_scalars(config)
    t_model, f_model = models.build_models(config, s["model.cond_scale"])
    t_opt, _ = optim.make_optimizers(config, s["optim.lr_map"], s["optim.lr_critic"])
    lc = config.loss
    x, y = batch["degraded"], batch["target"]
    k, micro = config.optim.accumulate_steps, _micro(config, x.shape[0])
    paired = batch["paired"].astype(bool)
    if lc.fourier_p not in FOURIER_EXPONENTS:
        raise ValueError(f"config.loss.fourier_p={lc.fourier_p!r}, expected one of {FOURIER_EXPONENTS}")
    p = fourier_exponent(batch["de_id"]) if not lc.fourier_p else jnp.full(x.shape[:1], lc.fourier_p, jnp.int32)
    if k > 1:
        micro = micro._replace(residual_ss=jnp.sum((x - restored) ** 2), n_paired=jnp.sum(paired.astype(jnp.float32)))
    f_potential = (lambda images: f_model.apply(f_params, images)) if config.critic.enabled else None

    def t_loss(t_params, d):
        out = t_model.apply(t_params, d["degraded"])
        loss, terms = losses.transport_loss(
            f_potential, d["degraded"], out, d["target"], d["paired"], d["p"], lambda_f=s["loss.lambda_f"],
            lambda_pair=s["loss.lambda_pair"], variant=lc.fourier_variant, axis_name=axis_name, micro=micro)
        terms["l1"] = losses.batch_mean(jnp.abs(out - d["target"]).mean(axis=(1, 2, 3)), axis_name, micro)
        terms["psnr"] = losses.psnr(out, d["target"], axis_name, micro)
        return loss, terms

    data = {"degraded": x, "target": y, "paired": paired, "p": p}
    (t_value, terms), t_grads = _value_and_grad(t_loss, state.t_params, data, k)
    updates, t_opt_state = t_opt.update(_psum(t_grads, axis_name), state.t_opt_state, state.t_params)
    return optax.apply_updates(state.t_params, updates), t_opt_state, {"transport_loss": t_value, **terms}


def train_step(state: RCOTState, batch, rng, config, axis_name=None, scalars=None):
    """One RCOT step on this device's slice of the batch: `critic_update`, then `map_update`. `rng` may be the
    same key every step: it is folded with `state.step`. `scalars`: {SWEEPABLE key: value} instead of the
    config's (traced in a sweep). Returns (new state, metrics), metrics being global over `axis_name`.

    `config.optim.accumulate_steps` = k > 1 splits the slice into k micro-batches: every optimiser step sums
    their gradients (shares, see losses.py), so it is the same update in less memory.
    """
    scalars = scalars or config_scalars(config)
    t_model, _ = models.build_models(config, scalars["model.cond_scale"])
    k = config.optim.accumulate_steps
    x = batch["degraded"]
    _micro(config, x.shape[0])
    rng = jax.random.fold_in(rng, state.step)

    def t_forward(images):     # T is held fixed for the critic, so T(x) is computed once (a micro-batch at a time)
        return lax.stop_gradient(t_model.apply(state.t_params, images))

    restored = t_forward(x) if k == 1 else lax.map(t_forward, _split(x, k)).reshape(x.shape)
    f_params, f_opt_state, critic = critic_update(state, restored, batch["target"], rng, config, axis_name, scalars)
    t_params, t_opt_state, terms = map_update(state, f_params, batch, restored, config, axis_name, scalars)
    metrics = {
        "critic_loss": critic["critic_loss"], "gradient_penalty": critic["gradient_penalty"],
        "wasserstein": -critic["critic_loss"], "transport_loss": terms["transport_loss"], "cost": terms["cost"],
        "fourier": terms["fourier"], "rmse": terms["rmse"], "paired_l1": terms["paired_l1"], "l1": terms["l1"],
        "psnr": terms["psnr"],
    }
    new_state = RCOTState(step=state.step + 1, t_params=t_params, f_params=f_params,
                          t_opt_state=t_opt_state, f_opt_state=f_opt_state)
    return new_state, _psum(metrics, axis_name)


def with_values(config, values):
    """A copy of `config` with dotted keys set to `values` (e.g. {'data.batch_size': 16})."""
    config = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    for key, value in values.items():
        *path, leaf = key.split(".")
        node = config
        for name in path:
            node = node[name]
        node[leaf] = value
    return config


def sweep_train_step(config, axis_name=None):
    """`train_step` vmapped over a leading variant axis: (states, batches, rngs, scalars) -> (states, metrics),
    every argument and result stacked over K variants; `scalars` maps every SWEEPABLE key to float32[K] (the
    variants' values). K variants that differ only in those scalars and their seeds train in one compiled step."""
    def one(state, batch, rng, scalars):
        return train_step(state, batch, rng, config, axis_name, scalars)
    return jax.vmap(one)
