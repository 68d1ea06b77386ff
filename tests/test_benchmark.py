"""rcot_jax.benchmark: the records of the train step, of restoring and of the input pipeline (one timed call of
the tiny configs; the numbers themselves are measurements, in experiments/benchmarks.md). `--mode=aot`:
tests/test_aot.py; `--mode=sweep` uses the vmapped step of tests/test_ablate.py."""
import functools

import pytest

from fakes import loop_config
from rcot_jax import benchmark

COMMON = {"mode", "backend", "device_kind", "devices", "jax", "precision", "backbone", "batch", "patch", "compile_s",
          "step_time_median_s", "step_time_p90_s", "images_per_s", "gflop_per_step", "achieved_gflops",
          "peak_gflops", "peak_fraction", "peak_memory_gb"}


@pytest.mark.parametrize("mode", ["train", "restore"])
def test_a_record_of_the_step_and_of_restoring(mode, monkeypatch):
    # The peak's 4096^2 matmul takes seconds on 2 cores; a 512^2 one is measured the same way
    monkeypatch.setattr(benchmark, "peak_matmul_gflops", functools.partial(benchmark.peak_matmul_gflops, n=512))
    config = loop_config()
    record = benchmark.run_benchmark(config, mode, num_steps=1)
    assert set(record) == COMMON and record["mode"] == mode and record["backbone"] == "mprnet"
    assert (record["devices"], record["batch"], record["patch"]) == (8, 8, 32)
    assert record["step_time_median_s"] > 0 and record["gflop_per_step"] > 0 and record["peak_gflops"] > 0
    assert record["peak_memory_gb"] > 0


def test_a_record_of_the_input_pipeline():
    record = benchmark.run_input_benchmark(loop_config(), num_batches=3)
    assert (record["mode"], record["source"], record["batches"], record["batch"]) == ("input", "embedded", 3, 8)
    assert record["batches_per_s"] > 0 and record["patches_per_s"] == pytest.approx(8 * record["batches_per_s"],
                                                                                   rel=0.01)
