"""Checkpoints: the train state and the data iterator's position, saved together by Orbax.

Layout: `<workdir>/checkpoints/<step>/{state, data}`. The state is saved replicated and restored onto whatever mesh
the resuming run has; the data position (`data/process_<i>-of-<n>.json`, one per process) restores on another
process count too, since every process is at the same global step (`_DataHandler`). Saves are asynchronous (training continues while the
arrays are written) and atomic: Orbax writes into a temporary directory and renames it when complete, so a
run killed mid-save leaves the previous checkpoints intact and the partial one is never restored. A save that
fails (a full disk, a read-only directory) raises `CheckpointSaveError` at the next `save`, `raise_if_failed` or
`wait`, after removing its partial directory.
"""
import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import sys
import time
import traceback
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the earlier ones are intact."""


class Checkpointer:
    """Keeps the last `keep` checkpoints of one run in `directory` (created on the first save unless `create`
    is False: `--mode=eval` only reads)."""

    def __init__(self, directory, keep, create=True):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, enable_async_checkpointing=True,
                                                 cleanup_tmp_directories=create),
            item_handlers={"state": _state_handler(), "data": _DataHandler()})
        self._saving = None    # the step of the save in flight
        self._failed = False   # a save failed: its partial directory is removed again on close
        _quiet_abandoned_io()

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step, state, data_iterator):
        """Starts an asynchronous save (waiting for the previous one first); the iterator's position is read
        now, before training moves on. Raises `CheckpointSaveError` if the previous save failed."""
        with _SaveFailure(self, step):
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(state), data=_DataSave(data_iterator)),
                force=True)
            self._saving = step

    def restore(self, step, abstract_state, data_iterator):
        """The state saved at `step` (placed as `abstract_state`'s shardings); restores the iterator in place."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(abstract_state, ocp.checkpoint_utils.construct_restore_args(
                    abstract_state)),
                data=_DataRestore(data_iterator)))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"checkpoint {self.directory}/{step} does not match the current config (model, "
                             f"patch size, optimiser or data pipeline changed?): {e}") from e
        return restored.state

    def restore_latest(self, abstract_state, data_iterator):
        """(step, state) of the newest checkpoint that restores. A newer one that fails while an older one restores
        is unreadable (truncated or corrupt files, not a config change): it is reported and moved aside to
        `<step>.unreadable`, and training goes on from the older one. If none restores, the newest's error is
        raised: never a silent fresh start."""
        failed = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self.restore(step, abstract_state, data_iterator)
            except Exception as e:     # tensorstore raises a bare Exception for unreadable data
                logging.warning("checkpoint %s/%d could not be restored: %s", self.directory, step,
                                str(e).splitlines()[0][:300])
                failed.append((step, e))
                continue
            for bad, _ in failed:
                aside = os.path.join(self.directory, f"{bad}.unreadable")
                if jax.process_index() == 0:
                    os.replace(os.path.join(self.directory, str(bad)), aside)
                logging.warning("checkpoint %d is unreadable: moved to %s; resuming from checkpoint %d", bad,
                                aside, step)
            if failed:
                multihost_utils.sync_global_devices("checkpoints moved aside")
                self.manager.reload()
            return step, state
        raise failed[0][1]

    def raise_if_failed(self):
        """Raises `CheckpointSaveError` if the save in flight has finished and failed."""
        if self._saving is not None and not self.manager.is_saving_in_progress():
            self.wait()

    def wait(self):
        with _SaveFailure(self, self._saving):
            self.manager.wait_until_finished()
        self._saving = None

    def close(self):
        self.manager.close()
        if self._failed and jax.process_index() == 0:
            _remove_partials(self.directory, settle_s=0.5)


# Orbax writes a replicated array in slices, one per replica, in parallel; each slice's shape compiles a program of
# its own, the first save of a launch compiling them all (measured on 8 CPU devices: the tiny config's state, 407
# arrays of 9 MB, 14.9 s for the first save against 1.0 s written whole; the paper's, 1,639 arrays of 574 MB, 46.7
# s against 14.6 s, and 10.6 s against 5.6 s for later saves). Arrays whose slices would be smaller are written
# whole, by one replica.
_MIN_SLICE_BYTES = 1 << 20


def _state_handler():
    """The state's handler: Orbax's standard one (the same files), its arrays sliced only above `_MIN_SLICE_BYTES`."""
    th = ocp.type_handlers
    scalars = th.ScalarHandler()
    return ocp.PyTreeCheckpointHandler(type_handler_registry=th.create_type_handler_registry(
        (int, scalars), (float, scalars), (bytes, scalars), (np.number, scalars), (np.ndarray, th.NumpyHandler()),
        (jax.Array, th.ArrayHandler(min_slice_bytes_for_replica_parallel=_MIN_SLICE_BYTES)),
        (str, th.StringHandler())))


