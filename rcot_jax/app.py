"""What every command (`main`, `restore`, `convert`, `benchmark`, `ablate`, `prepare`) shares, in one place:

- `--config`: one definition (`define_config`); paths like `configs/deblur.py` resolve from any directory; a missing
  file or an unknown `--config.KEY` is one line that names it (with the closest keys);
- `--compilation_cache` for the commands that compile (`define_jax_flags`), and, for the command that trains
  (`main`), the multi-process flags and `jax.distributed.initialize` wherever JAX's cluster detection finds several
  processes;
- `--help` that prints the command's flags and exits 0;
- user errors (a bad value, a missing or unreadable file) in one line, `--traceback` for the whole traceback, and
  Ctrl-C as one line and exit status 130;
- the INFO narration of Orbax and TensorFlow Datasets kept out of the log.
"""
import difflib
import logging as std_logging
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rcot_jax import paths

# TensorFlow (TensorBoard files, TFDS) is not what computes here: keep its start-up notices (oneDNN, CUDA probing)
# off the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

FLAGS = flags.FLAGS
flags.DEFINE_boolean("traceback", False, "Show the full traceback of an error instead of its message.")

_SHARED_FLAGS = ("traceback", "config", "compilation_cache", "coordinator_address", "num_processes", "process_id")
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")
# Bad values and bad files (WeightsError, ImageError are ValueErrors); missing, unreadable or unwritable paths.
USER_ERRORS = (ValueError, OSError)


def define_config(help_text, default=None):
    """The `--config` flag: a config file (configs/<task>.py[:variant]) and `--config.KEY=VALUE` overrides."""
    config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)


def define_jax_flags(distributed=False, cache_default=None):
    """`--compilation_cache`, and with `distributed` the flags of a multi-process run."""
    flags.DEFINE_string(
        "compilation_cache", os.environ.get("RCOT_JAX_COMPILATION_CACHE", "") if cache_default is None else
        cache_default, "Persistent XLA compilation cache directory, so a rerun compiles in seconds; '' = the user "
        "cache directory (~/.cache/rcot_jax/xla), 'off' = none. Default from $RCOT_JAX_COMPILATION_CACHE.")
    if distributed:
        flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
        flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
        flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")


def fail(command, message):
    """Exits with `message` on stderr, no traceback."""
    sys.exit(f"{command}: error: {message}")


class _QuietLibraries(std_logging.Filter):
    """Orbax narrates every save and restore at INFO and logs a failed save's traceback from each of its threads
    at ERROR: only its warnings are kept (a failed save is reported once, by the train loop). TensorFlow Datasets
    narrates preparing and loading at INFO, naming temporary folders: its warnings and errors are kept."""

    def filter(self, record):
        if f"{os.sep}orbax{os.sep}" in record.pathname:
            return record.levelno == std_logging.WARNING
        if f"{os.sep}tensorflow_datasets{os.sep}" in record.pathname:
            return record.levelno >= std_logging.WARNING
        return True


# Flags: one-line errors.

def flag_error_message(error):
    """One line for a flag error: config_flags puts the whole traceback of a failing config file in it."""
    text = str(error).strip()
    if "Traceback (most recent call last)" not in text:
        return text.splitlines()[0]
    flag = text.splitlines()[0].rsplit(":", 2)[0]           # 'flag --config=configs/deblur.py:tny'
    return f"{flag}: {text.splitlines()[-1].strip()}"


def _config_arg(argv):
    """The value of --config in argv, or None."""
    for i, arg in enumerate(argv):
        if arg.startswith(("--config=", "-config=")):
            return arg.split("=", 1)[1]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def config_file_parser():
    from ml_collections.config_flags import config_flags as impl   # the parser is not exported
    return impl.ConfigFileFlagParser("config")


def _missing_config_file(argv):
    """A message for a --config file that does not exist; None if it exists or is not given."""
    from rcot_jax import configs
    path = _config_arg(argv)
    if path is None or os.path.isfile(path.split(":", 1)[0]):
        return None
    tasks = ", ".join(f"configs/{t}.py" for t in configs.TASKS)
    return (f"--config={path}: no such file (the task configs are {tasks}; a variant follows a colon: "
            "configs/deblur.py:quick)")


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


