"""Train or evaluate RCOT: `python -m rcot_jax.main --config=configs/deblur.py:quick --workdir=DIR`.

Config overrides: `--config.optim.lr_map=1e-4`, `--config.data.noise_sigma=50`, ... `--mode=eval` evaluates
the workdir's latest checkpoint with the run's own config (its config.json; overrides on top). On a TPU pod (or
a SLURM or Open MPI job) run the same command on every host; elsewhere add --coordinator_address,
--num_processes and --process_id.
"""
import os
import re
import sys

from absl import flags, logging
from ml_collections import config_flags

from rcot_jax import app as rcot_app
from rcot_jax import configs, paths

FLAGS = flags.FLAGS

# The keys `--help` shows, with their defaults and the comments of configs/default.py.
COMMON_KEYS = ("num_train_steps", "data.train_dir", "data.eval_dir", "data.noise_sigma", "data.batch_size",
               "data.patch_size", "data.paired_fraction", "model.backbone", "optim.lr_map", "optim.lr_critic",
               "precision", "eval_every_steps", "checkpoint_every_steps", "seed")


def _define_flags():
    rcot_app.define_config("Training config file (configs/<task>.py[:variant]); with --mode=eval optional (the "
                           "run's config.json; a config file adds overrides).")
    paths.DEFINE_path("workdir", None, "Directory for checkpoints, logs, samples and eval results.")
    flags.DEFINE_enum("mode", "train", ["train", "eval"], "train: train (resuming) and evaluate; eval: evaluate the "
                      "latest checkpoint on the held-out set, with the workdir's config.json.")
    rcot_app.define_jax_flags(distributed=True)
    flags.mark_flags_as_required(["workdir"])


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
    changed = workdir_lib.changed_keys(config, rcot_app.config_file_parser().parse(source))
    return f"Config {source}" + "".join(f"\n  {k} = {v!r}" for k, v in changed.items())


def _errors():
    from rcot_jax.checkpointing import CheckpointSaveError
    from rcot_jax.workdir import WorkdirLocked
    return FloatingPointError, CheckpointSaveError, WorkdirLocked


def main(argv):
    from rcot_jax import evaluate, train
    config = _config_for_mode(FLAGS.config)
    logging.info("%s", _describe(config))
    if FLAGS.mode == "train":
        train.train_and_evaluate(config, FLAGS.workdir)
    else:
        evaluate.evaluate_checkpoint(config, FLAGS.workdir)


if __name__ == "__main__":
    rcot_app.run(main, "rcot_jax.main", _define_flags, usage=usage, errors=_errors,
                 help_hint="--help lists the task configs, their variants and the common keys",
                 interrupted="interrupted (Ctrl-C); no new checkpoint was saved")
