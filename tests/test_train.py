"""The training program end to end on tiny configs and 8 CPU devices: a run trains and evaluates, and every task
feeds it; resume, completion, SIGTERM, Ctrl-C, SIGKILL, non-finite losses, an image that fails at the first batch.
The lock: test_workdir.py; unreadable checkpoints: test_checkpointing.py."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fakes import loop_config, save_image
from rcot_jax.configs import allinone, deblur, dehaze, denoise, derain, lowlight, sr
from rcot_jax import evaluate, train, writers
from rcot_jax.checkpointing import Checkpointer
from rcot_jax.data import pipeline
from rcot_jax.ids import degradation_id
from rcot_jax.state import create_train_state

ROOT = os.path.join(os.path.dirname(__file__), "..")
TASKS = {"deblur": deblur, "denoise": denoise, "derain": derain, "dehaze": dehaze, "sr": sr,
         "lowlight": lowlight, "allinone": allinone}
EVAL_KEYS = {"step", "profile", "psnr", "ssim", "input_psnr", "input_ssim"}


def _eval_lines(workdir):
    with open(os.path.join(workdir, "eval.jsonl")) as f:
        return [json.loads(line) for line in f]


def _restore_latest(config, workdir):
    """The latest checkpoint restored through the public path, with a fresh data iterator."""
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    abstract = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0)))
    data_iter = iter(pipeline.train_dataset(config))
    try:
        return ckpt.latest_step(), ckpt.restore(ckpt.latest_step(), abstract, data_iter)
    finally:
        ckpt.close()


def test_a_run_trains_evaluates_and_writes_its_files(tmp_path):
    """allinone: every degradation of its mix trained and scored apart (with the MPRNet map of `loop_config`,
    whose step and initialiser the run-loop tests share: what allinone changes is the data, below)."""
    config = allinone.get_config("tiny")
    config.model.backbone = "mprnet"
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == config.num_train_steps == 3

    (line,) = _eval_lines(tmp_path)
    assert EVAL_KEYS <= set(line) and line["step"] == 3 and line.pop("profile") == "rgb"
    assert all(np.isfinite(v) for v in line.values())
    assert {f"psnr/{n}" for n in config.data.mix} <= set(line)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]
    assert os.listdir(tmp_path / "samples") == ["step_0000003.png"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))
    assert json.load(open(tmp_path / "config.json"))["data"]["task"] == "allinone"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_feeds_the_same_step_its_own_degradations(task):
    """What a task changes is the data: its batches fit the step the run above compiles (same networks, same
    batch shapes), with its degradations' ids, and its held-out set scores those degradations."""
    config, reference = TASKS[task].get_config("tiny"), allinone.get_config("tiny")
    assert config.model == reference.model and config.loss == reference.loss and config.optim == reference.optim
    batch, expected = (next(iter(pipeline.train_dataset(c))) for c in (config, reference))
    assert {k: (batch[k].shape, batch[k].dtype) for k in train.BATCH_KEYS} == \
        {k: (expected[k].shape, expected[k].dtype) for k in train.BATCH_KEYS}
    names = pipeline.degradation_names(config.data)
    assert set(batch["de_id"]) <= {int(degradation_id(n)) for n in names}      # allinone: a random one each
    assert sorted(set(pipeline.EvalSet(config).degradations)) == sorted(names)


@pytest.mark.slow      # three launches of the loop, and an evaluation
def test_finished_run_is_not_retrained_eval_mode_reproduces_and_a_nan_keeps_the_last_checkpoint(tmp_path, caplog):
    config = loop_config()
    train.train_and_evaluate(config, str(tmp_path))
    caplog.set_level("INFO")
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 3 and "Training is complete: step 3 of 3" in caplog.text
    (line,) = _eval_lines(tmp_path)
    result = evaluate.evaluate_checkpoint(config, str(tmp_path))        # --mode=eval reproduces the last eval
    assert result["psnr"] == pytest.approx(line["psnr"], abs=1e-3)

    # A map learning rate beyond float32 makes T's parameters non-finite at step 4.
    config.num_train_steps, config.optim.lr_map, config.checkpoint_every_steps = 6, 1e39, 4
    with pytest.raises(FloatingPointError, match=r"non-finite (loss at step 5|parameters after step 4)"):
        train.train_and_evaluate(config, str(tmp_path))
    step, restored = _restore_latest(config, str(tmp_path))
    assert step == 3 and int(restored.step) == 3
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored.t_params))


