"""RCOT training configuration.

`''`: the official training settings (README of xl-tang3/RCOT: Restormer map, batch 3, patch 128, RMSprop,
critic lr 1e-4, map lr 5e-5, x0.1 every 20 epochs, lambda_F 1, lambda_pair 1e4, lambda_GP 10, fully paired),
with the paper's Fourier cost (`loss.fourier_variant='official'` reproduces the official trainer's).
`'tiny'`: the same architecture, small enough for CPU tests.
"""
import ml_collections

# One epoch of Rain100L x360 repeats at batch 3 (the official deraining run); 51 epochs, decay every 20.
_OFFICIAL_STEPS_PER_EPOCH = 24_000


def get_config(arg=None):
    arg = arg or ""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_train_steps = 51 * _OFFICIAL_STEPS_PER_EPOCH

    c.model = ml_collections.ConfigDict()
    c.model.backbone = "restormer"            # 'restormer' (official trainer) | 'mprnet' (paper, pretrained weights)
    c.model.two_pass = True                   # False: the single-pass backbone (ablation baseline)
    c.model.cond_scale = 0.8
    c.model.restormer = dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8),
                             ffn_expansion_factor=2.66)
    c.model.mprnet = dict(n_feat=80, scale_unetfeats=48, reduction=4)

    c.data = ml_collections.ConfigDict()
    c.data.patch_size = 128                   # the critic only accepts patch_size x patch_size inputs
    c.data.batch_size = 3                     # global, over all devices

    c.loss = ml_collections.ConfigDict()
    c.loss.fourier_variant = "paper"          # 'paper' | 'official' (x/2 precedence bug, batch sum)
    c.loss.lambda_f = 1.0
    c.loss.lambda_pair = 1e4
    c.loss.lambda_gp = 10.0

    c.critic = ml_collections.ConfigDict()
    c.critic.gp_update = "separate"           # 'separate': two optimiser steps (official) | 'joint': one
    c.critic.n_critic = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "rmsprop"                  # 'rmsprop' | 'adam', both with PyTorch semantics
    c.optim.lr_critic = 1e-4
    c.optim.lr_map = 5e-5
    c.optim.decay_every_steps = 20 * _OFFICIAL_STEPS_PER_EPOCH
    c.optim.decay_factor = 0.1

    c.parallel = ml_collections.ConfigDict()
    c.parallel.wrapper = "shard_map"          # 'shard_map' | 'pmap'

    if arg == "tiny":
        c.num_train_steps = 3
        c.model.restormer = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2),
                                 ffn_expansion_factor=2.66)
        c.model.mprnet = dict(n_feat=8, scale_unetfeats=4, reduction=4)
        c.data.patch_size = 32
        c.data.batch_size = 8
        c.optim.decay_every_steps = 2
    elif arg:
        raise ValueError(f"configs/default.py: unknown variant {arg!r}, expected '' or 'tiny'")
    return c
