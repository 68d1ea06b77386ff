"""Several processes and device counts, in one chain of launches of `python -m rcot_jax.main`: a checkpoint of
1 process x 8 CPU devices resumes on 2 processes x 4 devices, which are killed (SIGKILL) after their next
checkpoint; that checkpoint resumes on 1 process x 2 devices, and the run ends with the train state of 1 process x
2 devices run without a break. In float64 (`config.precision`), so that the comparison checks the resumes, not the
float32 rounding of Gloo's other summation order (the tolerance of the 1 = 8 devices test, tests/test_parallel.py).
"""
import contextlib
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import portpicker
import pytest

from fakes import xla_flags
from rcot_jax.checkpointing import abstract_like
from rcot_jax.configs import denoise
from rcot_jax.state import create_train_state

pytestmark = pytest.mark.slow     # multi-process launches

ROOT = os.path.join(os.path.dirname(__file__), "..")
STEPS = 6
# The tiny config with the tiny MPRNet map, which compiles in half the time of the tiny Restormer, and a critic of
# width 4, as in tests/test_parallel.py (the float64 steps run in a third of the time).
FLAGS = ["--config=configs/denoise.py:tiny", "--config.model.backbone=mprnet", "--config.model.critic_width=4",
         "--config.checkpoint_every_steps=2", "--config.eval_every_steps=1000", "--config.precision=float64"]
TIMEOUT = 900        # the whole chain


def _config():
    config = denoise.get_config("tiny")
    config.model.backbone = "mprnet"
    config.model.critic_width = 4
    return config


def _launch(log, workdir, devices, steps, *flags, **env):
    # The suite's fast-compiling XLA flags: compiling is most of this test's time.
    env = dict(os.environ, **env, JAX_ENABLE_X64="1", XLA_FLAGS=xla_flags(devices))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rcot_jax.main", *FLAGS, f"--workdir={workdir}",
             f"--config.num_train_steps={steps}", *flags], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _launch_two(tmp_path, name, workdir, steps, *flags, **env):
    """The same command on 2 processes of 4 devices each, without the persistent compilation cache: only process 0
    would find its programs there (the key holds each process's CPU topology) and reach the first collective
    long before process 1, which Gloo waits for 30 s only."""
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    return [_launch(tmp_path / f"{name}_{i}.log", workdir, 4, steps, f"--coordinator_address={address}",
                    "--num_processes=2", f"--process_id={i}", *flags, JAX_ENABLE_COMPILATION_CACHE="false", **env)
            for i in range(2)]


@contextlib.contextmanager
def _killed_at_exit():
    procs = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _logs(procs):
    return "\n".join(f"--- {p.log}:\n" + p.log.read_text()[-3000:] for p in procs)


def _wait(procs, deadline):
    for p in procs:
        p.wait(timeout=max(1, deadline - time.time()))
    assert all(p.returncode == 0 for p in procs), _logs(procs)


def _checkpoints(workdir):
    """Complete checkpoints: Orbax writes into a temporary directory and renames it to `<step>` at the end."""
    path = workdir / "checkpoints"
    return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if path.exists() else []


def _state(workdir, step):
    """The float64 train state of checkpoint `step` as NumPy arrays, keyed by path."""
    config = _config()
    config.precision = "float64"
    with jax.enable_x64(True):
        abstract = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0)))
        target = abstract_like(abstract, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(workdir / "checkpoints" / str(step) / "state", target)
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state)}


def _relative_differences(actual, expected):
    """{part of the state: |actual - expected| / |expected| over all its leaves} (Frobenius norms)."""
    out = {}
    for part in (".t_params", ".f_params", ".t_opt_state", ".f_opt_state"):
        keys = [k for k in expected if k.startswith(part)]
        num = sum(np.sum((actual[k] - expected[k]) ** 2) for k in keys)
        out[part] = float(np.sqrt(num / sum(np.sum(expected[k] ** 2) for k in keys)))
    return out


def test_resumes_across_process_and_device_counts_and_a_kill_end_as_the_run_without_a_break(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    deadline = time.time() + TIMEOUT
    with _killed_at_exit() as procs:
        procs.append(uninterrupted := _launch(tmp_path / "reference.log", reference, 2, STEPS))
        procs.append(eight := _launch(tmp_path / "eight.log", run, 8, 2))
        _wait([eight], deadline)
        assert _checkpoints(run) == [2]
        # 1000 steps: this launch cannot finish; it is killed as soon as its first checkpoint is complete.
        procs += (two := _launch_two(tmp_path, "two_processes", run, 1000))
        while _checkpoints(run)[-1] == 2:
            assert all(p.poll() is None for p in two), _logs(two)
            assert time.time() < deadline, _logs(two)
            time.sleep(0.05)
        for p in two:
            p.kill()
        for p in two:
            p.wait()
        killed_at = _checkpoints(run)[-1]
        assert 4 <= killed_at < STEPS
        assert sorted(os.listdir(run / "checkpoints" / str(killed_at) / "data")) == \
            ["commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
        procs.append(resumed := _launch(tmp_path / "resumed.log", run, 2, STEPS))
        _wait([resumed, uninterrupted], deadline)
    for p in two:
        assert f"Resumed from {run}/checkpoints/2" in p.log.read_text()
    assert f"Resumed from {run}/checkpoints/{killed_at}" in resumed.log.read_text()

    assert _checkpoints(reference)[-1] == _checkpoints(run)[-1] == STEPS
    expected, actual = _state(reference, STEPS), _state(run, STEPS)
    assert expected.keys() == actual.keys() and actual[".step"] == STEPS
    assert actual[".t_params['params']['prelu']"].dtype == np.float64
    assert all(diff < 1e-5 for diff in _relative_differences(actual, expected).values()), \
        _relative_differences(actual, expected)
    # Not trivially equal: the steps after the last resume moved the parameters.
    assert max(_relative_differences(_state(run, killed_at), expected).values()) > 1e-4
    evaluation = json.loads((reference / "eval.jsonl").read_text())       # one line: the evaluation at the last step
    last = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])  # after the first launch's, at step 2
    assert last == pytest.approx(evaluation, abs=1e-3)
