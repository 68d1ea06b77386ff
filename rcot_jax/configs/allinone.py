"""All-in-one restoration: every sample draws one degradation from `config.data.mix` (default: the paper's
three-degradation setting, haze, rain and noise at sigma 15/25/50) and carries its id.

`''`: the paper's official settings (configs/default.py) with its schedule for this task: 51 epochs, learning
rates x0.1 every 20 epochs, an epoch being 73,765 steps (OTS 72,135 + Rain100L 72,000 + 3 x 25,720 noise samples
at batch 3). `quick`: a small map that visibly restores within minutes on a 2-core CPU. `tiny`: a few steps, for
tests.
"""
from rcot_jax.configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.data.task = "allinone"
    if not arg:
        default.set_epochs(c, steps_per_epoch=73765)
    return c
