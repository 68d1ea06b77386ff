# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # RCOT, piece by piece, and its ablations
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rcot-jax/rcot_jax/blob/main/notebooks/ablations.ipynb)
#
# RCOT (Residual-Conditioned Optimal Transport, Tang et al., ICML 2024) restores a degraded image $x$ with a
# transport map $T$ trained against a potential (critic) $F$:
#
# $$\min_T \max_F \; \mathbb{E}_x\big[c(x, T(x)) - F(T(x))\big] + \mathbb{E}_y\big[F(y)\big],
# \qquad c(x, T(x)) = \lambda_F\big(\mathrm{RMSE}(r) + \|\mathcal{F} r\|_p\big),\; r = x - T(x),$$
#
# plus an L1 term on paired samples. This notebook calls `rcot_jax` for every step: (1) the cost as pure
# functions, (2) the two-pass map, (3) a short training run on the embedded photographs, (4) ablations.
# It runs on a CPU; a GPU or TPU runtime makes the full-size runs faster. Each section's heading gives its time on a
# 2-core CPU, measured in one run of the whole notebook (33 minutes; jax 0.10.2, 2026-12-06; `experiments/benchmarks.md`).

# %% [markdown]
# ## 0. Install (CPU: 6 s)
#
# In Colab this installs `rcot_jax` from GitHub (without TensorFlow: Colab has its own), with a JAX at least as new
# as the 0.10.2 the tests run on (and its GPU or TPU plugins), in one `pip` command that keeps the NumPy Colab has
# already loaded: upgrading it under the running kernel breaks the next import, and Colab's numba and TensorFlow
# with it. If a package this session had already imported is changed anyway, the cell says so in one line and
# stops: restart the session and run all again. Elsewhere it only prints the installed versions (install with
# `pip install -e .` from a clone).

# %%
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

REPO = "https://github.com/rcot-jax/rcot_jax"
JAX_MIN = "0.10.2"    # the version CI tests
INSTALL = os.environ.get("RCOT_NOTEBOOK_INSTALL", f"rcot_jax @ git+{REPO}")   # colab_check.sh: the local clone


