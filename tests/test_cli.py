"""The programs as a user runs them: config paths from any directory, eval of a workdir, errors without tracebacks,
a failed checkpoint save, every command's --help. Failed launches leaving a workdir as it was: test_workdir.py."""
import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fakes import command
from rcot_jax import configs, evaluate, train
from rcot_jax.configs import deblur

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_a_configs_path_is_found_in_the_package_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = os.path.join(configs.CONFIG_DIR, "deblur.py")
    assert configs.resolve_path("configs/deblur.py:tiny") == packaged + ":tiny"
    assert configs.resolve_path("./configs/benchmark.py:b:bf16") == os.path.join(
        configs.CONFIG_DIR, "benchmark.py") + ":b:bf16"
    assert configs.resolve_argv(["main", "--config", "configs/sr.py", "--config.seed=1"]) == [
        "main", "--config", os.path.join(configs.CONFIG_DIR, "sr.py"), "--config.seed=1"]
    assert configs.resolve_path("configs/nowhere.py") == "configs/nowhere.py"   # left for the error message
    assert configs.resolve_path("/abs/configs/deblur.py") == "/abs/configs/deblur.py"

    (tmp_path / "configs").mkdir()                                # a user's own configs/ folder wins
    (tmp_path / "configs" / "deblur.py").write_text("")
    assert configs.resolve_argv(["main", "--config=configs/deblur.py:tiny"]) == [
        "main", "--config=configs/deblur.py:tiny"]


def test_the_repository_configs_link_is_the_package():
    assert os.path.samefile(os.path.join(ROOT, "configs"), configs.CONFIG_DIR)


# --- the training program, run as a user runs it -------------------------------------------------------------

MPRNET = "--config.model.backbone=mprnet"


