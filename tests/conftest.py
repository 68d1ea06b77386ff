import importlib.metadata
import os

import pytest

# Before JAX initialises its backend: 8 fake CPU devices, unoptimised machine code (the suite's time is mostly XLA
# compiling programs it runs a few times: experiments/benchmarks.md#test-suite), with jaxlib 0.10 from XLA:CPU's older
# emitters, which compile faster at that level (jaxlib 0.12 does not know the flag, and XLA aborts on one), and the
# persistent compilation cache.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if importlib.metadata.version("jaxlib").startswith("0.10."):
    _FAST_COMPILE += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {_FAST_COMPILE}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (subprocesses, several processes, the notebook, runs "
                                       "of several launches), TPU compilations and the Restormer's polymorphic "
                                       "export; the fast tier is `-m \"not slow\"`")


# Test files whose tests share compiled programs and session fixtures (the run loop's config and saved run; the
# float64 start and reference steps; the tiny maps' parameters and restorers; the initialisers and steps of the
# seed and sweep tests). With `-n N` (xdist's `--dist load`), each group runs on one worker, which traces them once
# and compiles them once, instead of two workers compiling the same programs at the same time; the groups go first.
GROUPS = {"test_train.py": "loop", "test_checkpointing.py": "loop", "test_workdir.py": "loop",
          "test_benchmark.py": "loop", "test_parallel.py": "float64", "test_accumulate.py": "float64",
          "test_models.py": "maps", "test_precision.py": "maps", "test_export.py": "maps",
          "test_state.py": "states", "test_steps.py": "states", "test_ablate.py": "states"}


@pytest.hookimpl(optionalhook=True)        # a hook of pytest-xdist, which a run without it lacks
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):
        """xdist's load balancing of single tests, with the files of a group as one unit, sent first."""
        def _split_scope(self, nodeid):
            return GROUPS.get(nodeid.split("::")[0].rpartition("/")[2], nodeid)

    return Grouped(config, log)


@pytest.fixture(scope="session")
def float64_runs():
    """`fakes.float64_start()` and two steps of the plain step on one device from it, for each Fourier variant:
    (config, state, batch, {variant: fakes.run_steps(...)}), float64."""
    import functools
    import jax
    from fakes import float64_start, run_steps
    from rcot_jax import steps

    with jax.enable_x64(True):
        config, state, batch = float64_start()
        runs = {}
        for variant in ("paper", "official"):
            cfg = config.copy_and_resolve_references()
            cfg.loss.fourier_variant = variant
            runs[variant] = run_steps(jax.jit(functools.partial(steps.train_step, config=cfg)), state, batch, 2)
    return config, state, batch, runs


@pytest.fixture(scope="session")
def tiny_map():
    """(T, its initial parameters) of the tiny MPRNet denoising config: the map the restore tests run."""
    import jax
    from rcot_jax import models
    from rcot_jax.configs import denoise
    from rcot_jax.state import init_state

    c = denoise.get_config("tiny")
    c.model.backbone = "mprnet"
    t_model, _ = models.build_models(c)
    return t_model, init_state(c, jax.random.key(0)).t_params


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory):
    """A run directory as a launch of `fakes.loop_config()` (tiny deblurring, MPRNet map) leaves it before its first
    step: config.json, its history, and checkpoint 0 of the initial state (no training). Tests must leave it as
    it is."""
    from fakes import loop_config
    from rcot_jax import workdir as workdir_lib
    from rcot_jax.checkpointing import Checkpointer
    from rcot_jax.data import pipeline
    from rcot_jax.state import init_state, seed_keys

    config, workdir = loop_config(), tmp_path_factory.mktemp("saved_run")
    ckpt = Checkpointer(str(workdir / workdir_lib.CHECKPOINTS), config.keep_checkpoints)
    ckpt.save(0, init_state(config, seed_keys(config.seed)[0]), iter(pipeline.train_dataset(config)))
    ckpt.wait()
    ckpt.close()
    workdir_lib.record_config(str(workdir), config, first_step=0)
    return workdir
