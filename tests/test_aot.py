"""The train step compiled ahead of time for TPU slices on this CPU (`rcot_jax.benchmark --mode=aot`): the record,
a mesh over every chip of every host, the convolutions chosen for TPU, and the XLA:CPU flags kept out of the TPU
compiler. The compilations need libtpu (the `tpu-aot` extra); without it they skip."""
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

import rcot_jax
from rcot_jax import aot, configs
from rcot_jax.configs import benchmark, deblur

ROOT = os.path.join(os.path.dirname(__file__), "..")
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason='libtpu is not installed (pip install -e ".[tpu-aot]")')


def _tiny():
    config = deblur.get_config("tiny")
    config.model.backbone = "mprnet"    # compiles in half the time of the tiny Restormer, same step
    return config


def _check_spans_every_chip(compiled, devices, per_chip_batch):
    state, batch, key = compiled.input_shardings[0]
    for sharding in (batch["degraded"], jax.tree.leaves(state.t_params)[0], key):
        assert sharding.device_set == set(devices)
    assert batch["degraded"].shard_shape((per_chip_batch * len(devices), 32, 32, 3))[0] == per_chip_batch


def _ran_on_cpu(hlo_pass, dump_dir):
    """Whether XLA:CPU runs `hlo_pass` on a small program with an optimization barrier (from its pass dumps)."""
    def f(x):
        a, b = jax.lax.optimization_barrier((x * 2, x + 1))
        return a @ b
    jax.jit(f).lower(jax.numpy.ones((8, 8))).compile(
        compiler_options={"xla_dump_to": str(dump_dir), "xla_dump_hlo_pass_re": ".*"})
    return any(f"after_{hlo_pass}" in name for name in os.listdir(dump_dir))


@pytest.mark.slow      # two TPU compilations: minutes on this CPU
@needs_libtpu
def test_a_two_host_and_a_one_host_slice_compile_their_records_without_the_xla_cpu_flags(tmp_path):
    """The tiny step compiled here for two hosts (v5e:2x4) and, as `--find_max_batch` compiles, in a fresh process
    for one (v5e:2x2): the records, a mesh over every chip of both hosts, XLA's convolutions for TPU.
    Rematerialised blocks leave optimization barriers, which the TPU compiler must expand itself: with the XLA:CPU
    flags that `rcot_jax` sets on import (and a spawned process inherits) they would reach it and fail ("opt-barrier
    is not implemented")."""
    if rcot_jax.NON_CPU_COMPILER_OPTIONS:    # the flags are in force for this process's CPU programs
        assert not _ran_on_cpu("cse_barrier_expander", tmp_path)
    config = _tiny()
    config.model.remat = "full"
    devices = aot.tpu_devices("v5e:2x4")
    config_2, lowered = aot.lower_for(config, devices, 2)
    record, compiled = aot.compile_lowered(config_2, devices, lowered)
    assert set(record) | {"topology"} == set(aot.RECORD_KEYS)
    assert record["fits"] is True and record["conv_impl"] == "xla"
    assert (record["chips"], record["hosts"], record["device_kind"], record["hbm_gb_per_chip"]) == \
        (8, 2, "TPU v5 lite", 16)
    assert record["global_batch"] == 16 and 0 < record["temp_gb_per_chip"] < 1 and record["tflop_per_chip_step"] > 0
    _check_spans_every_chip(compiled, devices, 2)
    # A `--records` file knows a compilation by its program: config fields the step does not read leave it.
    config.seed, config.num_train_steps, config.log_every_steps = 7, 9, 3
    assert aot.program_id(aot.lower_for(config, devices, 2)[1]) == aot.program_id(lowered)
    # `--find_max_batch` compiles each batch in a process of its own: the program this process lowers.
    program, fresh = aot.compile_in_fresh_process(config, "v5e:2x2", 2)
    assert program == aot.program_id(aot.lower_for(config, aot.tpu_devices("v5e:2x2"), 2)[1])
    assert set(fresh) | {"topology"} == set(aot.RECORD_KEYS) and fresh["fits"] is True
    assert (fresh["chips"], fresh["hosts"], fresh["global_batch"], fresh["conv_impl"], fresh["remat"]) == \
        (4, 1, 8, "xla", "full")
    assert fresh["tflop_per_chip_step"] == pytest.approx(record["tflop_per_chip_step"], rel=0.05)


