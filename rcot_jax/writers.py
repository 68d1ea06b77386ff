"""Metric writers for the training loop, with or without TensorFlow.

clu's writers (TensorBoard event files) import TensorFlow, so they are used only where it imports; elsewhere (a
Colab TPU runtime, a bare GPU machine) scalars are logged and appended to WORKDIR/metrics.jsonl, one line per
`write_scalars`: {"step": ..., name: value, ...}. Images are not written there (train.py saves sample grids as PNG
anyway). Nothing here imports TensorFlow at import time.
"""
import json
import os
import time

from absl import logging

from rcot_jax import workdir as workdir_lib



def _clu_writers():
    """clu's `metric_writers`, None where it cannot import (no TensorFlow, or no clu)."""
    try:
        import tensorflow as tf
        from clu import metric_writers
    except ImportError as e:
        logging.info("No TensorBoard event files (%s); scalars go to %s", e, workdir_lib.METRICS_LOG)
        return None
    try:    # TensorFlow would otherwise take the GPUs' memory from JAX (Colab's TensorFlow sees the GPU)
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass        # TensorFlow is initialized already: whoever did it chose
    return metric_writers


class JsonlWriter:
    """The writer used without TensorFlow: scalars to the log and, unless `just_logging`, to WORKDIR/metrics.jsonl."""

    def __init__(self, workdir, just_logging=False):
        self.path = None if just_logging else os.path.join(workdir, workdir_lib.METRICS_LOG)

    def write_scalars(self, step, scalars):
        values = {k: float(v) for k, v in scalars.items()}
        logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": int(step), **values}) + "\n")

    def write_images(self, step, images):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def create_default_writer(workdir, just_logging=False):
    """clu's default writer (log + TensorBoard) where TensorFlow imports, else a `JsonlWriter`."""
    clu = _clu_writers()
    if clu is None:
        return JsonlWriter(workdir, just_logging)
    return clu.create_default_writer(workdir, just_logging=just_logging)


def summary_writer(workdir):
    """A writer into `workdir` alone (no log lines): TensorBoard where TensorFlow imports, else metrics.jsonl."""
    clu = _clu_writers()
    return JsonlWriter(workdir) if clu is None else clu.SummaryWriter(workdir)


class ReportProgress:
    """Logs steps/s, progress and ETA every `every_secs` and at the last step, and writes `steps_per_sec` and
    `uptime` (like clu's `periodic_actions.ReportProgress`, which imports TensorFlow). Call it after each step."""

    def __init__(self, *, num_train_steps, writer=None, every_secs=60.0):
        self.num_train_steps, self.writer, self.every_secs = num_train_steps, writer, every_secs
        self._t0 = time.monotonic()
        self._last = None       # (step, time) of the last report, or of the first call

    def __call__(self, step, t=None):
        t = time.time() if t is None else t
        if self._last is None:
            self._last = (step, t)
            return
        last_step, last_t = self._last
        if step == last_step or (t - last_t < self.every_secs and step != self.num_train_steps):
            return
        self._last = (step, t)
        steps_per_sec = (step - last_step) / max(t - last_t, 1e-9)
        eta = (self.num_train_steps - step) / steps_per_sec
        logging.info("%.1f steps/s, %.1f%% (%d/%d), ETA: %.0f min", steps_per_sec,
                     100 * step / self.num_train_steps, step, self.num_train_steps, eta / 60)
        if self.writer is not None:
            self.writer.write_scalars(step, {"steps_per_sec": steps_per_sec, "uptime": time.monotonic() - self._t0})
