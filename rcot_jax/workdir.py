"""A run directory: the name of everything in it, and its record of its launches.

  config.json             the latest launch's resolved config
  config_history/         <UTC time>-step<N>.json: every launch's config, N the step it started from
  checkpoints/<step>/     Orbax checkpoints (rcot_jax.checkpointing): `state` and the data iterator's `data`
  eval.jsonl              one line per evaluation (step, split, profile, scores)
  eval/<split>_<step>_<profile>/   `--mode=eval`'s per-image rows, summary and restored images
  samples/step_<N>.png    restorations of the held-out crops at each evaluation
  metrics.jsonl           training scalars, where TensorFlow (TensorBoard's writer) is not installed
  run.lock                held while a run uses the directory

It also holds the config that `--mode=eval` evaluates a workdir with (its run's config, command-line overrides on
top), and the lock that keeps a second run out of a workdir in use."""
import contextlib
import datetime
import hashlib
import json
import os
import pathlib
import socket

from absl import logging

import ml_collections

CONFIG = "config.json"
LOCK = "run.lock"
HISTORY = "config_history"
CHECKPOINTS = "checkpoints"
EVAL_LOG = "eval.jsonl"
METRICS_LOG = "metrics.jsonl"
SAMPLES = "samples"


def eval_dir(workdir, split, step, profile):
    """Where `--mode=eval` writes the results of one split, step and metric profile."""
    return os.path.join(workdir, "eval", f"{split}_{step}_{profile}")


def sample_path(workdir, step):
    return os.path.join(workdir, SAMPLES, f"step_{step:07d}.png")
# Keys that decide the shapes of the checkpointed state: evaluating a run with other values cannot restore it.
STATE_KEYS = ("model", "data.patch_size")


def config_hash(config):
    """12 hex digits that identify a config (sha256 of its sorted JSON)."""
    return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:12]


def write_atomic(path, write):
    """write(tmp) then rename onto `path`: readers never see a partial file, and a failed write leaves `path` as it
    was and no temporary file."""
    tmp = f"{path}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def record_config(workdir, config, first_step, now=None):
    """Writes this launch's config as `config.json` and into the dated history."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    text = config.to_json_best_effort(indent=2)
    os.makedirs(os.path.join(workdir, HISTORY), exist_ok=True)
    dated = os.path.join(workdir, HISTORY, f"{now:%Y%m%dT%H%M%SZ}-step{first_step}.json")
    for path in (dated, os.path.join(workdir, CONFIG)):
        write_atomic(path, lambda tmp: pathlib.Path(tmp).write_text(text))


def read_run_config(workdir):
    """The workdir's `config.json` as a dict, None if there is none."""
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _typed_like(reference, value):
    """JSON turned tuples into lists; give them back the config file's type."""
    return tuple(value) if isinstance(reference, tuple) and isinstance(value, list) else value


def _overlay(config, values, prefix=""):
    """Sets `values` (a nested dict) on `config` in place, for the keys the config has; returns the others."""
    unknown = []
    for key, value in values.items():
        if key not in config:
            unknown.append(prefix + key)
        elif isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, dict):
            unknown += _overlay(config[key], value, f"{prefix}{key}.")
        else:
            config[key] = _typed_like(config[key], value)
    return unknown


def get_key(tree, dotted):
    """tree['a']['b'] for dotted 'a.b' (a ConfigDict or the dict of a config.json)."""
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def _as_json(value):
    """`value` as config.json holds it (tuples as lists, ConfigDicts as dicts)."""
    return json.loads(json.dumps(value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value))


def _changes_state(key):
    return any(key == k or key.startswith(k + ".") for k in STATE_KEYS)


