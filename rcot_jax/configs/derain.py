"""Deraining (synthetic rain streaks on the embedded photographs by default).

`''`: the paper's official settings (configs/default.py) with its schedule for this task: 51 epochs, learning
rates x0.1 every 20 epochs, an epoch being 24,000 steps (Rain100L: 200 pairs x 360 repeats at batch 3). `quick`:
a small map that visibly restores within minutes on a 2-core CPU. `tiny`: a few steps, for tests.
"""
from rcot_jax.configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.data.task = "derain"
    if not arg:
        default.set_epochs(c, steps_per_epoch=24000)
    return c
