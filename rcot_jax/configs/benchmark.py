"""The three step sizes that `python -m rcot_jax.benchmark` compares with the official PyTorch loop.

  `:a` the paper's settings: Restormer map at the official size, critic P = 128, batch 3, patch 128
       (configs/default.py '', which rematerialises the map's blocks to fit in memory).
  `:b` a short Restormer map: one block per level and one refinement block, dim 48, critic P = 64, batch 4,
       patch 64.
  `:c` the MPRNet map at the official size with the critic of the official `Net.py` (fc 32768 -> 2048),
       batch 1, patch 256.
All use the official trainer's two critic optimiser steps and RMSprop. Append `:bf16` for mixed precision
(e.g. `configs/benchmark.py:b:bf16`) or override `--config.precision`.
"""
from rcot_jax.configs import default

VARIANTS = ("a", "b", "c")


def get_config(arg=None):
    name, _, precision = (arg or "a").partition(":")
    if name not in VARIANTS:
        raise ValueError(f"configs/benchmark.py: unknown variant {name!r}, expected one of {VARIANTS}")
    c = default.get_config()
    if name != "a":
        c.model.remat = "none"    # (b) and (c) fit in memory without it
    if name == "b":
        c.model.restormer = dict(dim=48, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8),
                                 ffn_expansion_factor=2.66)
        c.data.patch_size = 64
        c.data.batch_size = 4
    elif name == "c":
        c.model.backbone = "mprnet"
        c.model.critic_fc_features = 2048
        c.data.patch_size = 256
        c.data.batch_size = 1
    if precision:
        c.precision = precision
    return c
