"""Official RCOT weights in and out.

  # an official checkpoint (the trainer's {'epoch', 'Tnet', 'Fnet'}, a state dict, .safetensors) -> a run
  # (checkpoints/0 and config.json, as a training launch writes them)
  python -m rcot_jax.convert --checkpoint=model.pth --config=configs/derain.py --workdir=W
  python -m rcot_jax.main --config=configs/derain.py --workdir=W --mode=eval     # evaluate it
  python -m rcot_jax.restore --workdir=W --input=photos/ --output=restored/      # restore with it
  python -m rcot_jax.main --config=configs/derain.py --workdir=W2 --config.init_from=W   # fine-tune from it
  # the latest checkpoint of a run -> official state dicts: model.pth (T_net) and model_Fnet.pth (F_net)
  python -m rcot_jax.convert --export=model.pth --config=configs/derain.py --workdir=W

The config must describe the checkpoint's networks (`model.backbone`, widths, `data.patch_size` for the
critic; `model.critic_fc_features=2048` with patch 256 for the MPRNet file's critic). A map-only checkpoint
gets a freshly initialised critic.
"""
import os

import jax
from absl import app, flags, logging

from rcot_jax import app as rcot_app
from rcot_jax import paths
from rcot_jax import workdir as workdir_lib
from rcot_jax.checkpointing import Checkpointer
from rcot_jax.data import pipeline
from rcot_jax.state import create_train_state
from rcot_jax.weights import checkpoints, files

FLAGS = flags.FLAGS


def _define_flags():
    rcot_app.define_config("Config describing the networks (configs/<task>.py[:variant]).")
    paths.DEFINE_path("workdir", None, "Run directory to write (import) or read (export).")
    paths.DEFINE_path("checkpoint", [], "Official checkpoint file(s) to import (map and critic).", multi=True)
    paths.DEFINE_path("export", None, "Write the workdir's latest checkpoint as official state dicts: this path "
                      "(.pth/.pt or .safetensors) for T_net and <stem>_Fnet<ext> for F_net.")
    rcot_app.define_jax_flags()
    flags.mark_flags_as_required(["config", "workdir"])


def import_official(config, checkpoint_files, workdir):
    t_params, f_params = checkpoints.official_to_params(config, checkpoint_files)
    if f_params is None:
        logging.warning("%s holds no critic; F is freshly initialised", ", ".join(checkpoint_files))
    state = checkpoints.state_from_params(config, t_params, f_params)
    ckpt = Checkpointer(os.path.join(workdir, workdir_lib.CHECKPOINTS), config.keep_checkpoints)
    try:
        if ckpt.latest_step() is not None:
            raise FileExistsError(f"{ckpt.directory} already holds checkpoints; convert into a new workdir")
        ckpt.save(0, state, iter(pipeline.train_dataset(config)))
        ckpt.wait()
    finally:
        ckpt.close()
    # A complete run: restore --workdir, --mode=eval and init_from read its config as a training launch wrote it.
    workdir_lib.record_config(workdir, config, first_step=0)
    logging.info("Wrote %s/0 and %s", ckpt.directory, os.path.join(workdir, workdir_lib.CONFIG))


def export_official(config, workdir, path):
    abstract = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0)))
    t_sd, f_sd = checkpoints.params_to_official(config, checkpoints.init_from(workdir, abstract))
    stem, ext = os.path.splitext(path)
    for target, sd in ((path, t_sd), (f"{stem}_Fnet{ext}", f_sd)):
        files.write(target, sd)
        logging.info("Wrote %s (%d tensors)", target, len(sd))


def main(argv):
    if bool(FLAGS.export) == bool(FLAGS.checkpoint):
        raise app.UsageError("give either --checkpoint (import) or --export (export)")
    if FLAGS.export:
        export_official(FLAGS.config, FLAGS.workdir, FLAGS.export)
    else:
        import_official(FLAGS.config, FLAGS.checkpoint, os.path.abspath(FLAGS.workdir))


if __name__ == "__main__":
    rcot_app.run(main, "rcot_jax.convert", _define_flags)
