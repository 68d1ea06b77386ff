"""Gaussian denoising at `config.data.noise_sigma` (15, 25 or 50; default 25): `--config.data.noise_sigma=50`.

`''`: the paper's official settings (configs/default.py) with its schedule for this task: 51 epochs, learning
rates x0.1 every 20 epochs, an epoch being 8,574 steps (BSD400 + WED: 5,144 images x 5 repeats at batch 3).
`quick`: a small map that visibly restores within minutes on a 2-core CPU. `tiny`: a few steps, for tests.
"""
from rcot_jax.configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.data.task = "denoise"
    if not arg:
        default.set_epochs(c, steps_per_epoch=8574)
    return c
