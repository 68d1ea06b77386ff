"""Evaluation on the held-out set: every item at its own size, in fixed-size batches.

Items are grouped by their size rounded up to `data.eval_bucket` (one compiled shape per group), reflect-padded to
it and cropped back (`rcot_jax.inference`), `eval_batch_size` at a time rounded up to a multiple of the devices. On
several processes each process decodes only its share of each batch and scores it; the scores are gathered, so
the result equals one process's. Memory holds one batch, whatever the size of the split.
"""
import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from rcot_jax import inference, models, parallel
from rcot_jax import metrics as metrics_lib

SCORES = ("psnr", "ssim", "input_psnr", "input_ssim")


def plan(shapes, bucket, chunk):
    """[(padded shape, [item index, or -1 for padding] * chunk)]: the global batches, items grouped by shape."""
    groups = {}
    for i, hw in enumerate(shapes):
        groups.setdefault(inference.padded_shape(hw, bucket), []).append(i)
    return [(shape, idx[s:s + chunk] + [-1] * max(0, s + chunk - len(idx)))
            for shape, idx in sorted(groups.items()) for s in range(0, len(idx), chunk)]


def make_evaluator(config, mesh):
    """(t_params, eval set, rows, on_item) -> (scores {name: float64 [N]}, degradation names [N], sample rows):
    every item restored and scored with `config.eval.metric_profile`; `rows` items (spread over those process 0
    scores) kept as (degraded, first pass, restored, target) for the sample grid; `on_item(index, restored)` is
    called for each item this process scores."""
    t_model, _ = models.build_models(config)
    chunk = parallel.round_up(config.data.eval_batch_size, mesh)
    sharding = parallel.batch_sharding(mesh)
    apply = jax.jit(lambda params, x: t_model.apply(params, x, return_first_pass=True),
                    out_shardings=parallel.replicated(mesh))
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
