"""Paths as users type them: `~` and environment variables expanded once, where a flag or config key is read.

A shell leaves `~` unexpanded after `=` (`--data_dir=~/rcot_data`), and a config file or a notebook passes the
string as written; without this a literal `~` folder appears beside the command, or a path is not found.
"""
import os
import sys

from absl import flags

# The keys of config.data that hold paths, expanded by the data pipeline (`config.init_from` is expanded by
# `weights.checkpoints.checkpoint_dir`, which reads it).
DATA_KEYS = ("train_dir", "eval_dir", "degraded_dir", "target_dir", "file_list", "eval_degraded_dir",
             "eval_target_dir", "data_dir")


def expand(path):
    """`path` with `~` and `$VARIABLE`s expanded ('' and None as they are)."""
    return os.path.expanduser(os.path.expandvars(path)) if path else path


def expand_data_paths(data_config):
    """A copy of `config.data` with its path keys `expand`ed."""
    data_config = data_config.copy_and_resolve_references()
    for key in DATA_KEYS:
        data_config[key] = expand(data_config[key])
    return data_config


class _PathParser(flags.ArgumentParser):
    syntactic_help = "a path (~ and $VARIABLES expanded)"

    def parse(self, argument):
        return expand(argument)

    def flag_type(self):
        return "path"


def DEFINE_path(name, default, help, multi=False, **kwargs):   # noqa: N802 - absl's naming
    """A string flag whose value is `expand`ed as it is parsed (several values with `multi`). It belongs to the
    calling module, as absl's own DEFINEs do, so that module's `--help` lists it."""
    caller = sys._getframe(1).f_globals["__name__"]
    kwargs.setdefault("module_name", sys.argv[0] if caller == "__main__" else caller)
    if multi:
        return flags.DEFINE_multi(_PathParser(), flags.ArgumentSerializer(), name, default, help, **kwargs)
    return flags.DEFINE(_PathParser(), name, default, help, **kwargs)