def eval_config(config, run_config, overrides):
    """The run's config (`run_config`: its config.json) with the command-line `overrides` ({dotted key: value})
    on top; the config file's `config` gives the types, and the values of keys the run's config lacks. Raises
    ValueError naming an override that changes the shapes of the checkpointed state. Returns (config, the
    run's keys that this version does not know)."""
    merged = ml_collections.ConfigDict(config.to_dict())
    unknown = _overlay(merged, run_config)
    for key, value in overrides.items():
        parent, _, leaf = key.rpartition(".")
        (get_key(merged, parent) if parent else merged)[leaf] = value
        if _changes_state(key) and _as_json(value) != get_key(run_config, key):
            raise ValueError(f"--config.{key}={value!r}: the run in this workdir was trained with {key}="
                             f"{get_key(run_config, key)!r}; its checkpoint restores only with the same value")
    return merged, unknown


def changed_keys(config, reference, prefix=""):
    """{dotted key: value} of the leaves where `config` differs from `reference` (both ConfigDicts)."""
    changed = {}
    for key in config:
        value, ref = config[key], (reference[key] if key in reference else None)
        if isinstance(value, ml_collections.ConfigDict) and isinstance(ref, ml_collections.ConfigDict):
            changed.update(changed_keys(value, ref, f"{prefix}{key}."))
        elif _as_json(value) != _as_json(ref):
            changed[prefix + key] = value
    return changed


def _flat(tree, prefix=""):
    """{dotted key: leaf} of a nested dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def check_relaunch(config, workdir):
    """A launch on a workdir that already holds a run: refuses (ValueError) where it changes keys that fix the
    checkpoint's shapes, naming them; warns where it changes the task or data keys (the launch's config is recorded
    in `config_history/` with the others). Nothing to check in a new workdir."""
    run_config = read_run_config(workdir)
    if run_config is None:
        return
    before, now = _flat(run_config), _flat(_as_json(config))
    changed = {k: (before.get(k), v) for k, v in now.items() if k in before and before[k] != v}
    state = {k: v for k, v in changed.items() if _changes_state(k)}
    if state:
        raise ValueError(f"{workdir} holds a run with other model keys: " + ", ".join(
            f"config.{k}={new!r} (the run's: {old!r})" for k, (old, new) in state.items())
            + "; its checkpoints restore only with the run's values: relaunch with them, or use a new workdir")
    task = {k: v for k, v in changed.items() if k.startswith("data.")}
    if task:
        logging.warning("This launch changes the task or data keys of the run in %s: %s (every launch's config is "
                        "in %s/)", workdir, ", ".join(f"{k}={new!r} (was {old!r})" for k, (old, new) in
                                                      task.items()), os.path.join(workdir, HISTORY))


class WorkdirLocked(RuntimeError):
    """Another live run owns the workdir."""


def _owner(path):
    try:
        with open(path) as f:
            pid, _, host = f.read().strip().partition("@")
        return int(pid), host
    except (OSError, ValueError):
        return None, ""      # unreadable or half-written: treated as stale


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:    # exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def locked(workdir):
    """Holds `workdir/run.lock` (pid@host) while the block runs. A lock held by a live process makes the run exit
    at once naming the owner; a stale one (a dead process on this host) is taken over with a warning; one from
    another host is left alone (its process cannot be checked from here: delete the file if that run is over)."""
    os.makedirs(workdir, exist_ok=True)
    path, me = os.path.join(workdir, LOCK), f"{os.getpid()}@{socket.gethostname()}"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid, host = _owner(path)
            if pid is not None and (host != socket.gethostname() or _alive(pid)):
                raise WorkdirLocked(f"{workdir} is in use by process {pid} on {host} (lock {path}); wait for it, "
                                    "or delete the lock if that run is over") from None
            logging.warning("Taking over the stale lock %s of process %s on %s (no longer running)", path, pid,
                            host or "?")
            os.remove(path)
    with os.fdopen(fd, "w") as f:
        f.write(me)
    try:
        yield
    finally:
        if _owner(path)[0] == os.getpid():
            os.remove(path)
