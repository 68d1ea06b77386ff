"""The training loop: `train_and_evaluate(config, workdir) -> state`.

Workdir contents:
  config.json        the resolved config of the latest launch (written once the run starts)
  config_history/    every launch's config: <UTC time>-step<N>.json, N the step it started from
  checkpoints/<step> Orbax checkpoints (train state + data iterator position), the last `keep_checkpoints`
  events.out.tfevents.*   TensorBoard scalars (train metrics, eval PSNR/SSIM, steps/s) and sample images
  samples/step_<step>.png sample grids: degraded | first pass | restored | target, one held-out crop per row
  eval.jsonl         one JSON line per evaluation: step, profile, psnr, ssim, input_psnr, input_ssim (+ per
                     degradation; "mode": "eval" for `--mode=eval`)
  eval/<split>_<step>_<profile>/  `--mode=eval`: per_image.csv, summary.json, images/*.png (the restored
                     held-out set), one folder per metric profile
  run.lock           held by the running process (pid@host)
Re-running with the same workdir resumes from the latest checkpoint; a finished run is not retrained.
"""
import contextlib
import functools
import json
import os
import pathlib
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from PIL import Image

from rcot_jax import parallel
from rcot_jax import workdir as workdir_lib
from rcot_jax import writers
from rcot_jax.evaluate import eval_line, eval_scalars, evaluate, make_evaluator, sample_grid
from rcot_jax.checkpointing import Checkpointer, abstract_like
from rcot_jax.data import pipeline
from rcot_jax.state import create_train_state, jit_init, program_config, seed_keys
from rcot_jax.weights import checkpoints as weights_checkpoints