class _DataHandler(grain.checkpoint.CheckpointHandler):
    """grain's iterator checkpoints, restorable on another process count.

    Each process saves its iterator's state. The pipeline gives process p the p-th share of every global batch,
    so after s steps every process's state is the same position (s batches of its share), whatever the process
    count: a run resumed on n processes, where no `process_<i>-of-<n>.json` was saved, takes the saved processes'
    common state. Where they differ (a state that is not a position alone), it refuses, naming the files."""

    def restore(self, directory, item=None, args=None):
        item = item or args.item
        index, count = jax.process_index(), jax.process_count()
        own = directory / f"process_{index}-of-{count}.json"
        if own.exists():
            return super().restore(directory, item, args)
        saved = sorted(directory.glob("process_*-of-*.json"))
        states = {path.read_text() for path in saved}
        if len(states) != 1:
            raise ValueError(f"{directory}: no data position for process {index} of {count}, and the "
                             f"{len(saved)} saved ones ({', '.join(p.name for p in saved)}) differ, so they cannot "
                             "be shared out on another process count")
        state = states.pop()
        item.set_state(json.loads(state) if isinstance(item, grain.DatasetIterator) else state.encode())
        item.start_prefetch()
        logging.info("data position restored from %s (saved on %d processes, resumed on %d)", saved[0], len(saved),
                     count)
        return item


@ocp.args.register_with_handler(_DataHandler, for_save=True)
@dataclasses.dataclass
class _DataSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(_DataHandler, for_restore=True)
@dataclasses.dataclass
class _DataRestore(ocp.args.CheckpointArgs):
    item: Any


class _SaveFailure:
    """Turns an error of the save in flight (or of starting the save of `step`) into one `CheckpointSaveError`
    naming the directory."""

    def __init__(self, checkpointer, step):
        self.checkpointer, self.step = checkpointer, step

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        ckpt = self.checkpointer
        if error is None or not isinstance(error, (OSError, ValueError, RuntimeError)):
            return False
        step = self.step if ckpt._saving is None else ckpt._saving
        ckpt._saving = None
        _remove_partials(ckpt.directory)
        ckpt._failed = True
        latest = ckpt.manager.latest_step()
        kept = f"the latest checkpoint is still {latest}" if latest is not None else "no checkpoint was written yet"
        raise CheckpointSaveError(f"saving checkpoint {step} to {ckpt.directory} failed, so training stopped "
                                  f"({kept}): {_reason(error)}") from None


def _reason(error):
    """The operating system's words for a failed write ('No space left on device'), whether Python or TensorStore
    raised it: TensorStore's messages end in bracketed tags (the os error code, the spec) that vary by version."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    message = str(error).splitlines()[0] if str(error) else repr(error)
    return re.sub(r" \[[\w ]+=.*$", "", message).rsplit(": ", 1)[-1]    # the tags: " [os_error_code='28'] [..."


def _remove_partials(directory, settle_s=0.0, limit_s=10.0):
    """Removes the temporary directories of failed saves. TensorStore writes of a failed save still in flight
    can recreate one after it is removed, so this repeats until none has appeared for `settle_s`."""
    start = quiet_since = time.monotonic()
    while True:
        partials = glob.glob(os.path.join(directory, "*.orbax-checkpoint-tmp*"))
        for partial in partials:
            shutil.rmtree(partial, ignore_errors=True)
        now = time.monotonic()
        quiet_since = now if partials else quiet_since
        if now - quiet_since >= settle_s or now - start > limit_s:
            return
        time.sleep(0.05)


def _quiet_abandoned_io():
    """Installs, once per process, the two filters for the noise of the reads and writes that Orbax abandons when
    a restore or a save fails, so that the failure's own error is the one message: the errors they raise when freed
    (`_quiet_unraisable`) and their tasks' unretrieved exceptions (`_abandoned_orbax_task`)."""
    if not getattr(sys.unraisablehook, "quiet_abandoned_io", False):
        sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
    asyncio_log = logging.getLogger("asyncio")
    if _abandoned_orbax_task not in asyncio_log.filters:
        asyncio_log.addFilter(_abandoned_orbax_task)


def _quiet_unraisable(hook):
    """An unraisable-exception hook that drops, one per pending read or write (hundreds of tracebacks around the
    one message that matters): the "Event loop is closed" errors which TensorStore's callbacks for the other writes
    of a failed save raise once Orbax has closed the save's event loop, and the errors which the other reads of a
    failed restore raise when their Orbax coroutines are freed unawaited."""
    def quiet(unraisable):
        closed_loop = unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
        code = getattr(unraisable.object, "cr_code", None)
        if not (closed_loop or (code is not None and "orbax" in code.co_filename)):
            hook(unraisable)
    quiet.quiet_abandoned_io = True
    return quiet


def _abandoned_orbax_task(record):
    """A logging filter for the "Task exception was never retrieved" errors of the other writes of a failed save:
    Orbax closes the save's event loop at the first error, which `CheckpointSaveError` reports, and each task or
    future it abandons logs its own copy when freed, whenever the garbage collector gets to it (often before the
    main thread has seen the failure). Such a record names Orbax: in the task's coroutine, the temporary
    directory in the error, or a frame of its traceback. Every other asyncio record passes."""
    message = record.getMessage()
    if "exception was never retrieved" not in message.split("\n", 1)[0]:
        return True
    frames = traceback.extract_tb(record.exc_info[2]) if record.exc_info else []
    return not ("orbax" in message or any("orbax" in frame.filename for frame in frames))


def abstract_like(state, sharding):
    """ShapeDtypeStructs of `state` placed with `sharding`: the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def restore_params(step_dir, target):
    """The parameters of one checkpoint (`<workdir>/checkpoints/<step>`): `target` is {"t_params": ...,
    "f_params": ...} of abstract arrays (ShapeDtypeStructs with shardings), or any subset of the saved state's
    top-level keys. Only those arrays are read: no optimiser state, no data iterator."""
    _quiet_abandoned_io()
    with ocp.PyTreeCheckpointer() as ckpt:
        return ckpt.restore(os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
