"""Small fabricated inputs the tests share: image files, folders of pairs, copies of the paper's dataset layouts,
and tiny configs that finish in a few steps; and `command`, a program run as a user runs it."""
import functools
import os
import re
import subprocess
import sys

import numpy as np
import skimage.data
from PIL import Image

from rcot_jax.data import catalog, degradations

ROOT = os.path.join(os.path.dirname(__file__), "..")
HW = (48, 64)          # fabricated images: small, and one bucket (64 x 64) for every whole-image evaluation


def save_image(path, arr=None, hw=HW, seed=0, **kwargs):
    """Writes `arr` (default: random RGB of size `hw`) to `path`, creating its folder; returns the array."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    if arr is None:
        arr = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    Image.fromarray(arr).save(str(path), **kwargs)
    return arr


def photo(hw):
    """The astronaut photograph, float32 in [0, 1], resized to `hw`."""
    img = skimage.data.astronaut().astype(np.float32) / 255
    return degradations.bicubic_resize(img, hw).clip(0, 1)


def rain_folders(root, n=4):
    """rainy/rain-N.png and gt/norain-N.png under `root` (pathlib); returns (degraded folder, target folder)."""
    for i in range(1, n + 1):
        clean = save_image(root / "gt" / f"norain-{i}.png", seed=i)
        save_image(root / "rainy" / f"rain-{i}.png", np.clip(clean.astype(int) + 40, 0, 255).astype(np.uint8))
    return str(root / "rainy"), str(root / "gt")


def fabricate(name, root, n=2):
    """A tiny copy of dataset `name`'s layout (real file naming, small random images) under `root`."""
    layout = catalog.LAYOUTS[name]
    for split, spec in layout.splits.items():
        folder = os.path.join(root, spec[0])
        for i in range(1, n + 1):
            if len(spec) == 1:
                save_image(os.path.join(folder, "part", f"img{i:03d}.{'png' if i % 2 else 'jpg'}"), seed=i)
                continue
            fields = {"id": f"{i:04d}", "seq": f"GOPR{i % 2:04d}", "beta": "0.8", "a": "0.04"}
            target = save_image(os.path.join(folder, spec[2].format(**fields) + ".png"), seed=i)
            small = np.clip(target[::layout.scale, ::layout.scale].astype(int) + 25, 0, 255).astype(np.uint8)
            save_image(os.path.join(folder, spec[1].format(**fields) + ".png"), small)
            if "beta" in spec[1]:                                     # many hazy images share one clear image
                save_image(os.path.join(folder, spec[1].format(**{**fields, "beta": "0.6"}) + ".png"), small)
    return root


def loop_config():
    """The tiny deblurring config with the tiny MPRNet map, which compiles in half the tiny Restormer's time: for
    the tests of the run loop (resume, signals, checkpoints), whose programs they then share."""
    from rcot_jax.configs import deblur
    config = deblur.get_config("tiny")
    config.model.backbone = "mprnet"
    return config


@functools.cache
def tiny_t_params(backbone):
    """The parameters of the tiny config's map T with `backbone` (they depend neither on the input's size nor on
    `model.remat`), initialised once per process: for the tests of the networks themselves."""
    import jax
    import jax.numpy as jnp
    from rcot_jax import models
    from rcot_jax.configs import default
    config = default.get_config("tiny")
    config.model.backbone = backbone
    return jax.jit(models.build_models(config)[0].init)(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))


def comparison_batch(dtype=np.float64):
    """A batch of 8 whose samples differ in noise level, pairing and Fourier exponent, so that a share computed from
    part of the batch alone (a device's, a micro-batch's) differs from the batch's."""
    rng = np.random.default_rng(0)
    clean = rng.random((8, 32, 32, 3))
    sigma = np.array([0.05, 0.1, 0.4, 0.2, 0.3, 0.05, 0.15, 0.25])[:, None, None, None]
    degraded = np.clip(clean + sigma * rng.standard_normal(clean.shape), 0, 1)
    return {"degraded": degraded.astype(dtype), "target": clean.astype(dtype),
            "paired": np.array([1, 0, 0, 1, 1, 1, 1, 0], bool),        # 2 + 3 per half, 1 1 2 1 per quarter
            "de_id": np.array([0, 3, 1, 5, 4, 2, 6, 8], np.int32)}     # p = 2 1 2 1 1 2 1 1


def comparison_config(critic_width=4):
    """The tiny config with the MPRNet map (no network mixes samples: the smaller graph checks the same reductions),
    with a critic of width 4 by default (float64 steps in a third of the tiny config's 16-wide one's time)."""
    from rcot_jax.configs import default
    config = default.get_config("tiny")
    config.model.backbone = "mprnet"
    config.model.critic_width = critic_width
    return config


def float64_start():
    """The float64 comparisons' start (tests/test_parallel.py, tests/test_accumulate.py; call with 64-bit JAX on):
    (`comparison_config()`, its initial state on the host, `comparison_batch()`)."""
    import jax
    from rcot_jax.state import init_state
    config = comparison_config()
    return config, host_copy(init_state(config, jax.random.key(1))), comparison_batch()


def host_copy(tree):
    """`tree`'s arrays copied to the host: a state to start compiled steps from, which donate their input state
    (copying it on the device instead compiles a program per leaf shape)."""
    import jax
    return jax.tree.map(np.array, tree)


def run_steps(step_fn, state, batch, n):
    """[(state on the host, {metric: float})] after each of `n` calls `step_fn(state, batch, key(7))`."""
    import jax
    runs = []
    for _ in range(n):
        state, metrics = step_fn(state, batch, jax.random.key(7))
        state = host_copy(state)
        runs.append((state, {k: float(v) for k, v in metrics.items()}))
    return runs


def tiny(module, **data):
    """The `tiny` config of a task module, two steps, with `data` overrides."""
    c = module.get_config("tiny")
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 2, 2, 2
    c.data.update(eval_batch_size=4, **data)
    return c


def xla_flags(devices=None):
    """XLA_FLAGS for a subprocess: the suite's (conftest.py: fast-compiling XLA:CPU, and those rcot_jax adds on
    import), with `devices` CPU devices (None: XLA's default, one)."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"]).strip()
    return f"--xla_force_host_platform_device_count={devices} {flags}" if devices else flags


def command(name, *args, cwd=ROOT, timeout=600):
    """`python -m rcot_jax.<name> ARGS` in `cwd`: the finished process, its output captured as text."""
    return subprocess.run([sys.executable, "-m", f"rcot_jax.{name}", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
