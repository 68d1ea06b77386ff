"""Functional ablations: train every variant of a grid on the same data, seeds and budget, and compare them.

  python -m rcot_jax.ablate --config=configs/denoise.py:quick --grid=paper --workdir=DIR [--seeds=0,1]
  python -m rcot_jax.ablate --config=configs/denoise.py:quick --grid=sweep --workdir=DIR \
      --config.sweep.axis=model.cond_scale --config.sweep.axis_values='(0.0,0.4,0.8,1.0)'

Writes `DIR/results.md` (variant, final held-out PSNR/SSIM mean ± std over seeds, steps, wall time),
`DIR/results.json` (the same with every evaluation) and `DIR/psnr_curves.png` (held-out PSNR over steps).

A variant is a name and config overrides (dotted keys). Variants that differ only in `steps.SWEEPABLE` scalars
(cond_scale, the loss weights, learning rates) and their seeds train together: one compiled step, `jax.vmap`ed
over a leading variant axis of the state, the batch, the key and those scalars (on one device). Every group of
variants is recorded in `DIR/groups/` when it finishes, so a stopped ablation resumes at the next group.
Variants whose config is the same as an earlier one's (e.g. `loss.fourier_p=2` for denoising, which is what the
degradation gives) are not retrained: they are reported with `same as`.
"""
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from rcot_jax import app as rcot_app
from rcot_jax import parallel, paths, steps
from rcot_jax import workdir as workdir_lib
from rcot_jax.data import pipeline
from rcot_jax.evaluate import evaluate, make_evaluator
from rcot_jax.ids import GAUSSIAN_NOISE, degradation_id
from rcot_jax.state import create_train_state, jit_init, seed_keys
from rcot_jax.train import BATCH_KEYS


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict = dataclasses.field(default_factory=dict)    # dotted config key -> value


GRIDS = {
    # The paper's ablation axes, each changed alone from the config's own settings ("rcot").
    "paper": (
        Variant("rcot"),
        Variant("single-pass", {"model.two_pass": False}),
        Variant("fourier-off", {"loss.fourier_variant": "off"}),
        Variant("fourier-p1", {"loss.fourier_p": 1}),
        Variant("fourier-p2", {"loss.fourier_p": 2}),
        Variant("fourier-official", {"loss.fourier_variant": "official"}),
        Variant("cond-0", {"model.cond_scale": 0.0}),
        Variant("cond-1.0", {"model.cond_scale": 1.0}),
        Variant("paired-0.5", {"data.paired_fraction": 0.5}),
        Variant("unpaired", {"data.paired_fraction": 0.0}),
        Variant("critic-off", {"critic.enabled": False}),
    ),
    "two-pass": (Variant("rcot"), Variant("single-pass", {"model.two_pass": False})),
}


def sweep_grid(config):
    """(variants, seeds or None) that `config.sweep` names: one variant per value of `sweep.axis` (a SWEEPABLE
    key), each with the seeds `sweep.seeds`; or, for axis 'seed', the config itself with those seeds."""
    axis, values = config.sweep.axis, tuple(config.sweep.axis_values)
    if axis not in ("seed",) + steps.SWEEPABLE:
        raise ValueError(f"config.sweep.axis={axis!r}, expected 'seed' or one of {steps.SWEEPABLE}")
    if not values:
        raise ValueError(f"config.sweep.axis_values is empty: name the values of {axis}")
    if axis == "seed":
        return (Variant("rcot"),), tuple(int(v) for v in values)
    return tuple(Variant(f"{axis}={v}", {axis: v}) for v in values), tuple(config.sweep.seeds) or None


def _set(config, key, value):
    *path, leaf = key.split(".")
    node = workdir_lib.get_key(config, ".".join(path)) if path else config
    if leaf not in node:
        raise KeyError(key)
    node[leaf] = value


def variant_config(config, variant):
    """`config` with the variant's overrides; an unknown key or a value of the wrong type names the variant."""
    config = config.copy_and_resolve_references()
    for key, value in variant.overrides.items():
        try:
            _set(config, key, value)
        except (KeyError, TypeError) as e:
            raise ValueError(f"variant {variant.name!r}: cannot set config key {key!r} to {value!r} ({e})") from None
    return config


def _normalized(config):
    """The config with choices that change nothing put back to their defaults, for finding duplicate variants."""
    config = config.copy_and_resolve_references()
    ids = {degradation_id(n) for n in pipeline.degradation_names(config.data)}
    natural = 2 if ids <= set(GAUSSIAN_NOISE) else 1 if not ids & set(GAUSSIAN_NOISE) else None
    if config.loss.fourier_p == natural or config.loss.fourier_variant == "off":
        config.loss.fourier_p = 0
    if not config.model.two_pass:
        config.model.cond_scale = 0.8
    config.sweep.axis, config.sweep.axis_values, config.sweep.seeds = "", (), ()
    return config


