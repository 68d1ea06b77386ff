"""Prepare one of the paper's datasets from its authors' files:
`python -m rcot_jax.prepare --dataset=gopro --manual_dir=DIR --data_dir=DIR`, then train on it with
`--config.data.source=tfds --config.data.name=gopro --config.data.data_dir=DIR`. Layouts: docs/data.md, and
`rcot_jax.data.catalog.LAYOUTS`.
"""
from absl import flags, logging

from rcot_jax import app as rcot_app
from rcot_jax import paths
from rcot_jax.data import builders, catalog

FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_enum("dataset", None, list(catalog.LAYOUTS), "The dataset to prepare.")
    paths.DEFINE_path("manual_dir", None, "The folder holding the downloaded dataset, as its layout expects.")
    paths.DEFINE_path("data_dir", None, "Where prepared datasets live (the training config's data.data_dir).")
    paths.DEFINE_path("file_list", "", "A text file naming the training images to take (one degraded image per line, "
                      "e.g. the official data_dir/rainy/rainTrain.txt); '' = every pair found.")
    flags.DEFINE_enum("bad_files", "error", ["error", "skip"], "Unreadable, unmatched or mis-sized files: stop with "
                      "an error naming them, or skip them (logged).")
    flags.mark_flags_as_required(["dataset", "manual_dir", "data_dir"])


def main(argv):
    path = builders.prepare(FLAGS.dataset, FLAGS.manual_dir, FLAGS.data_dir, FLAGS.bad_files, FLAGS.file_list)
    logging.info("Prepared %s in %s; train with --config.data.source=tfds --config.data.name=%s "
                 "--config.data.data_dir=%s", FLAGS.dataset, path, FLAGS.dataset, FLAGS.data_dir)


if __name__ == "__main__":
    rcot_app.run(main, "rcot_jax.prepare", _define_flags)
