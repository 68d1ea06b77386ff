"""Data-parallel compilation of the per-device train step over a 1-D `data` mesh.

`compile_train_step(config, mesh)` returns `step(state, batch, rng) -> (state, metrics)` whichever wrapper
`config.parallel.wrapper` selects:
  'shard_map' (default): `jax.jit(jax.shard_map(...))`, state replicated, batch split along `data`, state donated;
  'pmap': `jax.pmap` over the mesh's devices with the same axis name, state broadcast in and out.
It accepts the state from `steps.create_train_state` or from its own previous call, a global batch of NumPy or
already-placed arrays whose leading size divides evenly over the mesh, and a `jax.random` key. The returned
state is replicated over the mesh and the metrics are global scalars.
"""
import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rcot_jax import steps

DATA_AXIS = "data"
WRAPPERS = ("shard_map", "pmap")


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named `data` over `devices` (default: all devices of all processes)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def _check_batch(batch, n_shards):
    sizes = {k: v.shape[0] for k, v in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch entries disagree on the batch size: {sizes}")
    size = next(iter(sizes.values()))
    if size % n_shards:
        raise ValueError(f"global batch size {size} (config.data.batch_size) is not divisible by the "
                         f"{n_shards} devices of the '{DATA_AXIS}' mesh axis")


def compile_train_step(config, mesh: Mesh):
    wrapper = config.parallel.wrapper
    step = functools.partial(steps.train_step, config=config, axis_name=DATA_AXIS)
    n = mesh.devices.size
    replicated = NamedSharding(mesh, P())

    if wrapper == "shard_map":
        # check_vma=False: the step reduces gradients itself (pmap semantics), see losses.py.
        sharded = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
                                        out_specs=(P(), P()), check_vma=False), donate_argnums=0)
        batch_sharding = NamedSharding(mesh, P(DATA_AXIS))

        def run(state, batch, rng):
            _check_batch(batch, n)
            return sharded(jax.device_put(state, replicated), jax.device_put(batch, batch_sharding),
                           jax.device_put(rng, replicated))
    elif wrapper == "pmap":
        mapped = jax.pmap(step, axis_name=DATA_AXIS, in_axes=(None, 0, None), out_axes=(None, None),
                          devices=list(mesh.devices.flat), donate_argnums=0)

        def run(state, batch, rng):
            _check_batch(batch, n)
            batch = jax.tree.map(lambda a: a.reshape(n, a.shape[0] // n, *a.shape[1:]), batch)
            return mapped(state, batch, rng)
    else:
        raise ValueError(f"config.parallel.wrapper={wrapper!r}, expected one of {WRAPPERS}")
    return run
