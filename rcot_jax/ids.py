"""Degradation ids, named in one place. They keep the official RCOT numbering; new kinds take the next numbers.

The id decides the exponent p of the Fourier residual cost: 2 for Gaussian noise (whose residual spectrum is
flat and dense), 1 for every other degradation (structured, sparse spectra).
"""
import enum

import jax.numpy as jnp


class DegradationId(enum.IntEnum):
    NOISE_15 = 0
    NOISE_25 = 1
    NOISE_50 = 2
    RAIN = 3
    HAZE = 4
    BLUR = 5
    LOW_LIGHT = 6
    CUSTOM = 7        # user-supplied (degraded, target) pairs
    SR_X4 = 8         # x4 super-resolution, low-resolution input bicubic-upsampled to the target size


GAUSSIAN_NOISE = (DegradationId.NOISE_15, DegradationId.NOISE_25, DegradationId.NOISE_50)

# The degradations the data pipeline synthesises, by the names configs use (`data.mix`, `--config.data.task`'s
# degradation): the one table of their names (rcot_jax.data.degradations holds their functions).
DEGRADATION_IDS = {
    "noise15": DegradationId.NOISE_15, "noise25": DegradationId.NOISE_25, "noise50": DegradationId.NOISE_50,
    "rain": DegradationId.RAIN, "haze": DegradationId.HAZE, "blur": DegradationId.BLUR,
    "lowlight": DegradationId.LOW_LIGHT, "sr_x4": DegradationId.SR_X4,
}


def degradation_id(name):
    """The id of a degradation name; CUSTOM for any other (user-supplied pairs)."""
    return DEGRADATION_IDS.get(name, DegradationId.CUSTOM)


def fourier_exponent(de_id):
    """p per sample: int32[B] of 2 for Gaussian-noise ids, 1 otherwise."""
    is_noise = jnp.isin(jnp.asarray(de_id), jnp.asarray([int(i) for i in GAUSSIAN_NOISE]))
    return jnp.where(is_noise, 2, 1).astype(jnp.int32)
