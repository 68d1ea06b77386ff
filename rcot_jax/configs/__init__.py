"""The task configs, installed with the package: `--config=configs/<task>.py[:variant]` finds them from any
directory (a relative `configs/...` path that does not exist where the program runs is looked up here);
`from rcot_jax.configs import deblur` in Python."""
import os
import re

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
TASKS = ("deblur", "denoise", "derain", "dehaze", "sr", "lowlight", "allinone")


def resolve_path(path):
    """`path[:variant]` with a relative `configs/<file>` that is absent from the current directory pointed
    at this package's file of that name; any other path unchanged."""
    file, colon, variant = path.partition(":")
    parts = os.path.normpath(file).split(os.sep)
    packaged = os.path.join(CONFIG_DIR, *parts[1:])
    if parts[0] == "configs" and len(parts) > 1 and not os.path.exists(file) and os.path.isfile(packaged):
        return packaged + colon + variant
    return path


def resolve_argv(argv, name="config"):
    """argv with the value of `--<name>=PATH` or `--<name> PATH` passed through `resolve_path`."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        match = re.fullmatch(rf"(--?{name}=)(.*)", arg, re.DOTALL)
        if match:
            argv[i] = match[1] + resolve_path(match[2])
        elif re.fullmatch(rf"--?{name}", arg) and i + 1 < len(argv):
            argv[i + 1] = resolve_path(argv[i + 1])
    return argv
