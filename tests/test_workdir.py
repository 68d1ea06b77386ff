"""rcot_jax.workdir: the run directory. A launch that fails leaves it byte for byte as it was (and creates none);
a relaunch with other model keys is refused and other data keys are warned about; a workdir in use is locked."""
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from fakes import loop_config
from rcot_jax import train
from rcot_jax import workdir as workdir_lib


def _tree(path):
    """{relative path: bytes} of every file under `path`."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(pathlib.Path(path).rglob("*")) if p.is_file()}


def test_failed_launches_leave_an_existing_workdir_byte_identical_and_create_none(saved_run, tmp_path):
    workdir = saved_run
    before = _tree(workdir)
    bad = [("model.backbone", "unet"), ("data.noise_sigma", 30), ("data.task", "deblurr"),
           ("data.batch_size", 5), ("data.train_dir", str(tmp_path / "nowhere"))]
    for key, value in bad:
        for target in (workdir, tmp_path / "new"):
            config = loop_config()
            section, leaf = key.split(".")
            config[section][leaf] = value
            config.data.task = "denoise" if key == "data.noise_sigma" else config.data.task
            config.data.source = "clean_folder" if key == "data.train_dir" else config.data.source
            with pytest.raises(ValueError, match=rf"config\.{key}"):
                train.train_and_evaluate(config, str(target))
            assert not os.path.exists(tmp_path / "new")
    assert _tree(workdir) == before


def test_a_relaunch_with_other_model_keys_is_refused_and_other_data_keys_warned(saved_run, caplog):
    workdir = saved_run
    before = _tree(workdir)
    config = loop_config()
    config.model.critic_width, config.model.mprnet.n_feat = 8, 16
    with pytest.raises(ValueError, match=r"holds a run with other model keys: config\.model\.critic_width=8 "
                                         r"\(the run's: 16\), config\.model\.mprnet\.n_feat=16 \(the run's: 8\); "
                                         r".* new workdir$"):
        train.train_and_evaluate(config, str(workdir))
    config = loop_config()
    config.data.task, config.data.batch_size = "denoise", 5               # the batch size fails after the warning
    with pytest.raises(ValueError, match="config.data.batch_size"):
        train.train_and_evaluate(config, str(workdir))
    assert "changes the task or data keys of the run" in caplog.text and "data.task='denoise' (was 'deblur')" in \
        caplog.text
    assert _tree(workdir) == before


def test_a_workdir_in_use_is_locked_and_a_stale_lock_is_taken_over(tmp_path, caplog):
    config = loop_config()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (tmp_path / workdir_lib.LOCK).write_text(f"{sleeper.pid}@{socket.gethostname()}")
        with pytest.raises(workdir_lib.WorkdirLocked, match=rf"in use by process {sleeper.pid} .*run.lock"):
            train.train_and_evaluate(config, str(tmp_path))
        assert not (tmp_path / "checkpoints").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    train.train_and_evaluate(config, str(tmp_path))     # the owner is gone: its lock is stale
    assert f"Taking over the stale lock {tmp_path / workdir_lib.LOCK} of process {sleeper.pid}" in caplog.text
    assert not (tmp_path / workdir_lib.LOCK).exists()   # released at the end
