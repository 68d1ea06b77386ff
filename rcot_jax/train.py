"""The training loop: `train_and_evaluate(config, workdir) -> state`.

Workdir contents:
  config.json        the resolved config of the latest launch
  checkpoints/<step> Orbax checkpoints (train state + data iterator position), the last `keep_checkpoints`
  events.out.tfevents.*   TensorBoard scalars (train metrics, eval PSNR/SSIM, steps/s) and sample images
  samples/step_<step>.png sample grids: degraded | first pass | restored | target, one held-out crop per row
  eval.jsonl         one JSON line per evaluation: step, psnr, ssim, input_psnr, input_ssim (+ per degradation)
Re-running with the same workdir resumes from the latest checkpoint; a finished run is not retrained.
"""
import json
import os
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from rcot_jax import metrics as metrics_lib
from rcot_jax import parallel, steps
from rcot_jax.checkpointing import Checkpointer, abstract_like
from rcot_jax.data import images as images_lib
from rcot_jax.data import pipeline

BATCH_KEYS = ("degraded", "target", "paired", "de_id")   # what the train step reads


def _load_images(data_config):
    """(training images, held-out images): the folders the config names, else the embedded photographs."""
    def load(key, split):
        if not data_config[key]:
            return images_lib.load_embedded(split)
        try:
            return images_lib.load_folder(data_config[key])
        except ValueError as e:
            raise ValueError(f"config.data.{key}: {e}") from e
    return load("train_dir", "train"), load("eval_dir", "heldout")


def _global_batch(local, sharding):
    """This process's NumPy slice -> global arrays split over the mesh (a no-op copy on one process)."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local[k])) for k in BATCH_KEYS}


class _Preemption:
    """Turns SIGTERM into a flag the loop polls; all processes stop at the same step."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def should_stop(self):
        if jax.process_count() == 1:
            return self.requested
        return bool(multihost_utils.process_allgather(np.int32(self.requested)).any())

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def _check_finite(history):
    """history: [(step, {name: value})] fetched from the device. Raises at the first non-finite loss."""
    for step, values in history:
        bad = sorted(k for k, v in values.items() if not np.isfinite(v))
        if bad:
            raise FloatingPointError(
                f"non-finite loss at step {step}: " + ", ".join(f"{k}={values[k]}" for k in bad)
                + "; stopping without saving (the last checkpoint is intact)")


@jax.jit
def _all_finite(tree):
    return jax.tree.reduce(lambda ok, x: ok & jnp.isfinite(x).all(), tree, True)


def make_evaluator(config, mesh):
    """(t_params, degraded [N,S,S,3] NumPy) -> (restored, first pass) NumPy, in chunks over the mesh."""
    t_model, _ = steps.build_models(config)
    n_dev = mesh.devices.size
    chunk = -(-config.data.eval_batch_size // n_dev) * n_dev
    sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))
    apply = jax.jit(lambda params, x: t_model.apply(params, x, return_first_pass=True),
                    out_shardings=NamedSharding(mesh, P()))
    pi, pc = jax.process_index(), jax.process_count()

    def run(t_params, degraded):
        n = len(degraded)
        padded = np.concatenate([degraded, np.repeat(degraded[-1:], -n % chunk, axis=0)])
        outs = []
        for i in range(0, len(padded), chunk):
            local = np.split(padded[i:i + chunk], pc)[pi]
            out = apply(t_params, jax.make_array_from_process_local_data(sharding, local))
            outs.append(jax.tree.map(np.asarray, out))
        restored, first = (np.concatenate(x)[:n] for x in zip(*outs))
        return np.clip(restored, 0, 1), np.clip(first, 0, 1)

    return run


def evaluate(evaluator, t_params, eval_data):
    """PSNR/SSIM of the restored held-out crops and of their degraded inputs; per degradation when mixed."""
    restored, first = evaluator(t_params, eval_data["degraded"])
    scores = {"psnr": metrics_lib.psnr(restored, eval_data["target"]),
              "ssim": metrics_lib.ssim(restored, eval_data["target"]),
              "input_psnr": metrics_lib.psnr(eval_data["degraded"], eval_data["target"]),
              "input_ssim": metrics_lib.ssim(eval_data["degraded"], eval_data["target"])}
    result = {k: float(v.mean()) for k, v in scores.items()}
    names = np.array(eval_data["names"])
    if len(set(names)) > 1:
        for name in dict.fromkeys(names):
            result.update({f"{k}/{name}": float(v[names == name].mean()) for k, v in scores.items()})
    return result, restored, first


def sample_grid(eval_data, restored, first, rows):
    """uint8 image: one row per held-out crop (spread over the set), columns degraded | first pass | restored |
    target."""
    gap = 2
    pick = np.linspace(0, len(restored) - 1, rows).round().astype(int)
    cells = [eval_data["degraded"][pick], first[pick], restored[pick], eval_data["target"][pick]]
    size = cells[0].shape[1]
    grid = np.ones((rows * (size + gap) - gap, 4 * (size + gap) - gap, 3), np.float32)
    for r in range(rows):
        for c, images in enumerate(cells):
            grid[r * (size + gap):r * (size + gap) + size, c * (size + gap):c * (size + gap) + size] = images[r]
    return metrics_lib.to_uint8(grid)


def _write_atomic(path, write):
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