def _group_key(config):
    """Variants with equal keys differ at most in SWEEPABLE scalars and the seed: they can share a vmapped step."""
    config = _normalized(config)
    for key in steps.SWEEPABLE + ("seed",):
        _set(config, key, 0 if key == "seed" else 0.0)
    return config.to_json(sort_keys=True)


def _hash(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Batches:
    """Stacked batches [K, B, ...] for K > 1 runs, each reading the stream of its own seed (shared between runs
    of the same seed, as a single run of that seed would read it); for one run, its batches [B, ...]."""

    def __init__(self, run_configs):
        self.stack = len(run_configs) > 1
        seeds = [c.seed for c in run_configs]
        self.unique = sorted(set(seeds))
        self.index = [self.unique.index(s) for s in seeds]
        self.iters = [iter(pipeline.train_dataset(run_configs[seeds.index(s)])) for s in self.unique]

    def __next__(self):
        batches = [next(it) for it in self.iters]
        if not self.stack:
            return {k: np.asarray(batches[0][k]) for k in BATCH_KEYS}
        return {k: np.stack([np.asarray(batches[i][k]) for i in self.index]) for k in BATCH_KEYS}


def start_group(cfgs, compiled):
    """(step-0 states, step keys, compiled step, take) of runs whose configs differ only in SWEEPABLE scalars and
    seeds: one run's own step, or one vmapped step of all (stacked states). `take(tree, k)` is run k's part of
    a tree. Each run's keys are its seed's (`state.seed_keys`), as `main` derives them. `compiled` (a dict)
    keeps the compiled functions for the next groups."""
    base = cfgs[0]
    init_keys, step_keys = (jnp.stack(k) for k in zip(*(seed_keys(c.seed) for c in cfgs)))
    if len(cfgs) == 1:    # the plain step, with the config's own constants: faster than a vmap of one
        step_key = ("step", variant_config(base, Variant("", {"seed": 0})).to_json(sort_keys=True))
        take = (lambda tree, k: tree)
        if step_key not in compiled:
            compiled[step_key] = (jit_init(lambda k: create_train_state(base, k)),
                                  jax.jit(lambda s, b, r, v: steps.train_step(s, b, r, base), donate_argnums=0))
        init_keys, step_keys = init_keys[0], step_keys[0]
    else:
        step_key = ("vmapped step", _group_key(base), len(cfgs))
        take = (lambda tree, k: jax.tree.map(lambda a: a[k], tree))
        if step_key not in compiled:
            compiled[step_key] = (jit_init(jax.vmap(lambda k: create_train_state(base, k))),
                                  jax.jit(steps.sweep_train_step(base), donate_argnums=0))
    init, step = compiled[step_key]
    return init(init_keys), step_keys, step, take


def train_group(runs, eval_set, mesh, on_eval=None, compiled=None):
    """Trains K runs [(variant name, config)] that differ only in SWEEPABLE scalars and seeds, in one vmapped
    step. Returns one record per run: curve [[step, psnr, ssim]], final psnr/ssim, diverged_at, wall_s.
    `compiled`: a dict that keeps compiled steps and evaluators for the next groups."""
    compiled = {} if compiled is None else compiled
    cfgs = [c for _, c in runs]
    base = cfgs[0]
    values = jax.tree.map(lambda *v: np.asarray(v, np.float32), *[steps.config_scalars(c) for c in cfgs])
    t0 = time.time()
    states, rngs, step, take = start_group(cfgs, compiled)
    batches = _Batches(cfgs)
    records = [{"curve": [], "diverged_at": None} for _ in runs]
    n = base.num_train_steps
    for i in range(1, n + 1):
        states, metrics = step(states, next(batches), rngs, values)
        if i % base.eval_every_steps and i != n:
            continue
        losses = np.atleast_1d(np.asarray(metrics["transport_loss"]) + np.asarray(metrics["critic_loss"]))
        for k, ((name, cfg), rec) in enumerate(zip(runs, records)):
            if rec["diverged_at"] is not None:
                continue
            if not np.isfinite(losses[k]):
                rec["diverged_at"] = i
                logging.warning("%s (seed %d) diverged by step %d", name, cfg.seed, i)
                continue
            model_key = ("evaluator", cfg.model.to_json(sort_keys=True))
            if model_key not in compiled:
                compiled[model_key] = make_evaluator(cfg, mesh)
            result, _ = evaluate(compiled[model_key], take(states.t_params, k), eval_set)
            rec["curve"].append([i, result["psnr"], result["ssim"]])
            rec["input"] = [result["input_psnr"], result["input_ssim"]]
            logging.info("%s (seed %d) step %d: PSNR %.2f dB, SSIM %.4f", name, cfg.seed, i, result["psnr"],
                         result["ssim"])
            if on_eval:
                on_eval(name, cfg.seed, i, result)
    wall = time.time() - t0
    for rec in records:
        psnr, ssim = rec["curve"][-1][1:] if rec["diverged_at"] is None else (float("nan"),) * 2
        rec.update(psnr=psnr, ssim=ssim, wall_s=wall, runs_in_step=len(runs))
    return records


def _summary(runs):
    psnr = np.asarray([r["psnr"] for r in runs])
    ssim = np.asarray([r["ssim"] for r in runs])
    std = (lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0)
    return {"psnr_mean": float(np.mean(psnr)), "psnr_std": std(psnr), "ssim_mean": float(np.mean(ssim)),
            "ssim_std": std(ssim), "wall_s": float(np.sum([r["wall_s"] / r["runs_in_step"] for r in runs]))}


def run_grid(config, variants, workdir, seeds=(0, 1), on_eval=None, command="", vmap=True):
    """Trains every variant x seed for `config.num_train_steps`, evaluating the held-out set every
    `config.eval_every_steps`; writes workdir/results.md, results.json, psnr_curves.png and returns the
    results.json dict. `on_eval(variant name, seed, step, result)` is called after each evaluation.
    `vmap=False` trains one run at a time (faster on a CPU, where XLA's grouped convolutions are slow)."""
    if len({v.name for v in variants}) != len(variants):
        raise ValueError(f"variant names repeat: {[v.name for v in variants]}")
    if not seeds:
        raise ValueError("run_grid: give at least one seed")
    workdir = os.path.abspath(workdir)
    os.makedirs(os.path.join(workdir, "groups"), exist_ok=True)
    cfgs = {v.name: variant_config(config, v) for v in variants}
    same_as, first_of = {}, {}
    for v in variants:
        key = _normalized(cfgs[v.name]).to_json(sort_keys=True)
        if key in first_of:
            same_as[v.name] = first_of[key]
        else:
            first_of[key] = v.name
    groups = {}
    for v in variants:
        if v.name not in same_as:
            groups.setdefault(_group_key(cfgs[v.name]), []).append(v.name)
    runs_of = [[(name, variant_config(cfgs[name], Variant("seed", {"seed": s}))) for name in names for s in seeds]
               for names in groups.values()]
    if not vmap:
        runs_of = [[run] for group in runs_of for run in group]

    mesh = parallel.make_mesh()
    eval_set = pipeline.EvalSet(config)
    runs, compiled = {}, {}
    with workdir_lib.locked(workdir):
        for group in runs_of:
            described = [f"{name} (seed {c.seed})" for name, c in group]
            path = os.path.join(workdir, "groups", _hash(json.dumps([[n, c.to_json(sort_keys=True)]
                                                                      for n, c in group])) + ".json")
            if os.path.exists(path):
                with open(path) as f:
                    records = json.load(f)
                logging.info("Done before: %s (%s)", ", ".join(described), path)
            else:
                logging.info("Training %s%s", ", ".join(described), " in one vmapped step" * (len(group) > 1))
                records = train_group(group, eval_set, mesh, on_eval, compiled)
                workdir_lib.write_atomic(path, lambda tmp: _write_json(tmp, records))
            for (name, cfg), rec in zip(group, records):
                runs.setdefault(name, {})[cfg.seed] = rec

    rows = []
    for v in variants:
        source = same_as.get(v.name, v.name)
        per_seed = [runs[source][s] for s in seeds]
        rows.append({"name": v.name, "overrides": v.overrides, "same_as": same_as.get(v.name), "seeds": list(seeds),
                     "steps": config.num_train_steps, **_summary(per_seed),
                     "runs_in_step": per_seed[0]["runs_in_step"],
                     "diverged_at": {str(s): r["diverged_at"] for s, r in zip(seeds, per_seed) if r["diverged_at"]},
                     "curves": {str(s): r["curve"] for s, r in zip(seeds, per_seed)}})
    inputs = [r["input"] for per in runs.values() for r in per.values() if "input" in r]
    results = {"command": command, "task": config.data.task, "steps": config.num_train_steps, "seeds": list(seeds),
               "input_psnr": inputs[0][0] if inputs else None, "input_ssim": inputs[0][1] if inputs else None,
               "eval_items": len(eval_set), "variants": rows, "config": json.loads(config.to_json_best_effort())}
    write_results(results, workdir)
    return results


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def _fmt_time(seconds):
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def results_table(results):
    """The markdown table of results.md: one row per variant."""
    lines = ["| variant | change | PSNR (dB) | SSIM | steps | wall time |", "|---|---|---|---|---|---|"]
    for r in results["variants"]:
        change = ", ".join(f"`{k}={v}`" for k, v in r["overrides"].items()) or "(the config)"
        if r["same_as"]:
            change += f" (same as {r['same_as']})"
        if r["diverged_at"]:
            change += f"; diverged (seed: step) {r['diverged_at']}"
        lines.append(f"| {r['name']} | {change} | {r['psnr_mean']:.2f} ± {r['psnr_std']:.2f} | "
                     f"{r['ssim_mean']:.4f} ± {r['ssim_std']:.4f} | {r['steps']} | {_fmt_time(r['wall_s'])} |")
    return "\n".join(lines)


def plot_curves(results, ax=None):
    """Held-out PSNR over steps, one line per variant (mean over seeds, the band spanning the seeds)."""
    from matplotlib.figure import Figure
    if ax is None:
        ax = Figure(figsize=(7, 4.5)).subplots()
    fig = ax.figure
    for r in results["variants"]:
        if r["same_as"]:
            continue
        curves = [np.asarray(c) for c in r["curves"].values() if c]
        n = min(len(c) for c in curves) if curves else 0
        if not n:
            continue
        steps_, psnr = curves[0][:n, 0], np.stack([c[:n, 1] for c in curves])
        line, = ax.plot(steps_, psnr.mean(0), marker="o", markersize=3, label=r["name"])
        ax.fill_between(steps_, psnr.min(0), psnr.max(0), color=line.get_color(), alpha=0.2)
    if results.get("input_psnr") is not None:
        ax.axhline(results["input_psnr"], color="grey", linestyle=":", label="input")
    ax.set_xlabel("train step")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(f"{results['task']}: seeds {results['seeds']}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def write_results(results, workdir):
    """results.json, results.md and psnr_curves.png into `workdir`, each written whole or not at all."""
    header = [f"# Ablation: {results['task']}, {results['steps']} steps, seeds {results['seeds']}", ""]
    if results["command"]:
        header += ["```", results["command"], "```", ""]
    if results["input_psnr"] is not None:
        header += [f"Held-out set: {results['eval_items']} items, degraded input PSNR {results['input_psnr']:.2f} dB, "
                   f"SSIM {results['input_ssim']:.4f}. PSNR/SSIM: final evaluation, mean ± sample std over seeds. "
                   "Wall time: per variant (a vmapped step's time shared by its runs), compilation and "
                   "evaluation included.", ""]
    text = "\n".join(header + [results_table(results), ""])
    workdir_lib.write_atomic(os.path.join(workdir, "results.md"), lambda tmp: pathlib.Path(tmp).write_text(text))
    workdir_lib.write_atomic(os.path.join(workdir, "results.json"), lambda tmp: _write_json(tmp, results))
    fig = plot_curves(results)
    workdir_lib.write_atomic(os.path.join(workdir, "psnr_curves.png"), lambda tmp: fig.savefig(tmp, format="png",
                                                                                              dpi=110))


def _define_flags():
    rcot_app.define_config("Base config (configs/<task>.py[:variant]).")
    flags.DEFINE_string("grid", "paper", f"Variants to train: one of {sorted(GRIDS)}, or 'sweep' (config.sweep).")
    paths.DEFINE_path("workdir", None, "Where results.md, results.json and psnr_curves.png go.")
    flags.DEFINE_list("seeds", ["0", "1"], "Seeds every variant is trained with (--grid=sweep: config.sweep.seeds "
                      "when set).")
    flags.DEFINE_boolean("vmap", True, "Train variants that differ only in scalars and seeds together, in one vmapped "
                         "step; --novmap: one run at a time (faster on a CPU: `benchmark --mode=sweep`).")
    rcot_app.define_jax_flags()    # one process: the variants train on one device
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    f = flags.FLAGS
    config = f.config
    seeds = None
    if f.grid == "sweep":
        variants, seeds = sweep_grid(config)
    elif f.grid in GRIDS:
        variants = GRIDS[f.grid]
    else:
        raise app.UsageError(f"--grid={f.grid!r}: expected one of {sorted(GRIDS)} or 'sweep'")
    seeds = seeds or tuple(int(s) for s in f.seeds)
    command = "python -m rcot_jax.ablate " + " ".join(sys.argv[1:])
    results = run_grid(config, variants, f.workdir, seeds, command=command, vmap=f.vmap)
    print(results_table(results))


if __name__ == "__main__":
    rcot_app.run(main, "rcot_jax.ablate", _define_flags)
