"""Optimisers with PyTorch semantics and the official step-decay learning-rate schedule."""
import optax

OPTIMIZERS = ("rmsprop", "adam")
GP_UPDATES = ("separate", "joint")


def step_decay(lr, decay_every_steps, factor=0.1):
    """lr * factor ** (step // decay_every_steps); `decay_every_steps` None or 0 keeps lr constant."""
    if not decay_every_steps:
        return lambda count: lr
    return lambda count: lr * factor ** (count // decay_every_steps)


def make_optimizer(name, learning_rate):
    """'rmsprop': torch.optim.RMSprop defaults (alpha 0.99, eps 1e-8 outside the sqrt, no momentum);
    'adam': torch.optim.Adam defaults (betas 0.9/0.999, eps 1e-8)."""
    if name == "rmsprop":
        return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False, initial_scale=0.0)
    if name == "adam":
        return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    raise ValueError(f"config.optim.name={name!r}, expected one of {OPTIMIZERS}")


def critic_updates_per_step(config):
    """Optimiser steps the critic takes per train step: n_critic iterations of 2 (official) or 1 (joint)."""
    if config.critic.gp_update not in GP_UPDATES:
        raise ValueError(f"config.critic.gp_update={config.critic.gp_update!r}, expected one of {GP_UPDATES}")
    if config.critic.n_critic < 1:
        raise ValueError(f"config.critic.n_critic={config.critic.n_critic}, expected >= 1")
    return config.critic.n_critic * (2 if config.critic.gp_update == "separate" else 1)


def make_optimizers(config, lr_map=None, lr_critic=None):
    """(map optimiser, critic optimiser). Both schedules decay on the *train step*: the critic's optimiser
    counts its own updates, several per train step, so its count is divided back to train steps. `lr_map`,
    `lr_critic` (floats or traced scalars) instead of the config's."""
    o = config.optim
    t_lr = step_decay(o.lr_map if lr_map is None else lr_map, o.decay_every_steps, o.decay_factor)
    f_lr_per_step = step_decay(o.lr_critic if lr_critic is None else lr_critic, o.decay_every_steps, o.decay_factor)
    k = critic_updates_per_step(config)
    return (make_optimizer(o.name, t_lr),
            make_optimizer(o.name, lambda count: f_lr_per_step(count // k)))
