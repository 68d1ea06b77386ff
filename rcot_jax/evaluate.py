"""Evaluation on the held-out set: every item at its own size, in fixed-size batches; and `--mode=eval`.

Items are grouped by their size rounded up to `data.eval_bucket` (one compiled shape per group), reflect-padded to
it and cropped back (`rcot_jax.inference`), `eval_batch_size` at a time rounded up to a multiple of the devices. On
several processes each process decodes only its share of each batch and scores it; the scores are gathered, so
the result equals one process's. Memory holds one batch, whatever the size of the split.
"""
import functools
import json
import os
import shutil

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from PIL import Image

from rcot_jax import inference, models, parallel, writers
from rcot_jax import metrics as metrics_lib
from rcot_jax import workdir as workdir_lib
from rcot_jax.checkpointing import Checkpointer, abstract_like, restore_params
from rcot_jax.data import pipeline
from rcot_jax.state import create_train_state, program_config

SCORES = ("psnr", "ssim", "input_psnr", "input_ssim")


def plan(shapes, bucket, chunk):
    """[(padded shape, [item index, or -1 for padding] * chunk)]: the global batches, items grouped by shape."""
    groups = {}
    for i, hw in enumerate(shapes):
        groups.setdefault(inference.padded_shape(hw, bucket), []).append(i)
    return [(shape, idx[s:s + chunk] + [-1] * max(0, s + chunk - len(idx)))
            for shape, idx in sorted(groups.items()) for s in range(0, len(idx), chunk)]


@functools.lru_cache(maxsize=8)
def _jit_apply(config, mesh):
    """T's (restored, first pass), jitted once per process for each program config and mesh."""
    t_model, _ = models.build_models(config)
    return jax.jit(lambda params, x: t_model.apply(params, x, return_first_pass=True),
                   out_shardings=parallel.replicated(mesh))


def make_evaluator(config, mesh):
    """(t_params, eval set, rows, on_item) -> (scores {name: float64 [N]}, degradation names [N], sample rows):
    every item restored and scored with `config.eval.metric_profile`; `rows` items (spread over those process 0
    scores) kept as (degraded, first pass, restored, target) for the sample grid; `on_item(index, restored)` is
    called for each item this process scores."""
    chunk = parallel.round_up(config.data.eval_batch_size, mesh)
    sharding = parallel.batch_sharding(mesh)
    apply = _jit_apply(program_config(config), mesh)
    pi, pc = jax.process_index(), jax.process_count()
    share = chunk // pc
    profile, border = config.eval.metric_profile, config.eval.crop_border
    if profile not in metrics_lib.PROFILES:
        raise ValueError(f"config.eval.metric_profile={profile!r}, expected one of {metrics_lib.PROFILES}")

    def score(x, y):
        return (metrics_lib.psnr(x, y, profile, crop_border=border),
                metrics_lib.ssim(x, y, profile, crop_border=border))

    def run(t_params, eval_set, rows=0, on_item=None):
        batches = plan(eval_set.shapes, config.data.eval_bucket, chunk)
        first_share = [i for _, idx in batches for i in idx[:share] if i >= 0]     # what process 0 scores
        keep = {first_share[k] for k in np.linspace(0, len(first_share) - 1, rows).round().astype(int)} \
            if rows and first_share else set()
        scores = np.full((len(SCORES), len(eval_set)), np.nan)
        kept = {}
        for shape, idx in batches:
            mine = idx[pi * share:(pi + 1) * share]
            items = {i: eval_set[i] for i in mine if i >= 0}
            x = np.stack([inference.pad_to(items[i]["degraded"], shape) if i >= 0 else
                          np.zeros((*shape, 3), np.float32) for i in mine])
            restored, first = (np.asarray(a) for a in apply(t_params, jax.make_array_from_process_local_data(
                sharding, x)))
            for j, i in enumerate(mine):
                if i < 0:
                    continue
                item, g = items[i], pi * share + j
                hw = item["target"].shape[:2]
                out = np.clip(inference.crop_to(restored[g], hw), 0, 1)
                scores[:, i] = [*score(out, item["target"]), *score(item["degraded"], item["target"])]
                if on_item:
                    on_item(i, out)
                if i in keep:
                    kept[i] = (item["degraded"], np.clip(inference.crop_to(first[g], hw), 0, 1), out, item["target"])
        if pc > 1:
            gathered = multihost_utils.process_allgather(scores)
            scores = np.fmax.reduce(gathered, axis=0)     # each item was scored by one process, NaN elsewhere
        return dict(zip(SCORES, scores)), eval_set.degradations, [kept[i] for i in sorted(kept)]

    return run


def summarize(scores, names):
    """Means of every score; per degradation too when the set mixes several."""
    result = {k: float(np.mean(v)) for k, v in scores.items()}
    names = np.asarray(names)
    if len(set(names)) > 1:
        for name in dict.fromkeys(names):
            result.update({f"{k}/{name}": float(np.mean(v[names == name])) for k, v in scores.items()})
    return result


def evaluate(evaluator, t_params, eval_set, rows=0):
    """(result dict, sample rows): PSNR/SSIM of the restored held-out items and of their degraded inputs."""
    scores, names, kept = evaluator(t_params, eval_set, rows)
    return summarize(scores, names), kept