def installed(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def release(version):
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def loaded_distributions():
    """{distribution: version} of the packages this kernel has imported (numpy, in every Colab session); namespace
    packages that several distributions share (`google`) are left out."""
    owners = {name: set(dists) for name, dists in importlib.metadata.packages_distributions().items()}
    top_level = {name.partition(".")[0] for name in list(sys.modules)}
    return {dist: installed(dist) for name in top_level if len(owners.get(name, ())) == 1 for dist in owners[name]}


class RestartNeeded(Exception):
    """Packages this kernel had already imported were changed on disk: only a new session loads them."""


def stop_for_restart(changed):
    message = (f"Installed over packages this session had already loaded ({', '.join(changed)}): restart it "
               "(Runtime > Restart session) and run all again.")
    shell = globals().get("get_ipython", lambda: None)()
    if shell is not None:     # one line, no traceback; the cell still fails, so "Run all" stops here
        shell.set_custom_exc((RestartNeeded,), lambda *exc, **kwargs: print(exc[2], file=sys.stderr))
    raise RestartNeeded(message)


if "google.colab" in sys.modules:
    before = loaded_distributions()
    specs = [INSTALL, f"numpy=={installed('numpy')}"]
    jax_version = installed("jax")
    if jax_version is None or release(jax_version) < release(JAX_MIN):
        if shutil.which("nvidia-smi"):
            specs.append(f"jax[cuda12]>={JAX_MIN}")
        elif os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0"):
            specs.append(f"jax[tpu]>={JAX_MIN}")
        else:
            specs.append(f"jax>={JAX_MIN}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *specs], check=True)
    changed = [f"{dist} {version} -> {installed(dist)}" for dist, version in sorted(before.items())
               if installed(dist) != version]
    if changed:
        stop_for_restart(changed)
print({dist: installed(dist) for dist in ("rcot_jax", "jax", "jaxlib", "flax", "optax", "grain", "numpy")})

# %% [markdown]
# `RCOT_NOTEBOOK_SMOKE=1` (set by the test that runs this notebook in CI) shrinks every run to a few steps of
# the `tiny` config. `import rcot_jax` comes before JAX starts: it sets XLA:CPU flags the package measured.

# %%
import tempfile
import time

import rcot_jax  # noqa: F401  (before JAX's backend starts)
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, clear_output, display

from rcot_jax import evaluate, ids, losses, models, parallel
from rcot_jax.state import init_state, seed_keys
from rcot_jax.configs import denoise
from rcot_jax.data import degradations, pipeline, sources

SMOKE = os.environ.get("RCOT_NOTEBOOK_SMOKE") == "1"
WORKDIR = tempfile.mkdtemp(prefix="rcot_notebook_") if SMOKE else os.path.abspath("runs/notebook")
plt.rcParams.update({"figure.dpi": 80, "font.size": 8})
print("JAX", jax.__version__, jax.devices())
print("smoke" if SMOKE else "full", "mode; runs in", WORKDIR)


def show(images, titles, width=1.8):
    """One row of images (HWC in [0, 1], or 2-D arrays shown with a colour map)."""
    fig, axes = plt.subplots(1, len(images), figsize=(width * len(images), width + 0.3))
    for ax, img, title in zip(np.atleast_1d(axes), images, titles):
        img = np.asarray(img)
        ax.imshow(np.clip(img, 0, 1) if img.ndim == 3 else img, cmap=None if img.ndim == 3 else "magma")
        ax.set_title(title)
        ax.axis("off")
    plt.tight_layout()
    plt.show()


# %% [markdown]
# ## 1. The cost, as pure functions (CPU: 5 s)
#
# A held-out embedded photograph $y$, degraded by two of the package's seeded degradations
# (`rcot_jax.data.degradations`): Gaussian noise ($\sigma = 25$, on the 0–255 scale) and synthetic rain. The
# residual $r = x - y$ is what an ideal map removes.

# %%
clean = sources.EmbeddedSource("heldout")[0]["target"][:256, 128:384] / np.float32(255)   # astronaut, 256 x 256
names = ("noise25", "rain")
degraded = {n: degradations.degrade(n, clean, np.random.default_rng(0)) for n in names}
residual = {n: degraded[n] - clean for n in names}
show([clean, degraded["noise25"], 0.5 + residual["noise25"], degraded["rain"], 0.5 + residual["rain"]],
     ["clean y", "noise σ=25", "its residual + 0.5", "rain", "its residual + 0.5"])

# %% [markdown]
# The Fourier term $\|\mathcal{F} r\|_p = (\mathrm{mean}\,|\mathcal{F} r|^p)^{1/p}$ (`losses.fourier_residual_cost`):
# noise has a flat, dense residual spectrum, rain a sparse one concentrated along the direction across the
# streaks. So $p = 2$ for Gaussian noise and $p = 1$ (which favours sparse spectra) otherwise; the degradation
# id decides (`ids.fourier_exponent`). The official trainer computes something else
# (`variant='official'`: $\mathrm{mean}|\mathcal{F} r|^2 / 2$ for $p = 2$, a precedence bug, summed over
# the batch); `loss.fourier_variant` selects it.

# %%
spectra = [np.fft.fftshift(np.log1p(np.abs(np.fft.fft2(residual[n], axes=(0, 1))).mean(-1))) for n in names]
show(spectra, [f"log|F r|, {n}" for n in names], width=2.2)

table = ["| residual | p by id | paper, p=1 | paper, p=2 | official (p by id) |", "|---|---|---|---|---|"]
for n in names:
    r = jnp.asarray(residual[n])[None]
    p_id = ids.fourier_exponent(jnp.asarray([ids.degradation_id(n)]))
    cost = {p: float(losses.fourier_residual_cost(r, jnp.asarray([p]))) for p in (1, 2)}
    official = float(losses.fourier_residual_cost(r, p_id, variant="official"))
    table.append(f"| {n} | {int(p_id[0])} | {cost[1]:.2f} | {cost[2]:.2f} | {official:.2f} |")
display(Markdown("\n".join(table)))

# %% [markdown]
# The map is trained through the gradient of the cost with respect to its output $T(x)$. At $T(x) = y$ the
# Fourier term still pulls $T(x)$ towards $x$ (the structure of the input), along the residual: for $p = 2$
# exactly along $r$ (Parseval), for $p = 1$ along its phase-only, whitened version, which weights the streaks'
# edges. The critic's term pulls the other way, towards clean images. (Each gradient is scaled to its 99th
# percentile.)

# %%
x, y = jnp.asarray(degraded["rain"])[None], jnp.asarray(clean)[None]


def fourier_term_of_output(restored, p):
    return losses.fourier_residual_cost(x - restored, jnp.asarray([p]))


grads = {p: np.asarray(jax.grad(fourier_term_of_output)(y, p)[0]) for p in (1, 2)}
show([0.5 + residual["rain"]] + [0.5 - 0.5 * g / np.percentile(np.abs(g), 99) for g in grads.values()],
     ["rain residual + 0.5"] + [f"-gradient, p={p}" for p in grads], width=2.2)


# %% [markdown]
# ## 2. The two-pass map (CPU: 24 s)
#
# $T$ runs its backbone twice: the first pass restores $x$ to $\hat y_1$; the residual $x - \hat y_1$ is
# encoded and added (times `model.cond_scale`) to the image features of a second pass through the same
# decoder. `models.build_models(config)` makes $T$ and $F$ from a config; here the `quick` denoising config
# (a small MPRNet map; in smoke mode `tiny`, with the same backbone), untrained.

# %%
def base_config():
    """configs/denoise.py:quick (noise sigma 25); smoke: :tiny with quick's MPRNet map (it compiles faster)."""
    if not SMOKE:
        return denoise.get_config("quick")
    c = denoise.get_config("tiny")
    c.model.backbone = "mprnet"
    return c


config = base_config()
t_model, f_model = models.build_models(config)


def fresh_run(config):
    """(step-0 state, step key) of a run of `config.seed`, as `python -m rcot_jax.main` starts it."""
    init_key, step_key = seed_keys(config.seed)
    return init_state(config, init_key), step_key


state, _ = fresh_run(config)
eval_set = pipeline.EvalSet(config)    # the fixed held-out crops
item = eval_set[0]
two_pass = jax.jit(lambda t_params, x: t_model.apply(t_params, x, return_first_pass=True))


def show_two_pass(t_params, title):
    restored, first = two_pass(t_params, item["degraded"][None])
    show([item["degraded"], first[0], 0.5 + item["degraded"] - first[0], restored[0], item["target"]],
         ["degraded x", "first pass", "x - first + 0.5", "second pass T(x)", "target"])
    print(title)


show_two_pass(state.t_params, "untrained")

# %% [markdown]
# ## 3. A short training run (CPU: 5 min)
#
# The library's own pieces, as `python -m rcot_jax.main` uses them: the grain pipeline
# (`pipeline.train_dataset`, NumPy batches of random crops from the embedded training photographs, degraded on
# the fly), the compiled data-parallel step (`parallel.compile_train_step` over all devices: one critic update,
# then one update of $T$) and the held-out evaluation (`evaluate.make_evaluator`, full-size crops). The curve
# is updated at each evaluation; the dashed line is the PSNR of the noisy inputs.

# %%
if SMOKE:
    config.num_train_steps, config.eval_every_steps = 4, 2
else:
    config.num_train_steps, config.eval_every_steps = 600, 100
mesh = parallel.make_mesh()
train_step = parallel.compile_train_step(config, mesh)
evaluator = evaluate.make_evaluator(config, mesh)
state, step_key = fresh_run(config)
data = iter(pipeline.train_dataset(config))

result, _ = evaluate.evaluate(evaluator, state.t_params, eval_set)
curve = [(0, result["psnr"])]
start = time.time()
for step in range(1, config.num_train_steps + 1):
    batch = next(data)
    state, metrics = train_step(state, {k: batch[k] for k in ("degraded", "target", "paired", "de_id")}, step_key)
    if step % config.eval_every_steps == 0 or step == config.num_train_steps:
        result, rows = evaluate.evaluate(evaluator, state.t_params, eval_set, rows=config.num_sample_images)
        curve.append((step, result["psnr"]))
        clear_output(wait=True)
        fig, ax = plt.subplots(figsize=(4, 2.5))
        ax.plot(*zip(*curve), "o-", label="restored")
        ax.axhline(result["input_psnr"], ls="--", c="gray", label="noisy input")
        ax.set(xlabel="step", ylabel="held-out PSNR (dB)", title=f"{time.time() - start:.0f} s")
        ax.legend()
        plt.show()
        print(f"step {step}: held-out PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} "
              f"(input {result['input_psnr']:.2f} dB); train transport loss {float(metrics['transport_loss']):.4f}")

# %% [markdown]
# The held-out samples after training: degraded | first pass | restored | target (`evaluate.sample_grid`).

# %%
grid = evaluate.sample_grid(rows, config.data.eval_size)
plt.figure(figsize=(6, 6 * grid.shape[0] / grid.shape[1]))
plt.imshow(grid)
plt.axis("off")
plt.show()
show_two_pass(state.t_params, f"after {config.num_train_steps} steps")

# %% [markdown]
# ## 4. Ablations (CPU: 28 min)
#
# `rcot_jax.ablate` trains variants of one config on the same data, seeds and budget: a `Variant` is a name and
# dotted config overrides. The switches: `model.two_pass` (single-pass backbone), `loss.fourier_variant`
# (`'off'`: no Fourier term), `loss.fourier_p` (0: by degradation; 1 or 2 forces it), `critic.enabled` (False:
# no critic, a pure cost + L1 map), `model.cond_scale`, `data.paired_fraction`. On a GPU or TPU, variants that
# differ only in a scalar such as `model.cond_scale`, and the seeds, train together in one compiled step
# (`jax.vmap`); on a CPU, where XLA's grouped convolutions are slow, one run at a time (`vmap=False`).
# `run_grid` writes `results.md`, `results.json` and `psnr_curves.png` to its workdir. Full mode trains 14 runs
# of 300 steps: minutes on a GPU, longer on a CPU.
#
# With every sample paired, the paired L1 ($\lambda_{pair} = 10^4$) dominates the map's loss (at
# initialisation, on the `tiny` config: 1,487 of 1,492; the cost 5.4, the adversarial term under 0.1), so in a
# short run the critic and the Fourier term change little; with `data.paired_fraction=0` (unpaired) the paired
# term is gone and they drive the training.

# %%
from rcot_jax import ablate

variants = [
    ablate.Variant("rcot", {}),                                  # two passes, critic, p by id (2: noise)
    ablate.Variant("single-pass", {"model.two_pass": False}),
    ablate.Variant("fourier off", {"loss.fourier_variant": "off"}),
    ablate.Variant("fourier p=1", {"loss.fourier_p": 1}),
    ablate.Variant("no critic", {"critic.enabled": False}),
    ablate.Variant("cond_scale 0", {"model.cond_scale": 0.0}),  # vmap: in the same step as rcot
    ablate.Variant("cond_scale 1", {"model.cond_scale": 1.0}),
]
ablation_config = base_config()
if SMOKE:
    ablation_config.num_train_steps, ablation_config.eval_every_steps = 2, 1
    variants, seeds = [variants[0], variants[5]], (0,)    # one compiled step for both
else:
    ablation_config.num_train_steps, ablation_config.eval_every_steps = 300, 100
    seeds = (0, 1)


def on_eval(variant, seed, step, result):
    print(f"{variant:>12}, seed {seed}, step {step:4d}: held-out PSNR {result['psnr']:.2f} dB, "
          f"SSIM {result['ssim']:.4f}")


results = ablate.run_grid(ablation_config, variants, os.path.join(WORKDIR, "ablation"), seeds=seeds,
                          on_eval=on_eval, vmap=jax.default_backend() != "cpu")
display(Markdown(ablate.results_table(results)))
fig, ax = plt.subplots(figsize=(5, 3))
ablate.plot_curves(results, ax=ax)
plt.show()

# %% [markdown]
# The full grid of the paper's ablations (two-pass vs single-pass, the Fourier term off / p=1 / p=2 / the
# official variant, the conditioning scale, paired vs unpaired data, the critic), over several seeds:
#
# ```bash
# python -m rcot_jax.ablate --config=configs/denoise.py:quick --grid=paper --workdir=DIR
# ```
#
# It writes the same table and curves to `DIR`. The [ablation docs](https://github.com/rcot-jax/rcot_jax/blob/main/docs/ablations.md)
# report its results.
