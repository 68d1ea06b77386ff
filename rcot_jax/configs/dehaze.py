"""Dehazing (atmospheric scattering I = J t + A (1 - t) with random smooth depth by default).

`''`: the paper's official settings (configs/default.py) with its schedule for this task: 51 epochs, learning
rates x0.1 every 20 epochs, an epoch being 24,045 steps (RESIDE-beta OTS: 72,135 pairs at batch 3). `quick`: a
small map that visibly restores within minutes on a 2-core CPU. `tiny`: a few steps, for tests.
"""
from rcot_jax.configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.data.task = "dehaze"
    if not arg:
        default.set_epochs(c, steps_per_epoch=24045)
    return c