def _truncate_eval_log(path, step):
    """Drops evaluations after `step`: they belong to a run that died before checkpointing them and will
    be recomputed, so the log always matches the checkpoint it resumed from."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    _write_atomic(path, lambda tmp: pathlib.Path(tmp).write_text("".join(lines)))


def _keys(config):
    """(init key, step key), both derived from `config.seed`."""
    return jax.random.split(jax.random.key(config.seed))


def _restore_or_init(config, ckpt, sharding, data_iter):
    latest = ckpt.latest_step()
    if latest is None:    # created in place: on several processes a host value cannot be device_put globally
        return jax.jit(lambda: steps.create_train_state(config, _keys(config)[0]), out_shardings=sharding)()
    abstract = jax.eval_shape(lambda: steps.create_train_state(config, _keys(config)[0]))
    state = ckpt.restore(latest, abstract_like(abstract, sharding), data_iter)
    logging.info("Resumed from %s/%d", ckpt.directory, latest)
    return state


def _setup(config, workdir):
    """Mesh, images, the process's data iterator, the held-out set, the checkpointer and the state."""
    mesh = parallel.make_mesh()
    train_images, eval_images = _load_images(config.data)
    data_iter = iter(pipeline.train_dataset(config, train_images, jax.process_index(), jax.process_count()))
    eval_data = pipeline.eval_set(config, eval_images)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    state = _restore_or_init(config, ckpt, NamedSharding(mesh, P()), data_iter)
    return mesh, data_iter, eval_data, ckpt, state


def evaluate_checkpoint(config, workdir):
    """Evaluates the latest checkpoint in `workdir` on the held-out set (the `--mode=eval` command)."""
    mesh, _, eval_data, ckpt, state = _setup(config, os.path.abspath(workdir))
    latest = ckpt.latest_step()
    ckpt.close()
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory} to evaluate")
    result, _, _ = evaluate(make_evaluator(config, mesh), state.t_params, eval_data)
    logging.info("Eval of step %d: %s", int(state.step), json.dumps(result))
    return result


def train_and_evaluate(config, workdir):
    """Trains (or resumes) to `config.num_train_steps`, evaluating and checkpointing along the way."""
    workdir = os.path.abspath(workdir)
    is_main = jax.process_index() == 0
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    if is_main:
        _write_atomic(os.path.join(workdir, "config.json"),
                      lambda tmp: pathlib.Path(tmp).write_text(config.to_json_best_effort(indent=2)))
    if config.parallel.wrapper == "pmap" and jax.process_count() > 1:
        raise ValueError("config.parallel.wrapper='pmap' runs on one process; use 'shard_map' across processes")
    mesh, data_iter, eval_data, ckpt, state = _setup(config, workdir)
    step_rng = jax.jit(lambda: _keys(config)[1], out_shardings=NamedSharding(mesh, P()))()
    first_step = int(state.step)
    eval_log = os.path.join(workdir, "eval.jsonl")
    if is_main:
        _truncate_eval_log(eval_log, first_step)
    if first_step >= config.num_train_steps:
        logging.info("Training is complete: step %d of %d in %s", first_step, config.num_train_steps, workdir)
        ckpt.close()
        return state

    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer)
    train_step = parallel.compile_train_step(config, mesh)
    evaluator = make_evaluator(config, mesh)
    batch_sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))
    preemption = _Preemption()
    pending = []     # (step, metrics still on the device): fetched only when logged, to keep the device busy
    try:
        for step in range(first_step + 1, config.num_train_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                batch = _global_batch(next(data_iter), batch_sharding)
                state, step_metrics = train_step(state, batch, step_rng)
            pending.append((step, step_metrics))
            report(step, time.time())
            last = step == config.num_train_steps
            stop = preemption.should_stop()
            do_eval = step % config.eval_every_steps == 0 or last
            do_save = step % config.checkpoint_every_steps == 0 or last or stop
            if step % config.log_every_steps == 0 or do_eval or do_save:
                history = [(s, {k: float(v) for k, v in jax.device_get(m).items()}) for s, m in pending]
                pending = []
                _check_finite(history)
                means = {f"train/{k}": np.mean([v[k] for _, v in history]) for k in history[0][1]}
                writer.write_scalars(step, means)
            if do_eval:
                result, restored, first = evaluate(evaluator, state.t_params, eval_data)
                writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
                grid = sample_grid(eval_data, restored, first, min(config.num_sample_images, len(restored)))
                writer.write_images(step, {"samples": grid[None]})
                if is_main:
                    _write_atomic(os.path.join(workdir, "samples", f"step_{step:07d}.png"),
                                  lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
                    with open(eval_log, "a") as f:
                        f.write(json.dumps({"step": step, **{k: round(v, 4) for k, v in result.items()}}) + "\n")
                logging.info("Eval at step %d: PSNR %.2f dB, SSIM %.4f (input: %.2f dB, %.4f)", step,
                             result["psnr"], result["ssim"], result["input_psnr"], result["input_ssim"])
            if do_save:
                # A finite loss can still come with an overflowing update; never checkpoint such a state.
                if not _all_finite((state.t_params, state.f_params)):
                    raise FloatingPointError(f"non-finite parameters after step {step}; stopping without "
                                             "saving (the last checkpoint is intact)")
                ckpt.save(step, state, data_iter)
            if stop:
                logging.warning("Stopped by SIGTERM after step %d; checkpoint saved", step)
                break
    finally:
        preemption.restore()
        ckpt.wait()
        ckpt.close()
        writer.flush()
    return state
