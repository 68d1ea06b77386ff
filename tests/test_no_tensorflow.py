"""Without TensorFlow (a Colab TPU runtime, a bare GPU machine): the core, the data pipeline, evaluation and the
training loop import and train; scalars go to metrics.jsonl instead of TensorBoard. With it, importing rcot_jax
does not import it."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from fakes import xla_flags

CORE = ["models", "losses", "optim", "state", "steps", "parallel"]
SHELL = ["evaluate", "inference", "data.pipeline", "train"]


def _python(code, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1),
           "JAX_COMPILATION_CACHE_DIR": os.path.abspath(os.environ["JAX_COMPILATION_CACHE_DIR"])}
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]
    return run.stdout


@pytest.mark.slow
def test_importing_rcot_jax_does_not_import_tensorflow(tmp_path):
    out = _python(f"""
        import importlib, sys
        for name in {CORE + SHELL!r}:
            importlib.import_module("rcot_jax." + name)
            print(name, "tensorflow" in sys.modules)
    """, tmp_path)
    assert out.split() == [w for name in CORE + SHELL for w in (name, "False")], out


@pytest.mark.slow
def test_training_runs_without_tensorflow(tmp_path):
    workdir = tmp_path / "run"
    _python(f"""
        import sys
        sys.modules["tensorflow"] = None            # `import tensorflow` raises ImportError from here on
        import importlib
        for name in {CORE + SHELL!r}:
            importlib.import_module("rcot_jax." + name)
        from rcot_jax import evaluate, train
        from rcot_jax.configs import denoise
        config = denoise.get_config("tiny")
        config.model.backbone = "mprnet"     # compiles in half the time of the tiny Restormer, same loop
        state = train.train_and_evaluate(config, {str(workdir)!r})
        assert int(state.step) == 3
        evaluate.evaluate_checkpoint(config, {str(workdir)!r})      # --mode=eval
        assert "clu.metric_writers" not in sys.modules and "tensorflow_datasets" not in sys.modules
    """, tmp_path)

    evaluation, again = [json.loads(line) for line in open(workdir / "eval.jsonl")]
    assert evaluation["step"] == again["step"] == 3 and {"psnr", "ssim"} <= set(evaluation)
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert all(isinstance(line["step"], int) for line in lines)
    train_lines = [line for line in lines if any(k.startswith("train/") for k in line)]
    assert [line["step"] for line in train_lines] == [1, 2, 3]     # tiny logs every step
    eval_lines = [line for line in lines if "eval/rgb/psnr" in line]      # the run's, then --mode=eval's
    assert [line["step"] for line in eval_lines] == [3, 3]
    assert all(abs(line["eval/rgb/psnr"] - evaluation["psnr"]) < 1e-3 for line in eval_lines)
    assert not [n for n in os.listdir(workdir) if n.startswith("events.out")]
    assert os.listdir(workdir / "samples") == ["step_0000003.png"]


def test_progress_is_reported_every_interval_and_at_the_last_step(tmp_path):
    from rcot_jax import workdir, writers
    writer = writers.JsonlWriter(str(tmp_path))
    report = writers.ReportProgress(num_train_steps=10, writer=writer, every_secs=60)
    for step, t in [(1, 0.0), (2, 30.0), (4, 61.0), (5, 62.0), (10, 63.0)]:
        report(step, t)
    lines = [json.loads(line) for line in open(tmp_path / workdir.METRICS_LOG)]
    assert [(line["step"], round(line["steps_per_sec"], 3)) for line in lines] == [(4, round(3 / 61, 3)), (10, 3.0)]