def write_report(directory, eval_set, scores, summary):
    """`per_image.csv` (one row per item) and `summary.json` into `directory`."""
    import csv
    with open(os.path.join(directory, "per_image.csv"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["name", "height", "width", "degradation", *SCORES])
        for i, name in enumerate(eval_set.names):
            out.writerow([name, *eval_set.shapes[i], eval_set.degradations[i],
                          *(f"{scores[k][i]:.6f}" for k in SCORES)])
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


def sample_grid(rows, size):
    """uint8 image: one row per kept item, columns degraded | first pass | restored | target, each a centre crop of
    at most size x size (the smallest kept item decides)."""
    gap = 2
    s = min([size] + [min(r[0].shape[:2]) for r in rows])
    grid = np.ones((len(rows) * (s + gap) - gap, 4 * (s + gap) - gap, 3), np.float32)
    for r, cells in enumerate(rows):
        for c, img in enumerate(cells):
            top, left = (img.shape[0] - s) // 2, (img.shape[1] - s) // 2
            grid[r * (s + gap):r * (s + gap) + s, c * (s + gap):c * (s + gap) + s] = img[top:top + s, left:left + s]
    return metrics_lib.to_uint8(grid)


def eval_line(step, profile, result, **extra):
    """One line of eval.jsonl: the step, the metric profile and the scores (4 decimals)."""
    return {"step": step, "profile": profile, **{k: round(v, 4) for k, v in result.items()}, **extra}


def eval_scalars(profile, result):
    """TensorBoard's eval scalars, tagged with the metric profile: eval/<profile>/psnr, ..."""
    return {f"eval/{profile}/{k}": v for k, v in result.items()}


def _read_map(config, directory, mesh):
    """(step, T's parameters) of the checkpoint `--mode=eval` evaluates: `config.eval.step`, else the newest one
    that reads (an unreadable newer one is reported, as training does, and left in place)."""
    steps = []
    if os.path.isdir(directory):
        ckpt = Checkpointer(directory, keep=None, create=False)
        try:
            steps = sorted(ckpt.manager.all_steps(), reverse=True)
        finally:
            ckpt.close()
    if not steps:
        raise FileNotFoundError(f"no checkpoint to evaluate in {directory}: train first (the same command without "
                                "--mode=eval)")
    if config.eval.step:
        if config.eval.step not in steps:
            raise FileNotFoundError(f"config.eval.step={config.eval.step}: no checkpoint {config.eval.step} in "
                                    f"{directory} (it has {sorted(steps)})")
        steps = [config.eval.step]
    abstract = abstract_like(jax.eval_shape(lambda: create_train_state(config, jax.random.key(0)).t_params),
                             parallel.replicated(mesh))
    errors = []
    for step in steps:
        try:
            return step, restore_params(os.path.join(directory, str(step)), {"t_params": abstract})["t_params"]
        except Exception as e:     # tensorstore raises a bare Exception for unreadable data
            logging.warning("checkpoint %s/%d could not be read: %s", directory, step, str(e).splitlines()[0][:300])
            errors.append(e)
    raise ValueError(f"checkpoint {directory}/{steps[0]}: T's parameters do not read (model keys changed, or damaged "
                     f"files): {str(errors[0]).splitlines()[0][:300]}") from errors[0]


def evaluate_checkpoint(config, workdir):
    """The `--mode=eval` command: restores the held-out set with the latest checkpoint (or `config.eval.step`),
    appends the result to eval.jsonl and TensorBoard, and writes `eval/<split>_<step>_<profile>/`: per_image.csv,
    summary.json and (`config.eval.save_images`) the restored images as PNG. Only T's parameters are read from
    the checkpoint (no optimiser or critic state, no training data). The folder appears complete or not at all
    (written as `<split>_<step>_<profile>.partial`, then renamed); each metric profile keeps its own."""
    workdir = os.path.abspath(workdir)
    mesh = parallel.make_mesh()
    step, t_params = _read_map(config, os.path.join(workdir, workdir_lib.CHECKPOINTS), mesh)
    eval_data = pipeline.EvalSet(config)
    is_main = jax.process_index() == 0
    profile = config.eval.metric_profile
    final = workdir_lib.eval_dir(workdir, eval_data.split, step, profile)
    partial = final + ".partial"
    if is_main:
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(os.path.join(partial, "images"))
    multihost_utils.sync_global_devices("eval folder")

    def save(i, restored):
        if config.eval.save_images:
            path = os.path.join(partial, "images", eval_data.names[i] + ".png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(metrics_lib.to_uint8(restored)).save(path)

    scores, names, _ = make_evaluator(config, mesh)(t_params, eval_data, on_item=save)
    result = summarize(scores, names)
    logging.info("Eval of step %d (%s profile, %d images): %s", step, profile, len(eval_data), json.dumps(result))
    multihost_utils.sync_global_devices("eval images")
    if is_main:
        summary = {"step": step, "split": eval_data.split, "profile": profile,
                   "crop_border": config.eval.crop_border, "images": len(eval_data),
                   "config_hash": workdir_lib.config_hash(config),
                   "means": {k: result[k] for k in SCORES},
                   "per_degradation": {n: {k: result.get(f"{k}/{n}", result[k]) for k in SCORES}
                                       for n in dict.fromkeys(names)}}
        write_report(partial, eval_data, scores, summary)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        with open(os.path.join(workdir, workdir_lib.EVAL_LOG), "a") as f:
            f.write(json.dumps(eval_line(step, profile, result, mode="eval")) + "\n")
        writer = writers.summary_writer(workdir)
        writer.write_scalars(step, eval_scalars(profile, result))
        writer.close()
        logging.info("Wrote %s", final)
    return result
