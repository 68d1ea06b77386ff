"""rcot_jax.checkpointing: an unreadable newest checkpoint falls back to the previous one (never to a fresh
start; the resumed launch reuses the step the first compiled); a failed save's reason in the system's words; the
reads and writes a failed restore or save abandons stay out of the log; small replicated arrays written whole.
A failed save stopping a run: tests/test_cli.py."""
import asyncio
import contextlib
import gc
import os
import shutil
import types

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakes import loop_config
from rcot_jax import checkpointing, parallel, train


@contextlib.contextmanager
def _traced():
    """The names of the functions JAX traces for compilation meanwhile."""
    names = []

    def listener(event, duration, **kwargs):
        if event.startswith("/jax/core/compile/"):
            names.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.slow      # three launches of the loop
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    config = loop_config()
    config.checkpoint_every_steps = 1
    config.keep_checkpoints = 5
    config.num_train_steps = 2
    train.train_and_evaluate(config, str(tmp_path))
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "checkpoints" / "2") for f in fs]
    biggest = max(files, key=os.path.getsize)
    os.truncate(biggest, os.path.getsize(biggest) // 2)
    config.num_train_steps = 3
    with _traced() as traced:
        state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 3
    assert "train_step" not in traced       # the launch before compiled the same step: this one reused it
    assert "checkpoint 2 is unreadable: moved to" in caplog.text and "resuming from checkpoint 1" in caplog.text
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2", "2.unreadable", "3"]
    shutil.rmtree(tmp_path / "checkpoints" / "1")
    for step in ("2", "3"):                              # nothing restores: an error, never a fresh start
        os.truncate(max([os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "checkpoints" / step) for f in fs],
                        key=os.path.getsize), 10)
    with pytest.raises(Exception, match="array"):
        train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("error", [
    OSError(27, "File too large"),
    ValueError("Error writing local file \"/r/checkpoints/4.orbax-checkpoint-tmp/state/d/1a\": File too large"),
    ValueError("Error writing local file \"/r/d/1a\": File too large [os_error_code='27'] "
               "[tensorstore_spec='{\"driver\":\"zarr\",\"chunks\":[1, 2]}']\nmore"),
    ValueError("INTERNAL: writing \"/r/d/1a\": File too large [source locations='tensorstore/kvstore/file.cc:1']")])
def test_a_failed_saves_reason_is_the_systems_words_whatever_the_writer_appends(error):
    assert checkpointing._reason(error) == "File too large"


def test_the_writes_a_failed_save_abandons_log_nothing_when_freed_and_other_asyncio_errors_still_do(caplog, tmp_path):
    checkpointing.Checkpointer(tmp_path / "checkpoints", keep=1, create=False)    # installs the filters
    writes = {}
    exec(compile("async def write(path):\n    raise OSError(27, 'File too large')\n",
                 "/site-packages/orbax/checkpoint/_src/serialization/fake.py", "exec"), writes)

    async def unrelated():
        raise ValueError("a bug elsewhere")

    loop = asyncio.new_event_loop()
    tasks = [loop.create_task(writes["write"]("/r/state/d/1a")), loop.create_task(unrelated())]
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    del tasks                # each task is freed with its exception never retrieved
    gc.collect()
    assert [r.exc_info[0] for r in caplog.records if "never retrieved" in r.getMessage()] == [ValueError]


def test_the_reads_a_failed_restore_abandons_report_nothing_when_freed_and_other_errors_still_do():
    seen = []
    hook = checkpointing._quiet_unraisable(seen.append)
    code = {}
    exec(compile("async def read():\n    pass\n", "/site-packages/orbax/checkpoint/_src/serialization/fake.py",
                 "exec"), code)

    async def unrelated():
        pass

    coroutines = code["read"](), unrelated()
    for coroutine in coroutines:      # the exception that closing an abandoned read raises, as Orbax words it
        hook(types.SimpleNamespace(exc_type=Exception, exc_value=Exception("Encountered error while reading array "
                                                                           "index"), object=coroutine))
        coroutine.close()
    hook(types.SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError("Event loop is closed"), object=None))
    assert [u.object for u in seen] == [coroutines[1]]


def test_a_replicated_state_is_saved_whole_without_a_program_per_replica_slice(tmp_path):
    """Orbax would write each replicated array in 8 slices, one per device, each slice's shape a program of its own
    to trace and compile (15 s at the tiny config's first save); arrays this small are written whole."""
    mesh = parallel.make_mesh(jax.devices()[:8])
    state = jax.device_put({"a": jnp.arange(40 * 56.).reshape(40, 56), "b": jnp.arange(24)}, parallel.replicated(mesh))
    with _traced() as traced:
        ckpt = checkpointing.Checkpointer(tmp_path / "checkpoints", keep=1)
        ckpt.save(0, state, iter(grain.MapDataset.range(4).to_iter_dataset()))
        ckpt.wait()
    assert traced == []
    restored = ckpt.restore(0, checkpointing.abstract_like(state, parallel.replicated(mesh)),
                            iter(grain.MapDataset.range(4).to_iter_dataset()))
    ckpt.close()
    jax.tree.map(np.testing.assert_array_equal, restored, state)