BATCH_KEYS = ("degraded", "target", "paired", "de_id")   # what the train step reads


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training after the step it names, whose checkpoint was saved."""


class _Preemption:
    """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a flag the loop polls; all processes stop at the same
    step. A second Ctrl-C interrupts at once (Python's default), for a save that hangs."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = None
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        logging.warning("%s received: saving a checkpoint and stopping", self.received)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def should_stop(self):
        if jax.process_count() == 1:
            return self.received is not None
        return bool(multihost_utils.process_allgather(np.int32(self.received is not None)).any())

    def restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


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


def _truncate_log(path, step):
    """Drops a JSONL log's lines after `step`: they belong to a run that died before checkpointing them and
    will be recomputed, so the log always matches the checkpoint it resumed from."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    workdir_lib.write_atomic(path, lambda tmp: pathlib.Path(tmp).write_text("".join(lines)))


def _announce_first_call(fn, what):
    """`fn` that says it is compiling before its first call (silent for a minute on a CPU otherwise) and how
    long that call took."""
    calls = []

    def run(*args):
        if calls:
            return fn(*args)
        calls.append(time.time())
        logging.info("Compiling %s ...", what)
        out = jax.block_until_ready(fn(*args))
        logging.info("Compiled and ran %s in %.1f s", what, time.time() - calls[0])
        return out

    return run


def _check_fits(config, mesh):
    """Raises ValueError, naming the key, for settings the mesh or the model cannot take: checked before the
    workdir is touched."""
    if config.sweep.axis:
        raise ValueError(f"config.sweep.axis={config.sweep.axis!r}: sweeps train with `python -m rcot_jax.ablate "
                         "--grid=sweep`; rcot_jax.main trains one run")
    parallel.check_batch_size(config.data.batch_size, mesh, config.optim.accumulate_steps)
    jax.eval_shape(lambda: create_train_state(config, seed_keys(config.seed)[0]))   # the model keys


def initial_state(config, sharding):
    """A run's step-0 state, from `config.seed`'s init key, created in place with `sharding` (on several
    processes a host value cannot be device_put globally)."""
    return _initialiser(program_config(config), config.seed, sharding)()


@functools.lru_cache(maxsize=4)
def _initialiser(config, seed, sharding):
    """One per process for each program config, seed and sharding: a later launch reuses it compiled."""
    return jit_init(lambda: create_train_state(config, seed_keys(seed)[0]), out_shardings=sharding)


def _restore_or_init(config, ckpt, sharding, data_iter):
    latest = ckpt.latest_step()
    if latest is None:
        logging.info("Initialising the train state (compiling its initialiser) ...")
        state = initial_state(config, sharding)
        return weights_checkpoints.init_from(config.init_from, state, config) if config.init_from else state
    abstract = abstract_like(jax.eval_shape(lambda: create_train_state(config, seed_keys(config.seed)[0])), sharding)
    step, state = ckpt.restore_latest(abstract, data_iter)
    logging.info("Resumed from %s/%d", ckpt.directory, step)
    return state


def _setup(config, workdir, held):
    """Mesh, images, the process's data iterator, the held-out set, the checkpointer and the state. The config
    and the data are checked before anything is written; then the workdir's lock is taken into `held` (an
    ExitStack)."""
    workdir_lib.check_relaunch(config, workdir)
    mesh = parallel.make_mesh()
    data_iter = iter(pipeline.train_dataset(config, None, jax.process_index(), jax.process_count()))
    eval_data = pipeline.EvalSet(config)
    _check_fits(config, mesh)
    if jax.process_index() == 0:
        held.enter_context(workdir_lib.locked(workdir))
    ckpt = Checkpointer(os.path.join(workdir, workdir_lib.CHECKPOINTS), config.keep_checkpoints)
    state = _restore_or_init(config, ckpt, parallel.replicated(mesh), data_iter)
    return mesh, data_iter, eval_data, ckpt, state


def train_and_evaluate(config, workdir):
    """Trains (or resumes) to `config.num_train_steps`, evaluating and checkpointing along the way; the workdir is
    locked against a second run meanwhile. A launch that created the workdir and fails (or is interrupted) before
    its first checkpoint removes it again: nothing is left that looks like a run (e.g. a truncated image found by
    the first batch)."""
    if config.parallel.wrapper == "pmap" and jax.process_count() > 1:
        raise ValueError("config.parallel.wrapper='pmap' runs on one process; use 'shard_map' across processes")
    workdir = os.path.abspath(workdir)
    created = not os.path.exists(workdir)
    try:
        with contextlib.ExitStack() as held:
            return _train_and_evaluate(config, workdir, held)
    except BaseException:
        checkpoints = os.path.join(workdir, workdir_lib.CHECKPOINTS)
        if created and jax.process_index() == 0 and not any(n.isdigit() for n in _listdir(checkpoints)):
            shutil.rmtree(workdir, ignore_errors=True)
        raise


def _listdir(path):
    return os.listdir(path) if os.path.isdir(path) else []


def _train_and_evaluate(config, workdir, held):
    is_main = jax.process_index() == 0
    mesh, data_iter, eval_data, ckpt, state = _setup(config, workdir, held)
    step_rng = jax.jit(lambda: seed_keys(config.seed)[1], out_shardings=parallel.replicated(mesh))()
    first_step = int(state.step)
    if is_main:
        workdir_lib.record_config(workdir, config, first_step)
        logging.info("Every key of this launch's config: %s", os.path.join(workdir, workdir_lib.CONFIG))
    os.makedirs(os.path.join(workdir, workdir_lib.SAMPLES), exist_ok=True)
    eval_log = os.path.join(workdir, workdir_lib.EVAL_LOG)
    if is_main:
        for log in (eval_log, os.path.join(workdir, workdir_lib.METRICS_LOG)):
            _truncate_log(log, first_step)
    if first_step >= config.num_train_steps:
        logging.info("Training is complete: step %d of %d in %s", first_step, config.num_train_steps, workdir)
        ckpt.close()
        return state

    writer = writers.create_default_writer(workdir, just_logging=not is_main)
    report = writers.ReportProgress(num_train_steps=config.num_train_steps, writer=writer)
    train_step = _announce_first_call(parallel.compile_train_step(config, mesh), "the train step")
    evaluator = _announce_first_call(make_evaluator(config, mesh), "the evaluation")
    preemption = _Preemption()
    pending = []     # (step, metrics still on the device): fetched only when logged, to keep the device busy
    step = first_step
    try:
        for step in range(first_step + 1, config.num_train_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                batch = parallel.global_batch(next(data_iter), mesh, BATCH_KEYS)
                state, step_metrics = train_step(state, batch, step_rng)
            pending.append((step, step_metrics))
            report(step, time.time())
            ckpt.raise_if_failed()
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
                result, rows = evaluate(evaluator, state.t_params, eval_data, config.num_sample_images)
                writer.write_scalars(step, eval_scalars(config.eval.metric_profile, result))
                if is_main:     # the sample rows are process 0's
                    grid = sample_grid(rows, config.data.eval_size)
                    writer.write_images(step, {"samples": grid[None]})
                    workdir_lib.write_atomic(workdir_lib.sample_path(workdir, step),
                                             lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
                    with open(eval_log, "a") as f:
                        f.write(json.dumps(eval_line(step, config.eval.metric_profile, result)) + "\n")
                logging.info("Eval at step %d: PSNR %.2f dB, SSIM %.4f (input: %.2f dB, %.4f)", step,
                             result["psnr"], result["ssim"], result["input_psnr"], result["input_ssim"])
            if do_save:
                # A finite loss can still come with an overflowing update; never checkpoint such a state.
                if not _all_finite((state.t_params, state.f_params)):
                    raise FloatingPointError(f"non-finite parameters after step {step}; stopping without "
                                             "saving (the last checkpoint is intact)")
                ckpt.save(step, state, data_iter)
            if stop:
                logging.warning("Stopped by %s after step %d; checkpoint saved", preemption.received or "another "
                                "process's signal", step)
                break
    finally:
        preemption.restore()
        try:
            ckpt.wait()
        finally:    # also when the last save failed: close() removes what its writes left
            ckpt.close()
            writer.flush()
    if preemption.received == "SIGINT":
        raise Interrupted(f"interrupted (Ctrl-C) after step {step}; its checkpoint is saved in {ckpt.directory}: "
                          "run the same command to resume")
    return state