def _cli(cwd, *args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, "-m", "rcot_jax.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def _eval_lines(workdir):
    with open(os.path.join(workdir, "eval.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three smooth 40x40 photographs-to-be: a held-out folder other than the embedded one."""
    folder = tmp_path_factory.mktemp("eval_images")
    rng = np.random.default_rng(0)
    for i in range(3):
        small = rng.uniform(0, 255, (5, 5, 3)).astype(np.uint8)
        Image.fromarray(small).resize((40, 40), Image.BICUBIC).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder):
    """A 2-step run trained by the CLI from a directory outside the repository, with an absolute config path
    and an eval-folder override: (workdir, its console output). The MPRNet map: the programs of `fakes.loop_config`,
    which the in-process run-loop tests compile too."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    workdir = cwd / "run"
    result = _cli(cwd, f"--config={os.path.abspath(ROOT)}/configs/deblur.py:tiny", MPRNET, f"--workdir={workdir}",
                  "--config.num_train_steps=2", f"--config.data.eval_dir={image_folder}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stderr


@pytest.mark.slow
def test_the_cli_trains_from_any_directory_and_says_what_it_compiles(trained):
    workdir, console = trained
    assert [line["step"] for line in _eval_lines(workdir)] == [2]
    assert "Compiling the train step ..." in console and "Compiling the evaluation ..." in console
    assert "num_train_steps = 2" in console and "seed" not in console      # only the keys that differ
    config = json.loads((workdir / "config.json").read_text())
    (dated,) = os.listdir(workdir / "config_history")
    assert dated.endswith("-step0.json") and json.loads((workdir / "config_history" / dated).read_text()) == config


@pytest.mark.slow
def test_eval_mode_uses_the_runs_config_and_appends_its_result(trained, tmp_path):
    workdir, _ = trained
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    result = _cli(tmp_path, "--config=configs/deblur.py:tiny", MPRNET, f"--workdir={run}", "--mode=eval")
    assert result.returncode == 0, result.stderr[-3000:]
    last, evaluated = _eval_lines(run)
    assert evaluated.pop("mode") == "eval" and evaluated == last       # the run's eval folder, not the embedded
    assert len([n for n in os.listdir(run) if n.startswith("events.out")]) == 2

    result = _cli(tmp_path, "--config=configs/deblur.py:tiny", MPRNET, f"--workdir={run}", "--mode=eval",
                  "--config.model.critic_width=8")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--config.model.critic_width=8: the run in this workdir was trained with model.critic_width=16" in result.stderr


def test_a_batch_size_the_devices_do_not_divide_names_the_key(tmp_path):
    config = deblur.get_config("tiny")
    config.data.batch_size = 12
    with pytest.raises(ValueError, match=r"config\.data\.batch_size=12 is not divisible by the 8 devices"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_eval_without_a_checkpoint_fails_without_creating_anything(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to evaluate in .*checkpoints"):
        evaluate.evaluate_checkpoint(deblur.get_config("tiny"), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_user_errors_are_one_line_and_help_lists_the_configs(tmp_path):
    result = _cli(tmp_path, "--help")
    assert result.returncode == 0
    assert all(f"configs/{task}.py" in result.stdout for task in configs.TASKS)
    assert "quick" in result.stdout and "tiny" in result.stdout and "--config.data.batch_size" in result.stdout

    for args, message in [
            (["--config=configs/deblr.py"], "--config=configs/deblr.py: no such file"),
            (["--config=configs/deblur.py:tny"], "unknown variant 'tny'"),
            (["--config=configs/deblur.py", "--config.data.batchsize=3"],
             "--config.data.batchsize: config.data has no key 'batchsize'; did you mean data.batch_size")]:
        result = _cli(tmp_path, *args, f"--workdir={tmp_path / 'run'}")
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, args
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_failed_save_stops_the_run_with_one_message_and_keeps_the_last_checkpoint(trained, image_folder, tmp_path):
    workdir, _ = trained
    run = tmp_path / "run"
    shutil.copytree(workdir, run)

    def full_disk():   # room for the small files, not for the state; Python ignores SIGXFSZ: writes get EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    result = _cli(tmp_path, "--config=configs/deblur.py:tiny", MPRNET, f"--workdir={run}", "--config.num_train_steps=4",
                  f"--config.data.eval_dir={image_folder}", preexec_fn=full_disk)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(("rcot_jax.main: error", "E1", "W1"))
              or "Traceback" in line]
    assert errors == [f"rcot_jax.main: error: saving checkpoint 4 to {run}/checkpoints failed, so training stopped "
                      "(the latest checkpoint is still 2): File too large"], errors
    assert sorted(os.listdir(run / "checkpoints")) == ["2"]


# --- every command ---------------------------------------------------------------------------------------------

COMMANDS = ("main", "restore", "convert", "export", "benchmark", "ablate", "prepare")


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_help_lists_the_commands_flags_and_exits_0(name):
    result = command(name, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--[no]traceback" in result.stdout
    own = {"main": "--workdir", "restore": "--exported", "convert": "--export", "export": "--[no]polymorphic",
           "benchmark": "--topology", "ablate": "--grid", "prepare": "--manual_dir"}[name]
    assert own in result.stdout
    assert ("--compilation_cache" in result.stdout) == (name != "prepare")       # every command that compiles
    assert ("--coordinator_address" in result.stdout) == (name == "main")         # the command that trains a run


@pytest.mark.slow
@pytest.mark.parametrize("name,args,message", [
    ("restore", ["--workdir=W", "--input=~/no_photo.png", "--output=out"],
     "--input={home}/no_photo.png: no such file or folder (missing)"),
    ("convert", ["--checkpoint=missing.pth", "--config=configs/derain.py:tiny", "--workdir=W"],
     "missing.pth: missing (no such checkpoint file)"),
    ("prepare", ["--dataset=rain100l", "--manual_dir=~/Rain100L", "--data_dir=data"],
     "--manual_dir='{home}/Rain100L' does not exist; expected train/rainy/rain-N.png"),
])
def test_ordinary_mistakes_are_one_line_without_a_traceback(name, args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = command(name, *args, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    first, hint = result.stderr.strip().splitlines()[-2:]
    assert first.startswith(f"rcot_jax.{name}: error: {message.format(home=tmp_path)}"), first
    assert hint == "(--traceback shows where it was raised)" and not os.path.exists(tmp_path / "W")
