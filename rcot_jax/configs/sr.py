"""x4 super-resolution: the bicubic-downsampled input is bicubic-upsampled back to the target size, as RCOT does.

`''`: the paper's official settings (configs/default.py) with its schedule for this task: 51 epochs, learning
rates x0.1 every 20 epochs, an epoch being 24,000 steps (DIV2K x4 has no released RCOT pipeline; the deraining
schedule is kept). `quick`: a small map that visibly restores within minutes on a 2-core CPU. `tiny`: a few
steps, for tests.
"""
from rcot_jax.configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.data.task = "sr"
    if not arg:
        default.set_epochs(c, steps_per_epoch=24000)
    return c