def test_a_non_finite_loss_is_reported_with_its_step_and_name():
    history = [(4, {"transport_loss": 1.0, "psnr": 20.0}), (5, {"transport_loss": float("nan"), "psnr": 20.0})]
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 5: transport_loss=nan;"):
        train._check_finite(history)
    train._check_finite(history[:1])


def _launch(workdir, *overrides):
    return subprocess.Popen(
        [sys.executable, "-m", "rcot_jax.main", "--config=configs/deblur.py:tiny", "--config.model.backbone=mprnet",
         f"--workdir={workdir}", "--config.num_train_steps=1000", "--config.eval_every_steps=1000", *overrides],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc, text, timeout=300):
    deadline, seen = time.time() + timeout, []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
        if time.time() > deadline:
            break
    proc.kill()
    raise AssertionError(f"{text!r} not seen:\n" + "".join(seen[-30:]))


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    proc = _launch(tmp_path, "--config.checkpoint_every_steps=1000")
    _wait_for(proc, "] [2] train/")
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
    step, restored = _restore_latest(loop_config(), str(tmp_path))
    assert step >= 2 and int(restored.step) == step
    assert out.strip().splitlines()[-1] == (f"rcot_jax.main: interrupted (Ctrl-C) after step {step}; its checkpoint "
                                            f"is saved in {tmp_path}/checkpoints: run the same command to resume")


def test_sigterm_saves_a_checkpoint_and_returns(tmp_path, monkeypatch):
    """Preemption (in this process: SIGTERM sent to itself at step 2) saves the step it stopped at."""
    config = loop_config()
    config.num_train_steps, config.eval_every_steps, config.checkpoint_every_steps = 1000, 1000, 1000
    report = writers.ReportProgress.__call__

    def report_and_signal(self, step, t):
        report(self, step, t)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(writers.ReportProgress, "__call__", report_and_signal)
    previous = signal.getsignal(signal.SIGTERM)
    state = train.train_and_evaluate(config, str(tmp_path))
    step, restored = _restore_latest(loop_config(), str(tmp_path))
    assert int(state.step) == step == int(restored.step) == 2
    assert signal.getsignal(signal.SIGTERM) == previous     # the handler is removed again


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_the_run(tmp_path, caplog):
    proc = _launch(tmp_path, "--config.checkpoint_every_steps=2")
    _wait_for(proc, "] [5] train/")          # saving 4 waited for 2 to finish; 4 may be in flight
    proc.kill()
    proc.wait()
    config = loop_config()
    config.num_train_steps, config.eval_every_steps = 6, 1000
    caplog.set_level("INFO")
    state = train.train_and_evaluate(config, str(tmp_path))
    assert "Resumed from" in caplog.text
    assert int(state.step) == 6
    assert [line["step"] for line in _eval_lines(tmp_path)] == [6]


def test_an_image_that_fails_to_decode_at_the_first_batch_leaves_no_workdir(tmp_path):
    """Its header reads (so the folder is accepted), its pixels are cut off: the first batch meets it. Under
    `bad_files=skip` every file is decoded when the folder is read, and the launch trains without it."""
    data = (tmp_path / "photo.jpg", save_image(tmp_path / "photo.jpg", hw=(64, 64), quality=95))[0].read_bytes()
    save_image(tmp_path / "images" / "fine.png", hw=(64, 64))
    (tmp_path / "images" / "cut.jpg").write_bytes(data[:len(data) // 2])
    config = loop_config()
    config.num_train_steps = 1
    config.data.update(source="clean_folder", train_dir=str(tmp_path / "images"))
    with pytest.raises(ValueError, match=r"cut.jpg: cannot decode image"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    config.data.bad_files = "skip"
    assert int(train.train_and_evaluate(config, str(tmp_path / "run")).step) == 1


def test_a_missing_image_folder_is_named(tmp_path):
    config = deblur.get_config("tiny")
    config.data.train_dir = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="config.data.train_dir='.*nowhere' does not exist"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
