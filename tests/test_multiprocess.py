"""Several processes and device counts: 2 processes x 4 CPU devices, killed (SIGKILL) after a checkpoint and
relaunched, end with the train state of 1 process x 8 devices run without a break; a checkpoint of 8 devices, or of
2 processes x 4 devices, resumes on 2 devices."""
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

from rcot_jax.configs import denoise

from rcot_jax.checkpointing import abstract_like
from rcot_jax.state import create_train_state

pytestmark = pytest.mark.slow     # multi-process launches

ROOT = os.path.join(os.path.dirname(__file__), "..")
STEPS = 4
# The tiny config with the tiny MPRNet map, which compiles in half the time of the tiny Restormer.
FLAGS = ["--config=configs/denoise.py:tiny", "--config.model.backbone=mprnet", "--config.checkpoint_every_steps=2",
         "--config.eval_every_steps=1000"]
TIMEOUT = 600
# Largest difference allowed per leaf, relative to its largest value. Gloo sums the devices' gradients in another
# order than one process does: float32 rounding, which RMSprop's first, sign-like steps amplify in the critic's
# near-cancelling gradients (docs/training.md): the critic loss (about 1e-7 against potentials of order 1) already
# differs by 1% at step 2. Measured (embedded photographs as uint8 records): T 7e-6; T's optimiser state 2.2e-4 (the
# second moments of the channel-attention squeeze convolutions); F 1e-2; F's optimiser state 0.5 (the second moments
# of near-zero critic gradients). T, which the paired term drives, is the sharp check of "same batches, same update".
_TOLERANCES = {".step": 0, ".t_params": 1e-5, ".t_opt_state": 1e-3, ".f_params": 3e-2, ".f_opt_state": 1.0}


def _config():
    config = denoise.get_config("tiny")
    config.model.backbone = "mprnet"
    return config


def _launch(log, workdir, devices, steps, *flags, **env):
    # Unoptimised machine code halves XLA's compile time, most of this test's time.
    env = dict(os.environ, **env,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0")
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


def _state(workdir, step, precision="float32"):
    """The train state of checkpoint `step` as NumPy arrays, keyed by path."""
    config = _config()
    config.precision = precision
    with jax.enable_x64(precision == "float64"):
        abstract = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0)))
        target = abstract_like(abstract, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(workdir / "checkpoints" / str(step) / "state", target)
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state)}


def test_two_processes_killed_and_resumed_end_as_one_process_uninterrupted(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    deadline = time.time() + TIMEOUT
    with _killed_at_exit() as procs:
        procs.append(reference := _launch(tmp_path / "one.log", one, 8, STEPS))
        # 1000 steps: this launch cannot finish; it is killed as soon as its first checkpoint is complete.
        procs += (first := _launch_two(tmp_path, "first", two, 1000))
        while not _checkpoints(two):
            assert all(p.poll() is None for p in first), _logs(first)
            assert time.time() < deadline, _logs(first)
            time.sleep(0.05)
        for p in first:
            p.kill()
        for p in first:
            p.wait()
        killed_at = _checkpoints(two)[-1]
        assert 2 <= killed_at < STEPS

        procs += (second := _launch_two(tmp_path, "second", two, STEPS))
        _wait(second + [reference], deadline)
    for p in second:
        assert f"Resumed from {two}/checkpoints/{killed_at}" in p.log.read_text()

    assert _checkpoints(one)[-1] == _checkpoints(two)[-1] == STEPS
    expected, actual = _state(one, STEPS), _state(two, STEPS)
    assert expected.keys() == actual.keys() and actual[".step"] == STEPS
    assert all(any(leaf.startswith(k) for k in _TOLERANCES) for leaf in expected)
    for k, tol in _TOLERANCES.items():
        for leaf in [leaf for leaf in expected if leaf.startswith(k)]:
            np.testing.assert_allclose(actual[leaf], expected[leaf], rtol=0,
                                       atol=tol * np.abs(expected[leaf]).max(), err_msg=leaf)
    evaluation = json.loads((one / "eval.jsonl").read_text())       # one line: the evaluation at the last step
    assert json.loads((two / "eval.jsonl").read_text()) == pytest.approx(evaluation, abs=1e-3)


# Resuming on another device count, in float64 (`config.precision`), so that the comparison checks the resume, not
# float32 rounding: the tolerance of the 1 = 8 devices test (tests/test_parallel.py).
F64 = ("--config.precision=float64",)
X64 = {"JAX_ENABLE_X64": "1"}
RESUMED_AT = 2


def _relative_differences(actual, expected):
    """{part of the state: |actual - expected| / |expected| over all its leaves} (Frobenius norms)."""
    out = {}
    for part in (".t_params", ".f_params", ".t_opt_state", ".f_opt_state"):
        keys = [k for k in expected if k.startswith(part)]
        num = sum(np.sum((actual[k] - expected[k]) ** 2) for k in keys)
        out[part] = float(np.sqrt(num / sum(np.sum(expected[k] ** 2) for k in keys)))
    return out


@pytest.fixture(scope="module")
def two_devices_uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two_devices")
    proc = _launch(workdir.parent / "two_devices.log", workdir, 2, STEPS, *F64, **X64)
    _wait([proc], time.time() + TIMEOUT)
    return _state(workdir, STEPS, "float64")


def _check_resumed_on_two_devices(tmp_path, workdir, expected):
    """Resumes `workdir` (at checkpoint RESUMED_AT) on 1 process x 2 devices to STEPS; its state must be the
    uninterrupted 2-device run's."""
    assert _checkpoints(workdir)[-1] == RESUMED_AT
    resumed = _launch(tmp_path / "resumed.log", workdir, 2, STEPS, *F64, **X64)
    _wait([resumed], time.time() + TIMEOUT)
    assert f"Resumed from {workdir}/checkpoints/{RESUMED_AT}" in resumed.log.read_text()
    actual = _state(workdir, STEPS, "float64")
    assert actual[".step"] == STEPS and actual[".t_params['params']['prelu']"].dtype == np.float64
    assert all(diff < 1e-5 for diff in _relative_differences(actual, expected).values()), \
        _relative_differences(actual, expected)
    # Not trivially equal: the steps after the resume moved the parameters.
    assert max(_relative_differences(_state(workdir, RESUMED_AT, "float64"), expected).values()) > 1e-4


def test_a_checkpoint_of_eight_devices_resumes_on_two(tmp_path, two_devices_uninterrupted):
    workdir = tmp_path / "run"
    proc = _launch(tmp_path / "eight.log", workdir, 8, RESUMED_AT, *F64, **X64)
    _wait([proc], time.time() + TIMEOUT)
    _check_resumed_on_two_devices(tmp_path, workdir, two_devices_uninterrupted)


def test_a_checkpoint_of_two_processes_resumes_on_one_process_of_two_devices(tmp_path, two_devices_uninterrupted):
    workdir = tmp_path / "run"
    _wait(_launch_two(tmp_path, "two_processes", workdir, RESUMED_AT, *F64, **X64), time.time() + TIMEOUT)
    assert sorted(os.listdir(workdir / "checkpoints" / str(RESUMED_AT) / "data")) == \
        ["commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
    _check_resumed_on_two_devices(tmp_path, workdir, two_devices_uninterrupted)
