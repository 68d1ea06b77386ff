"""rcot_jax.evaluate: `--mode=eval` reads only T's parameters from a checkpoint."""
import json
import os

import jax
import pytest

from rcot_jax import evaluate, parallel
from rcot_jax.checkpointing import Checkpointer
from rcot_jax.configs import denoise
from rcot_jax.data import pipeline
from rcot_jax.state import init_state


def _truncate_largest_file(directory):
    files = [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]
    biggest = max(files, key=os.path.getsize)
    os.truncate(biggest, os.path.getsize(biggest) // 2)


def test_eval_mode_needs_no_optimiser_or_critic_state(tmp_path, caplog):
    config = denoise.get_config("tiny")
    config.model.backbone = "mprnet"
    state = init_state(config, jax.random.key(4))
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    # checkpoints that hold the map's parameters and nothing else of the train state; the newer one damaged
    for step in (5, 6):
        ckpt.save(step, {"step": state.step, "t_params": state.t_params}, iter(pipeline.train_dataset(config)))
        ckpt.wait()
    ckpt.close()
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
