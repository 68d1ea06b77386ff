"""rcot_jax.evaluate: `--mode=eval` reads only T's parameters from a checkpoint, and writes per-image rows, a
summary and the restored images for each metric profile."""
import csv
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from fakes import HW, rain_folders, tiny
from rcot_jax import evaluate, parallel
from rcot_jax.checkpointing import Checkpointer
from rcot_jax.configs import denoise, derain
from rcot_jax.data import pipeline
from rcot_jax.state import init_state


def _truncate_largest_file(directory):
    files = [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]
    biggest = max(files, key=os.path.getsize)
    os.truncate(biggest, os.path.getsize(biggest) // 2)


def _save_checkpoints(config, workdir, tree, *steps):
    """Checkpoints `steps` of `tree` in `workdir`, as a run saves them (with its data iterator)."""
    ckpt = Checkpointer(str(workdir / "checkpoints"), keep=len(steps))
    for step in steps:
        ckpt.save(step, tree, iter(pipeline.train_dataset(config)))
        ckpt.wait()
    ckpt.close()


def test_eval_mode_needs_no_optimiser_or_critic_state(tmp_path, caplog):
    config = denoise.get_config("tiny")
    config.model.backbone = "mprnet"
    state = init_state(config, jax.random.key(4))
    # checkpoints that hold the map's parameters and nothing else of the train state; the newer one damaged
    _save_checkpoints(config, tmp_path, {"step": state.step, "t_params": state.t_params}, 5, 6)
    _truncate_largest_file(tmp_path / "checkpoints" / "6")
    result = evaluate.evaluate_checkpoint(config, str(tmp_path))
    assert "checkpoint" in caplog.text and "/6 could not be read" in caplog.text
    eval_set = pipeline.EvalSet(config)
    expected, _ = evaluate.evaluate(evaluate.make_evaluator(config, parallel.make_mesh()), state.t_params, eval_set)
    assert result == pytest.approx(expected, rel=1e-6)
    line = json.loads((tmp_path / "eval.jsonl").read_text())
    assert (line["step"], line["profile"], line["mode"]) == (5, config.eval.metric_profile, "eval")
    assert os.path.isdir(tmp_path / "eval" / f"{eval_set.split}_5_{config.eval.metric_profile}")

    config.eval.step = 4
    with pytest.raises(FileNotFoundError, match=r"config.eval.step=4: no checkpoint 4 in .* \(it has \[5, 6\]\)"):
        evaluate.evaluate_checkpoint(config, str(tmp_path))
    config.eval.step = 6
    with pytest.raises(ValueError, match="checkpoint .*/6: T's parameters do not read"):
        evaluate.evaluate_checkpoint(config, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoint to evaluate"):
        evaluate.evaluate_checkpoint(config, str(tmp_path / "empty"))
    assert not os.path.exists(tmp_path / "empty")
    left = {n for n in os.listdir(tmp_path) if not n.startswith("events.")}     # TensorBoard's, where TF is installed
    assert left <= {"checkpoints", "eval", "eval.jsonl", "metrics.jsonl"}, left


def test_eval_command_writes_per_image_rows_a_summary_and_images(tmp_path):
    deg, tgt = rain_folders(tmp_path / "rain", n=3)
    os.rename(os.path.join(deg, "rain-2.png"), os.path.join(deg, "rain-2.jpg"))      # other sizes and formats
    c = tiny(derain, source="paired_folders", degraded_dir=deg, target_dir=tgt, match="rain-{id} -> norain-{id}",
              eval_degraded_dir=deg, eval_target_dir=tgt)
    c.model.backbone = "mprnet"
    _save_checkpoints(c, tmp_path / "run", {"step": 2, "t_params": init_state(c, jax.random.key(0)).t_params}, 2)
    c.eval.metric_profile, c.eval.step = "y", 1
    with pytest.raises(FileNotFoundError, match=r"config.eval.step=1: no checkpoint 1 .* \[2\]"):
        evaluate.evaluate_checkpoint(c, str(tmp_path / "run"))
    c.eval.step = 2
    result = evaluate.evaluate_checkpoint(c, str(tmp_path / "run"))
    c.eval.metric_profile = "nafnet"
    other = evaluate.evaluate_checkpoint(c, str(tmp_path / "run"))      # a second profile of the same step
    assert sorted(os.listdir(tmp_path / "run" / "eval")) == ["test_2_nafnet", "test_2_y"]
    lines = [json.loads(line) for line in open(tmp_path / "run" / "eval.jsonl")]
    assert [(line["step"], line["profile"], line["mode"]) for line in lines] == [(2, "y", "eval"),
                                                                                (2, "nafnet", "eval")]
    assert lines[0]["ssim"] == round(result["ssim"], 4) and lines[1]["ssim"] == round(other["ssim"], 4)
    out = tmp_path / "run" / "eval" / "test_2_y"
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    summary = json.load(open(out / "summary.json"))
    assert [r["name"] for r in rows] == ["rain-1", "rain-2", "rain-3"] and summary["profile"] == "y"
    for k in ("psnr", "ssim", "input_psnr", "input_ssim"):
        assert summary["means"][k] == pytest.approx(np.mean([float(r[k]) for r in rows]), abs=1e-5)
        assert result[k] == summary["means"][k]
    assert sorted(os.listdir(out / "images")) == ["rain-1.png", "rain-2.png", "rain-3.png"]
    assert Image.open(out / "images" / "rain-2.png").size == (HW[1], HW[0])
    assert not os.path.exists(str(out) + ".partial")
