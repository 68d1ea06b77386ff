"""rcot_jax/app.py, what the six commands share: config-flag messages, the compilation cache's directory, and when
a command joins a distributed system (JAX's cluster detection, fed as on each kind of host; `initialize` is
recorded, never run). The commands' `--help` and one-line errors as users see them: tests/test_cli.py."""
import types

import jax
import pytest
from jax._src.clusters import cloud_tpu_cluster
from ml_collections import config_dict

from rcot_jax import app


def test_an_unknown_config_key_is_named_with_the_closest_ones():
    config = config_dict.ConfigDict({"model": {"backbone": "restormer", "cond_scale": 0.8}, "seed": 0})
    argv = ["prog", "--config=c.py", "--config.seed=1", "--config.model.bakbone=mprnet"]
    assert app._unknown_override(config, argv) == \
        "--config.model.bakbone: config.model has no key 'bakbone'; did you mean model.backbone?"
    assert app._unknown_override(config, ["prog", "--noconfig.sed"]) == \
        "--config.sed: config has no key 'sed'; did you mean seed?"
    assert app._unknown_override(config, ["prog", "--config.seed.x=1"]) == "--config.seed.x: config.seed has no key 'x'"
    assert app._unknown_override(config, argv[:3]) is None


def test_a_missing_config_file_names_the_task_configs(tmp_path):
    (tmp_path / "mine.py").write_text("")
    assert app._missing_config_file(["prog", f"--config={tmp_path}/mine.py:variant"]) is None
    assert app._missing_config_file(["prog", "--workdir=w"]) is None
    message = app._missing_config_file(["prog", "--config", "configs/deblr.py"])
    assert message.startswith("--config=configs/deblr.py: no such file (the task configs are configs/deblur.py, ")


def test_a_config_files_own_error_is_its_last_line():
    error = ValueError("flag --config=configs/deblur.py:tny: Traceback (most recent call last):\n  File ...\n"
                       "ValueError: configs/default.py: unknown variant 'tny'")
    assert app.flag_error_message(error) == \
        "flag --config=configs/deblur.py:tny: ValueError: configs/default.py: unknown variant 'tny'"
    assert app.flag_error_message(ValueError("flag --steps=x: not an integer\nmore")) == \
        "flag --steps=x: not an integer"


def test_the_compilation_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert app.compilation_cache_dir("") == str(tmp_path / "rcot_jax" / "xla")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/jax/own")
    assert app.compilation_cache_dir("") == "/jax/own"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert app.compilation_cache_dir("~/xla") == str(tmp_path / "xla")
    assert all(app.compilation_cache_dir(off) is None for off in ("off", "None", "0", "false"))


# When a command joins a distributed system.

_CLUSTER_VARIABLES = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "TPU_WORKER_ID", "TPU_SKIP_MDS_QUERY",
                      "MEGASCALE_COORDINATOR_ADDRESS", "MEGASCALE_NUM_SLICES", "MEGASCALE_SLICE_ID",
                      "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                      "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST", "JAX_COORDINATOR_ADDRESS")


@pytest.fixture
def initialize_calls(monkeypatch):
    from rcot_jax import app

    for name in _CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", False)
    monkeypatch.setattr(app, "FLAGS", types.SimpleNamespace(coordinator_address=None, num_processes=None,
                                                           process_id=None))
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))

    def run():
        app.initialize_distributed()
        return calls
    return run


def _tpu_vm(monkeypatch, **metadata):
    """A Cloud TPU VM whose metadata server holds `metadata` (GCE; a GKE node has none of these keys)."""
    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
    monkeypatch.setattr(cloud_tpu_cluster, "get_metadata",
                        lambda key: (metadata[key], 200) if key in metadata else ("", 404))


def _gce_tpu_vm(monkeypatch, workers, tpu_env=""):
    """A GCE TPU VM, worker 0 of `workers` in its slice (`tpu-env`: the multislice settings)."""
    _tpu_vm(monkeypatch, **{"agent-worker-number": "0", "worker-network-endpoints": ",".join(workers),
                            "tpu-env": tpu_env})


def test_a_single_host_stays_out_of_the_distributed_system(initialize_calls, monkeypatch):
    assert initialize_calls() == []                                   # CPU or GPU machine
    _gce_tpu_vm(monkeypatch, ["10.0.0.2"])
    assert initialize_calls() == []                                   # one-host TPU VM
    _tpu_vm(monkeypatch)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    assert initialize_calls() == []                                   # one-host GKE TPU node
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    for name, value in [("SLURM_STEP_NODELIST", "n1"), ("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0"),
                        ("SLURM_LOCALID", "0")]:
        monkeypatch.setenv(name, value)
    assert initialize_calls() == []                                   # one SLURM task


def test_every_multi_host_environment_jax_detects_initializes_with_its_own_settings(initialize_calls,
                                                                                     monkeypatch):
    _gce_tpu_vm(monkeypatch, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"])
    assert initialize_calls() == [{}]                                 # pod slice, from the metadata server
    _gce_tpu_vm(monkeypatch, ["10.0.0.2"], tpu_env="MEGASCALE_NUM_SLICES: '2'")
    assert initialize_calls() == [{}, {}]                             # multislice of one-host slices
    _tpu_vm(monkeypatch)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "pod-0,pod-1")
    monkeypatch.setenv("TPU_WORKER_ID", "1")
    assert initialize_calls() == [{}, {}, {}]                         # GKE


def test_slurm_tasks_and_explicit_flags_initialize(initialize_calls, monkeypatch):
    from rcot_jax import app

    for name, value in [("SLURM_JOB_ID", "7"), ("SLURM_STEP_NODELIST", "n[1-2]"), ("SLURM_NTASKS", "2"),
                        ("SLURM_PROCID", "1"), ("SLURM_LOCALID", "0")]:
        monkeypatch.setenv(name, value)
    assert initialize_calls() == [{}]
    monkeypatch.setattr(app, "FLAGS", types.SimpleNamespace(coordinator_address="h:1", num_processes=2,
                                                           process_id=1))
    assert initialize_calls()[-1] == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
