"""Train or evaluate RCOT: `python -m rcot_jax.main --config=configs/deblur.py:quick --workdir=DIR`.

Config overrides: `--config.optim.lr_map=1e-4`, `--config.data.noise_sigma=50`, ... `--mode=eval` evaluates
the workdir's latest checkpoint with the run's own config (its config.json; overrides on top). On a TPU pod (or
a SLURM or Open MPI job) run the same command on every host; elsewhere add --coordinator_address,
--num_processes and --process_id.
"""
import difflib
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rcot_jax import app as rcot_app
from rcot_jax import configs, paths

# TensorFlow only writes TensorBoard files here: keep its start-up notices (oneDNN, CUDA probing) off the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/<task>.py[:variant]); with "
                                "--mode=eval optional (the run's config.json; a config file adds overrides).",
                                lock_config=True)
paths.DEFINE_path("workdir", None, "Directory for checkpoints, logs, samples and eval results.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train: train (resuming) and evaluate; eval: evaluate the "
                  "latest checkpoint on the held-out set, with the workdir's config.json.")
flags.DEFINE_string("compilation_cache", os.environ.get("RCOT_JAX_COMPILATION_CACHE", ""),
                    "Persistent XLA compilation cache directory, so a resumed run or --mode=eval compiles in "
                    "seconds; '' = the user cache directory (~/.cache/rcot_jax/xla), 'off' = none. Default from "
                    "$RCOT_JAX_COMPILATION_CACHE.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.mark_flags_as_required(["workdir"])

# The keys `--help` shows, with their defaults and the comments of configs/default.py.
COMMON_KEYS = ("num_train_steps", "data.train_dir", "data.eval_dir", "data.noise_sigma", "data.batch_size",
               "data.patch_size", "data.paired_fraction", "model.backbone", "optim.lr_map", "optim.lr_critic",
               "precision", "eval_every_steps", "checkpoint_every_steps", "seed")


def _fail(message):
    rcot_app.fail("rcot_jax.main", message)


def _summary(path):
    """The first line of a config file's docstring, up to a colon."""
    with open(path) as f:
        match = re.search(r'"""(.+?)(\n|""")', f.read(), re.DOTALL)
    return match[1].split(": ")[0].strip().rstrip(".") if match else ""


def _key_comments():
    """{dotted key: its comment} from the first `c.KEY = VALUE  # comment` line (and the comment lines under it)
    of configs/default.py."""
    with open(os.path.join(configs.CONFIG_DIR, "default.py")) as f:
        found = re.finditer(r"^\s*c\.([\w.]+) = .*?#(.*)\n((?:\s+#.*\n)*)", f.read(), re.MULTILINE)
    comments = {}
    for m in found:
        more = " ".join(line.strip().lstrip("#").strip() for line in m[3].splitlines())
        comments.setdefault(m[1], f"{m[2].strip()} {more}".strip())
    return comments


def usage():
    """The --help text: how to run, the task configs and their variants, the most used keys, the flags."""
    from rcot_jax.configs import default
    paper, quick = default.get_config(""), default.get_config("quick")
    comments = _key_comments()

    def value(config, key):
        for part in key.split("."):
            config = config[part]
        return repr(config)

    tasks = "\n".join(f"  configs/{t}.py{' ' * (12 - len(t))}{_summary(os.path.join(configs.CONFIG_DIR, t + '.py'))}"
                      for t in configs.TASKS)
    keys = "\n".join(f"  --config.{k}  (default {value(paper, k)}, quick {value(quick, k)})"
                     + (f"\n      {comments[k]}" if comments.get(k) else "") for k in COMMON_KEYS)
    return f"""Train or evaluate RCOT (Residual-Conditioned Optimal Transport).

  python -m rcot_jax.main --config=configs/<task>.py[:variant] --workdir=DIR [--config.KEY=VALUE ...]
  python -m rcot_jax.main --workdir=DIR --mode=eval [--config=configs/<task>.py --config.KEY=VALUE ...]

Re-running the same command resumes; --mode=eval evaluates the latest checkpoint with the run's config.json.

Task configs (installed in {configs.CONFIG_DIR}; configs/<task>.py works from any directory, any other path to a
config file too):
{tasks}
  configs/benchmark.py   a | b | c: the step sizes of python -m rcot_jax.benchmark

Variants (configs/<task>.py:VARIANT):
  (none)   the paper's official settings: Restormer map, RMSprop, patch 128, batch 3, 51 epochs
  quick    a small MPRNet map that visibly restores within minutes on a laptop CPU
  tiny     3 steps of a tiny network, for tests

Most used keys (every key of the config can be overridden; see WORKDIR/config.json for all of them):
{keys}

Flags:
{FLAGS.module_help(sys.modules[__name__])}
"""


def _config_arg(argv):
    """The value of --config in argv, or None."""
    for i, arg in enumerate(argv):
        if arg.startswith(("--config=", "-config=")):
            return arg.split("=", 1)[1]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _check_config_file(argv):
    """Fails with a clear message for a --config file that does not exist."""
    path = _config_arg(argv)
    if path is not None and not os.path.isfile(path.split(":", 1)[0]):
        tasks = ", ".join(f"configs/{t}.py" for t in configs.TASKS)
        _fail(f"--config={path}: no such file (the task configs are {tasks}; a variant follows a colon: "
              "configs/deblur.py:quick)")


def _config_file_parser():
    from ml_collections.config_flags import config_flags as impl   # the parser is not exported
    return impl.ConfigFileFlagParser("config")


def _unknown_override(config, argv):
    """A message for the first `--config.KEY=...` whose KEY the config lacks, with the closest names; None if all
    exist."""
    for arg in argv:
        match = re.match(r"--?(?:no)?config\.([^=]+)", arg)
        if not match:
            continue
        node, parts = config, match[1].split(".")
        for i, part in enumerate(parts):
            if not hasattr(node, "keys") or part not in node:
                close = difflib.get_close_matches(part, list(node.keys()) if hasattr(node, "keys") else [], n=3)
                where = "config." + ".".join(parts[:i]) if i else "config"
                hint = f"; did you mean {', '.join('.'.join(parts[:i] + [c]) for c in close)}?" if close else ""
                return f"--config.{match[1]}: {where} has no key {part!r}{hint}"
            node = node[part]
    return None


def parse_flags(argv):
    """absl's flag parsing with one-line errors (no tracebacks), naming a config key that does not exist."""
    _check_config_file(argv)
    try:
        return FLAGS(argv)
    except Exception as e:   # the config file and overrides are user input: report, don't trace
        path = _config_arg(argv)
        if path is not None:
            try:
                base = _config_file_parser().parse(path)
                message = _unknown_override(base, argv)
                if message:
                    _fail(message)
            except SystemExit:
                raise
            except Exception:
                pass
        _fail(f"{rcot_app.flag_error_message(e)}\n"
              "(--help lists the task configs, their variants and the common keys)")


def _maybe_initialize_distributed():
    """Multi-process runs connect before anything touches the devices: with explicit flags, or wherever JAX's
    own cluster detection finds several processes (a TPU pod slice or multislice, SLURM, Open MPI, an indexed
    Kubernetes job); `jax.distributed.initialize()` then reads the topology itself."""
    import jax
    if FLAGS.coordinator_address or FLAGS.num_processes:
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    elif _detected_process_count() > 1:
        jax.distributed.initialize()


def _detected_process_count():
    """Processes of the cluster that `jax.distributed.initialize()` would detect (its candidates, in its order), 1
    outside any. A lone process (a one-host TPU VM, one SLURM task) stays out of the distributed system, which would
    only add a coordinator and its port. Reads environment variables and the TPU VM's metadata, not the devices."""
    from jax._src import clusters
    env = next((env for env in clusters.ClusterEnv._cluster_types  # JAX has no public detection API
                if not env.opt_in_only_method and env.is_env_present()), None)
    return env.get_process_count() if env else 1


def compilation_cache_dir(setting):
    """The persistent compilation cache directory for `--compilation_cache` (None: off). JAX's own
    JAX_COMPILATION_CACHE_DIR wins over the default."""
    if setting.lower() in ("off", "none", "0", "false"):
        return None
    if setting:
        return os.path.abspath(paths.expand(setting))
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "rcot_jax", "xla")


