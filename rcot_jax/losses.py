"""RCOT's transport cost and minimax losses: pure functions on NHWC float32 batches.

Data-parallel contract. Every function takes `axis_name` (None: one device, no collectives). With an axis
name, each device holds a slice of the global batch and a function returns this device's *share* of the
global quantity: the shares summed over the axis equal the value on the whole batch, and the gradient of a
share with respect to this device's inputs (and, summed over devices, with respect to replicated parameters)
equals the gradient of the global quantity. The train step therefore differentiates shares locally and
`psum`s gradients and metrics; no gradient ever flows through a collective, so the arithmetic is the same
under `jax.pmap` and `jax.shard_map`, on 1 device or N.

Gradient accumulation splits each device's slice further into micro-batches processed one after another
(`micro`, a `MicroBatches`; None: no split). A share is then a micro-batch's part of the global quantity, and
whole-batch statistics that no single micro-batch sees (the RMSE's sum of squares, the number of paired
samples) come precomputed over the device's slice; they are still reduced over `axis_name` here.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

FOURIER_VARIANTS = ("paper", "official", "off")


class MicroBatches(NamedTuple):
    """This slice is one of `count` equal micro-batches of the device's slice. `residual_ss` (sum of squared
    residuals, for `residual_rmse`) and `n_paired` (for `paired_l1`) are over the device's whole slice."""
    count: int
    residual_ss: jax.Array | None = None
    n_paired: jax.Array | None = None


def _psum(x, axis_name):
    return x if axis_name is None else lax.psum(x, axis_name)


def _num_shards(axis_name, micro=None):
    return (1 if micro is None else micro.count) * (1 if axis_name is None else lax.psum(1, axis_name))


def batch_mean(per_sample, axis_name=None, micro=None):
    """Share of the mean over the global batch of a per-sample quantity [B]."""
    n = per_sample.shape[0] * _num_shards(axis_name, micro)
    return per_sample.sum() / n


def _safe_sqrt(x):
    """sqrt with gradient 0 (not NaN) at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _safe_abs(z):
    """|z| of a complex array with gradient 0 (not NaN) at z = 0."""
    return _safe_sqrt(jnp.real(z) ** 2 + jnp.imag(z) ** 2)


def fourier_residual_cost(residual, p, variant="paper", axis_name=None, micro=None):
    """The Fourier term of the transport cost.

    residual: [B, H, W, C]; p: [B] of 1 or 2. F is the unnormalised 2-D DFT over H and W, per channel.
      'paper':    mean over samples of (mean_{h,w,c} |F r_b|^p_b)^(1/p_b).
      'official': what the official trainer computes (its `**1/2` precedence bug, and a sum over the batch):
                  sum over samples of mean|F r_b|^2 / 2 where p_b = 2, and mean|F r_b| where p_b = 1.
      'off':      0 (the ablation without the Fourier term: the cost is the RMSE alone).
    """
    if variant not in FOURIER_VARIANTS:
        raise ValueError(f"fourier_residual_cost: variant={variant!r}, expected one of {FOURIER_VARIANTS}")
    if variant == "off":
        return jnp.zeros((), residual.dtype)
    spectrum = jnp.fft.fft2(residual, axes=(1, 2))
    magnitude = _safe_abs(spectrum)
    mean_abs = magnitude.mean(axis=(1, 2, 3))
    mean_sq = (magnitude ** 2).mean(axis=(1, 2, 3))
    if variant == "paper":
        return batch_mean(jnp.where(p == 2, _safe_sqrt(mean_sq), mean_abs), axis_name, micro)
    return jnp.where(p == 2, mean_sq / 2, mean_abs).sum()


def residual_rmse(residual, axis_name=None, micro=None):
    """Share of sqrt(mean r^2) over every element of the global batch (the official batch-wide RMSE).

    The square root of a global mean is not a sum over slices, so the share is the global value divided
    evenly plus a zero-valued term that carries the exact local gradient r / (N * rmse).
    """
    local_ss = jnp.sum(residual ** 2)
    n = residual.size * _num_shards(axis_name, micro)
    device_ss = local_ss if micro is None else micro.residual_ss
    rmse = jnp.sqrt(_psum(lax.stop_gradient(device_ss), axis_name) / n)
    grad_carrier = (local_ss - lax.stop_gradient(local_ss)) / (2 * n * jnp.maximum(rmse, 1e-12))
    return rmse / _num_shards(axis_name, micro) + grad_carrier


def transport_cost(degraded, restored, p, lambda_f, variant="paper", axis_name=None, micro=None):
    """lambda_F * (RMSE of r + Fourier term) with r = x - T(x). Returns (cost, rmse, fourier) shares."""
    residual = degraded - restored
    rmse = residual_rmse(residual, axis_name, micro)
    fourier = fourier_residual_cost(residual, p, variant, axis_name, micro)
    return lambda_f * (rmse + fourier), rmse, fourier


def paired_l1(restored, target, paired, axis_name=None, micro=None):
    """Share of mean |T(x) - y| over the global batch's samples whose `paired` flag is set (0 if none)."""
    per_sample = jnp.abs(restored - target).mean(axis=(1, 2, 3))
    n_paired = _psum(jnp.sum(paired.astype(jnp.float32)) if micro is None else micro.n_paired, axis_name)
    return jnp.sum(jnp.where(paired, per_sample, 0.0)) / jnp.maximum(n_paired, 1.0)


def critic_loss(potential, restored, target, axis_name=None, micro=None):
    """mean F(T(x)) - mean F(y) with T's output held fixed (the critic minimises it; minus it estimates W)."""
    return (batch_mean(potential(lax.stop_gradient(restored)), axis_name, micro)
            - batch_mean(potential(target), axis_name, micro))


def gradient_penalty(potential, restored, target, alpha, lambda_gp, axis_name=None, micro=None):
    """lambda_GP * mean_b (||grad_x F(x_hat_b)||_2 - 1)^2, x_hat = a y + (1 - a) T(x), a: [B] in [0, 1].

    The critic scores each image independently, so the input gradient of sum_b F(x_hat_b) is per-sample.
    """
    a = alpha[:, None, None, None]
    x_hat = a * target + (1 - a) * lax.stop_gradient(restored)
    grads = jax.grad(lambda x: potential(x).sum())(x_hat)
    norms = _safe_sqrt(jnp.sum(grads ** 2, axis=(1, 2, 3)))
    return lambda_gp * batch_mean((norms - 1.0) ** 2, axis_name, micro)


def transport_loss(potential, degraded, restored, target, paired, p, *, lambda_f, lambda_pair,
                   variant="paper", axis_name=None, micro=None):
    """-mean F(T(x)) + transport cost + lambda_pair * paired L1. Returns (loss, terms) shares.

    `potential` None drops the adversarial term (the critic-off ablation: a pure cost + L1 map)."""
    adversarial = 0.0 if potential is None else -batch_mean(potential(restored), axis_name, micro)
    cost, rmse, fourier = transport_cost(degraded, restored, p, lambda_f, variant, axis_name, micro)
    l1_paired = paired_l1(restored, target, paired, axis_name, micro)
    loss = adversarial + cost + lambda_pair * l1_paired
    return loss, {"adversarial": adversarial, "cost": cost, "rmse": rmse, "fourier": fourier,
                  "paired_l1": l1_paired}


def psnr(restored, target, axis_name=None, micro=None):
    """Share of the mean per-image PSNR (dB, data range 1) of the clipped restoration."""
    mse = jnp.mean((jnp.clip(restored, 0.0, 1.0) - target) ** 2, axis=(1, 2, 3))
    return batch_mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10)), axis_name, micro)
