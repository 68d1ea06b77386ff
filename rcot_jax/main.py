"""Train or evaluate RCOT: `python -m rcot_jax.main --config=configs/deblur.py:quick --workdir=DIR`.

Config overrides: `--config.optim.lr_map=1e-4`, `--config.data.noise_sigma=50`, ... On a TPU pod (or a SLURM or
Open MPI job) run the same command on every host; elsewhere add --coordinator_address, --num_processes and
--process_id.
"""
import logging as std_logging
import os
import sys

import jax
from absl import app, flags, logging
from jax._src import clusters
from ml_collections import config_flags

from rcot_jax import configs, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/<task>.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, samples and eval results.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train: train (resuming) and evaluate; eval: evaluate the "
                  "latest checkpoint on the held-out set.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed():
    """Multi-process runs connect before anything touches the devices: with explicit flags, or wherever JAX's
    own cluster detection finds several processes (a TPU pod slice or multislice, SLURM, Open MPI, an indexed
    Kubernetes job); `jax.distributed.initialize()` then reads the topology itself."""
    if FLAGS.coordinator_address or FLAGS.num_processes:
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    elif _detected_process_count() > 1:
        jax.distributed.initialize()


def _detected_process_count():
    """Processes of the cluster that `jax.distributed.initialize()` would detect (its candidates, in its order), 1
    outside any. A lone process (a one-host TPU VM, one SLURM task) stays out of the distributed system, which would
    only add a coordinator and its port. Reads environment variables and the TPU VM's metadata, not the devices."""
    env = next((env for env in clusters.ClusterEnv._cluster_types  # JAX has no public detection API
                if not env.opt_in_only_method and env.is_env_present()), None)
    return env.get_process_count() if env else 1


class _QuietCheckpointing(std_logging.Filter):
    """Orbax narrates every save at INFO; keep its warnings and errors only."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietCheckpointing())
    _maybe_initialize_distributed()
    logging.info("JAX %s, backend %s: process %d of %d, %d local / %d global devices", jax.__version__,
                 jax.default_backend(), jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
    logging.info("Config:\n%s", FLAGS.config)
    if FLAGS.mode == "train":
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main, argv=configs.resolve_argv(sys.argv))
