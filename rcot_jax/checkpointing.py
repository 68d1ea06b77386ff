"""Checkpoints: the train state and the data iterator's position, saved together by Orbax.

Layout: `<workdir>/checkpoints/<step>/{state, data}`. Saves are asynchronous (training continues while the
arrays are written) and atomic: Orbax writes into a temporary directory and renames it when complete, so a
run killed mid-save leaves the previous checkpoints intact and the partial one is never restored.
"""
import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the last `keep` checkpoints of one run in `directory`."""

    def __init__(self, directory, keep):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True))

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step, state, data_iterator):
        """Starts an asynchronous save (waiting for the previous one first); the iterator's position is read
        now, before training moves on."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)), force=True)

    def restore(self, step, abstract_state, data_iterator):
        """The state saved at `step` (placed as `abstract_state`'s shardings); restores the iterator in place."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(data_iterator)))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"checkpoint {self.directory}/{step} does not match the current config (model, "
                             f"patch size, optimiser or data pipeline changed?): {e}") from e
        return restored.state

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()


def abstract_like(state, sharding):
    """ShapeDtypeStructs of `state` placed with `sharding`: the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
