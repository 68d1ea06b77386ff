"""What every command (`main`, `restore`, `convert`, `benchmark`, `ablate`, `prepare`) shares: `--config` paths
resolved from any directory, `--help` that prints the command's flags and exits 0, user errors (a bad value, a
missing or unreadable file) reported in one line, with `--traceback` for the whole traceback, and the INFO
narration of Orbax and TensorFlow Datasets kept out of the log."""
import logging as std_logging
import os
import sys

from absl import app, flags, logging

flags.DEFINE_boolean("traceback", False, "Show the full traceback of an error instead of its message.")

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")
# Bad values and bad files (WeightsError, ImageError are ValueErrors); missing, unreadable or unwritable paths.
USER_ERRORS = (ValueError, OSError)


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


def flag_error_message(error):
    """One line for a flag error: config_flags puts the whole traceback of a failing config file in it."""
    text = str(error).strip()
    if "Traceback (most recent call last)" not in text:
        return text.splitlines()[0]
    flag = text.splitlines()[0].rsplit(":", 2)[0]           # 'flag --config=configs/deblur.py:tny'
    return f"{flag}: {text.splitlines()[-1].strip()}"


def _parse(command):
    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except Exception as e:   # noqa: BLE001 - a config file's own error comes through the flag parser too
            fail(command, f"{flag_error_message(e)}\n(--help lists the flags)")
    return parse


def run(main, command, usage=None, flags_parser=None, errors=()):
    """absl's `app.run(main)` for `python -m <command>`, with the shared behaviour above; `errors` adds the
    command's own user-facing exception types."""
    from rcot_jax import configs
    argv = configs.resolve_argv(sys.argv)
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["traceback"])     # listed as its own
        print(usage() if usage else flags.FLAGS.main_module_help())
        sys.exit(0)

    def guarded(args):
        logging.get_absl_handler().addFilter(_QuietLibraries())
        try:
            return main(args)
        except USER_ERRORS + tuple(errors) as e:
            if flags.FLAGS.traceback:
                raise
            fail(command, f"{e}\n(--traceback shows where it was raised)")

    app.run(guarded, argv=argv, flags_parser=flags_parser or _parse(command))