def _flag_error(argv, error):
    """The one line for a failed parse: an unknown config key by name, else the parser's own message."""
    path = _config_arg(argv)
    if path is not None:
        try:
            message = _unknown_override(config_file_parser().parse(path), argv)
            if message:
                return message
        except Exception:    # noqa: BLE001 - the config file itself fails: the parser's message says how
            pass
    return flag_error_message(error)


def _parser(command, help_hint):
    def parse(argv):
        if "config" in FLAGS and (message := _missing_config_file(argv)):
            fail(command, message)
        try:
            return FLAGS(argv)
        except Exception as e:   # noqa: BLE001 - the config file and overrides are user input: report, don't trace
            fail(command, f"{_flag_error(argv, e)}\n({help_hint})")
    return parse


# JAX: the compilation cache and the distributed system.

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


def detected_process_count():
    """Processes of the cluster that `jax.distributed.initialize()` would detect (its candidates, in its order), 1
    outside any. A lone process (a one-host TPU VM, one SLURM task) stays out of the distributed system, which would
    only add a coordinator and its port. Reads environment variables and the TPU VM's metadata, not the devices."""
    from jax._src import clusters
    env = next((env for env in clusters.ClusterEnv._cluster_types  # JAX has no public detection API
                if not env.opt_in_only_method and env.is_env_present()), None)
    return env.get_process_count() if env else 1


def initialize_distributed():
    """Multi-process runs connect before anything touches the devices: with explicit flags, or wherever JAX's
    own cluster detection finds several processes (a TPU pod slice or multislice, SLURM, Open MPI, an indexed
    Kubernetes job); `jax.distributed.initialize()` then reads the topology itself."""
    import jax
    if FLAGS.coordinator_address or FLAGS.num_processes:
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    elif detected_process_count() > 1:
        jax.distributed.initialize()


def _start_jax():
    """The compilation cache and the distributed system, for the commands that define their flags."""
    import jax
    cache = compilation_cache_dir(FLAGS.compilation_cache)
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
    if "coordinator_address" in FLAGS:
        initialize_distributed()
    logging.info("JAX %s, backend %s: process %d of %d, %d local / %d global devices; compilation cache: %s",
                 jax.__version__, jax.default_backend(), jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count(), cache or "off")


def run(main, command, define_flags=None, usage=None, errors=(), help_hint="--help lists the flags",
        interrupted="interrupted (Ctrl-C)"):
    """absl's `app.run(main)` for `python -m <command>`, with the shared behaviour above. `define_flags`: defines
    the command's flags (only when it runs as a command, so importing its module defines none); `errors`: the command's
    own user-facing exception types, or a function that returns them (imported only when it runs); `interrupted`:
    the line for a Ctrl-C whose exception carries no message of its own."""
    from rcot_jax import configs
    if define_flags:
        define_flags()
    for name in _SHARED_FLAGS:      # defined here, listed by --help as the command's own
        if name in FLAGS:
            FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    argv = configs.resolve_argv(sys.argv)
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(usage() if usage else FLAGS.main_module_help())
        sys.exit(0)

    def guarded(args):
        logging.get_absl_handler().addFilter(_QuietLibraries())
        if len(args) > 1:
            raise app.UsageError(f"Unexpected arguments: {args[1:]}")
        try:
            if "compilation_cache" in FLAGS:
                _start_jax()
            return main(args)
        except Exception as e:   # noqa: BLE001 - re-raised unless it is a user error
            user_errors = USER_ERRORS + tuple(errors() if callable(errors) else errors)
            if not isinstance(e, user_errors) or FLAGS.traceback:
                raise
            fail(command, f"{e}\n(--traceback shows where it was raised)")
        except KeyboardInterrupt as e:  # Ctrl-C; a command that saved its work says so in the exception
            print(f"{command}: {e or interrupted}", file=sys.stderr)
            sys.exit(130)

    app.run(guarded, argv=argv, flags_parser=_parser(command, help_hint))
