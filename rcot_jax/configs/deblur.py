"""Motion deblurring (random camera-shake kernels on the embedded photographs by default).

`''`: the paper's official settings (configs/default.py) with its schedule for this task: 51 epochs, learning
rates x0.1 every 20 epochs, an epoch being 3,505 steps (GoPro: 2,103 pairs x 5 repeats at batch 3 (the DA-RCOT
loader; RCOT's trainer lacks the flag)). `quick`: a small map that visibly restores within minutes on a 2-core
CPU, on milder camera shake (kernels up to 7 px instead of 15): blind deblurring of the default 15 px kernels
needs far more training than a CPU gives in minutes (the quick map plateaus about 0.7 dB above the blurred
input). `tiny`: a few steps, for tests.
"""
from rcot_jax.configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.data.task = "deblur"
    if not arg:
        default.set_epochs(c, steps_per_epoch=3505)
    elif arg == "quick":
        c.data.blur_kernel_size = 7
    return c
