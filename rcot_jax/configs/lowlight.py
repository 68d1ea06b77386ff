"""Low-light enhancement (gamma/exposure darkening with shot and read noise by default).

`''`: the paper's official settings (configs/default.py) with its schedule for this task: 51 epochs, learning
rates x0.1 every 20 epochs, an epoch being 3,234 steps (LOL: 485 pairs x 20 repeats at batch 3 (the DA-RCOT
loader)). `quick`: a small map that visibly restores within minutes on a 2-core CPU. `tiny`: a few steps, for
tests.
"""
from rcot_jax.configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.data.task = "lowlight"
    if not arg:
        default.set_epochs(c, steps_per_epoch=3234)
    return c