@pytest.mark.slow
@needs_libtpu
def test_an_unknown_topology_is_one_line_naming_the_known_ones():
    result = subprocess.run([sys.executable, "-m", "rcot_jax.benchmark", "--mode=aot", "--topology=v5x:2x2",
                             "--config=configs/deblur.py:tiny"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("rcot_jax.benchmark: error: --topology=v5x:2x2: libtpu does not know it")
    assert "v5e:2x2" in last and "v6e:2x2" in last


def test_a_missing_libtpu_says_what_to_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else find_spec(name, *a))
    with pytest.raises(aot.AotError, match=r'libtpu, which is not installed: pip install -e "\.\[tpu-aot\]"'):
        aot.tpu_devices("v5e:2x2")


@pytest.mark.parametrize("largest,start", [(0, 3), (1, 1), (5, 3), (22, 3), (24, 3), (3, 3), (1024, 3), (7, 64)])
def test_max_batch_search_doubles_then_bisects(largest, start):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= largest

    assert aot.max_per_chip_batch(fits, start) == largest
    assert len(tried) == len(set(tried))           # no batch compiled twice
    if largest == 22:
        assert tried == [3, 6, 12, 24, 18, 21, 22, 23]


class _Lowered:
    """A lowered program as `aot.program_id` reads it: its text."""
    def __init__(self, text):
        self.text = text

    def as_text(self):
        return self.text


def test_a_search_resumes_from_its_records_file(tmp_path, monkeypatch):
    """`--records`: every compilation is appended; a second search of the same program and topology compiles
    nothing it already has, while another program (here another remat), another topology or another libtpu is
    compiled. (That the program, not the config's other fields, identifies a compilation: the TPU compilation test
    above.)"""
    compiled = []

    def fake_lower(config, devices, b):      # (per-chip batch in place of the config, program)
        return b, _Lowered(f"{config.model.remat} x{b}")

    def fake_compile(b, devices, lowered):
        compiled.append(lowered.as_text())
        return {k: None for k in aot.RECORD_KEYS if k != "topology"} | {"per_chip_batch": b, "fits": b <= 5}, None

    monkeypatch.setattr(aot, "tpu_devices", lambda topology: ["chip"] * 4)
    monkeypatch.setattr(aot, "lower_for", fake_lower)
    monkeypatch.setattr(aot, "compile_lowered", fake_compile)
    path = str(tmp_path / "records.jsonl")
    config = _tiny()
    first = aot.aot_record(config, "v5e:2x2", 3, find_max_batch=True, records_path=path)
    assert first["max_per_chip_batch"] == 5 and compiled == ["none x3", "none x6", "none x4", "none x5"]
    assert aot.aot_record(config, "v5e:2x2", 3, find_max_batch=True, records_path=path) == first
    assert len(compiled) == 4
    config.precision = "bf16"         # (the fake lowering ignores it: the same programs) labels the record it reuses
    assert aot.aot_record(config, "v5e:2x2", 3, records_path=path)["precision"] == "bf16" and len(compiled) == 4
    config.model.remat = "full"
    aot.aot_record(config, "v5e:2x2", 3, records_path=path)
    aot.aot_record(config, "v6e:2x2", 3, records_path=path)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.99")
    aot.aot_record(config, "v6e:2x2", 3, records_path=path)
    assert compiled[4:] == ["full x3"] * 3 and len(open(path).readlines()) == 7


def test_a_records_file_that_is_not_one_names_its_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"program": "p", "libtpu": "0", "topology": "v5e:2x2"}\n')
    with pytest.raises(aot.AotError, match=rf"--records={path}, line 1: not a record of --mode=aot \(KeyError"):
        aot.read_records(str(path))
    path.write_text('{"topology": "v5e:2x2"')       # a line cut short
    with pytest.raises(aot.AotError, match=r"line 1: not a record"):
        aot.read_records(str(path))
    old = {k: 0 for k in aot.RECORD_KEYS} | {"config_hash": "c"}      # written before records had programs
    path.write_text(json.dumps(old) + "\n\n" + json.dumps(old | {"program": "p", "libtpu": "0"}) + "\n")
    assert list(aot.read_records(str(path))) == [("p", "0", 0)]


def test_the_planning_tables_row_is_every_tasks_default():
    """README's planning table compiles configs/benchmark.py:a only: each task's default differs from it in its data
    and in its schedule's length, which changes two constants of the step and nothing it holds (lowered for v5e:2x2,
    every default gave (a)'s program once these were set to (a)'s: experiments/benchmarks.md)."""
    def flat(tree, prefix=""):
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return out

    paper = flat(benchmark.get_config("a").to_dict())
    for task in configs.TASKS:
        default = flat(importlib.import_module(f"rcot_jax.configs.{task}").get_config().to_dict())
        differ = {k for k in paper.keys() | default.keys() if paper.get(k) != default.get(k)}
        assert differ <= {"data.task", "num_train_steps", "optim.decay_every_steps"}, (task, differ)