def _config_for_mode(config):
    """The config to run: the command line's, or for --mode=eval the workdir's config.json with the command
    line's overrides on top."""
    from rcot_jax import workdir as workdir_lib
    run_config = workdir_lib.read_run_config(FLAGS.workdir) if FLAGS.mode == "eval" else None
    if config is None:      # --config may be left out only where --mode=eval finds the run's config.json
        if run_config is None:
            raise ValueError("--config is required" + (
                f" (--workdir={FLAGS.workdir} has no config.json to evaluate with)" if FLAGS.mode == "eval" else
                ": the task config to train, e.g. --config=configs/deblur.py"))
        from rcot_jax.configs import default
        config = default.get_config("")
    if run_config is None:
        return config
    overrides = config_flags.get_override_values(FLAGS["config"]) if FLAGS.config is not None else {}
    config, unknown = workdir_lib.eval_config(config, run_config, overrides)
    logging.info("Evaluating with the run's config (%s)%s", os.path.join(FLAGS.workdir, workdir_lib.CONFIG),
                 f", overridden by {', '.join(f'{k}={v!r}' for k, v in overrides.items())}" if overrides else "")
    if unknown:
        logging.warning("Keys of the run's config that this version does not know, ignored: %s", ", ".join(unknown))
    return config


def _describe(config):
    """One line: the config file and the keys where `config` differs from that file's own values."""
    from rcot_jax import workdir as workdir_lib
    if FLAGS.config is None:     # --mode=eval without --config
        return f"Config {os.path.join(FLAGS.workdir, workdir_lib.CONFIG)} (the run's)"
    source = FLAGS["config"].config_filename
    changed = workdir_lib.changed_keys(config, _config_file_parser().parse(source))
    return f"Config {source}" + "".join(f"\n  {k} = {v!r}" for k, v in changed.items())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import jax
    cache = compilation_cache_dir(FLAGS.compilation_cache)
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
    from rcot_jax import evaluate, train
    from rcot_jax.checkpointing import CheckpointSaveError
    from rcot_jax.workdir import WorkdirLocked
    _maybe_initialize_distributed()
    logging.info("JAX %s, backend %s: process %d of %d, %d local / %d global devices; compilation cache: %s",
                 jax.__version__, jax.default_backend(), jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count(), cache or "off")
    try:
        config = _config_for_mode(FLAGS.config)
        logging.info("%s", _describe(config))
        if FLAGS.mode == "train":
            train.train_and_evaluate(config, FLAGS.workdir)
        else:
            evaluate.evaluate_checkpoint(config, FLAGS.workdir)
    except (ValueError, OSError, FloatingPointError, CheckpointSaveError, WorkdirLocked) as e:
        if FLAGS.traceback:
            raise
        _fail(f"{e}\n(--traceback shows where it was raised)")
    except KeyboardInterrupt as e:     # Ctrl-C: train.Interrupted once a checkpoint is saved, else before one
        print(f"rcot_jax.main: {e or 'interrupted (Ctrl-C); no new checkpoint was saved'}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    rcot_app.run(main, "rcot_jax.main", usage=usage, flags_parser=parse_flags)
