"""Placement: the 1-D `data` mesh, its shardings, global batches, and the data-parallel train step over it.

Nothing else in rcot_jax builds a `Mesh` or a `NamedSharding`:
  make_mesh(devices)           the mesh over all devices of all processes (or the given ones, e.g. a TPU topology's);
  replicated(mesh), batch_sharding(mesh)   parameters and states everywhere, batches split along `data`;
  check_batch_size(...)        a global batch that the mesh (and the micro-batches) cannot split, named by its key;
  round_up(n, mesh)            the smallest multiple of the mesh's size >= n (evaluation and inference batches);
  global_batch(local, mesh)    this process's share of a batch -> global arrays split over the mesh;
  jit_train_step(config, mesh) the jitted data-parallel step, lowerable for any mesh (`rcot_jax.benchmark --mode=aot`);
  compile_train_step(config, mesh) -> step(state, batch, rng) -> (state, metrics), placing its arguments.

`compile_train_step` runs whichever wrapper `config.parallel.wrapper` selects:
  'shard_map' (default): `jax.jit(jax.shard_map(...))`, state replicated, batch split along `data`, state donated;
  'pmap': `jax.pmap` over the mesh's devices with the same axis name, state broadcast in and out.
It accepts the state from `state.create_train_state` or from its own previous call, a global batch of NumPy or
already-placed arrays whose leading size divides evenly over the mesh, and a `jax.random` key. The returned
state is replicated over the mesh and the metrics are global scalars. The networks' convolutions are chosen for
the mesh's platform (`config.model.conv_impl='auto'`), not for the host that compiles.
"""
import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rcot_jax import models, steps
from rcot_jax.state import program_config

DATA_AXIS = "data"
WRAPPERS = ("shard_map", "pmap")


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named `data` over `devices` (default: all devices of all processes)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def platform(mesh) -> str:
    """'cpu', 'gpu' or 'tpu': what the mesh's programs are compiled for."""
    return mesh.devices.flat[0].platform


def round_up(n, mesh):
    """The smallest multiple of the mesh's device count that is at least `n`."""
    return -(-n // mesh.devices.size) * mesh.devices.size


def check_batch_size(batch_size, mesh, accumulate_steps=1, key="config.data.batch_size"):
    """Raises ValueError, naming `key`, unless `batch_size` splits evenly over the mesh's devices (and every
    device's share into `accumulate_steps` micro-batches)."""
    n, k = mesh.devices.size, accumulate_steps
    where = f"{n} devices ({mesh.devices.flat[0].platform}, {len({d.process_index for d in mesh.devices.flat})} " \
            "process(es))"
    if batch_size % n:
        raise ValueError(f"{key}={batch_size} is not divisible by the {where}; use a multiple of {n}")
    if k < 1 or (batch_size // n) % k:
        raise ValueError(f"config.optim.accumulate_steps={k} does not divide the {batch_size // n} samples per "
                         f"device ({key}={batch_size}, {n} devices) into equal micro-batches")


def global_batch(local, mesh, keys=None):
    """This process's NumPy share of a global batch (the shares concatenated in process order) -> global arrays
    split along `data` (a no-op copy on one process). `keys`: the entries to keep (default: all)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local[k])) for k in keys or local}


def _for_mesh(config, mesh):
    """`config` with `model.conv_impl` resolved for the mesh's platform."""
    return steps.with_values(config, {"model.conv_impl": models.conv_impl(config, platform(mesh))})


def jit_train_step(config, mesh: Mesh):
    """`jax.jit(jax.shard_map(train_step))` over `mesh`: (replicated state, batch split along `data`, key) ->
    (replicated state, global metrics), the state donated. Call it on placed arrays, or `.lower()` it on
    `jax.ShapeDtypeStruct`s with these shardings. One per process for each program config and mesh: a later
    launch with the same step reuses it, traced and compiled."""
    return _jit_train_step(program_config(_for_mesh(config, mesh)), mesh)


@functools.lru_cache(maxsize=8)
def _jit_train_step(config, mesh):
    step = functools.partial(steps.train_step, config=config, axis_name=DATA_AXIS)
    # check_vma=False: the step reduces gradients itself (pmap semantics), see losses.py.
    return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()), out_specs=(P(), P()),
                                 check_vma=False), donate_argnums=0)


@functools.lru_cache(maxsize=8)
def _pmap_train_step(config, mesh):
    step = functools.partial(steps.train_step, config=config, axis_name=DATA_AXIS)
    return jax.pmap(step, axis_name=DATA_AXIS, in_axes=(None, 0, None), out_axes=(None, None),
                    devices=list(mesh.devices.flat), donate_argnums=0)


def _check_batch(batch, mesh):
    sizes = {k: v.shape[0] for k, v in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch entries disagree on the batch size: {sizes}")
    check_batch_size(next(iter(sizes.values())), mesh, key="global batch size")


def compile_train_step(config, mesh: Mesh):
    wrapper = config.parallel.wrapper
    n = mesh.devices.size
    if wrapper == "shard_map":
        sharded = jit_train_step(config, mesh)

        def run(state, batch, rng):
            _check_batch(batch, mesh)
            return sharded(jax.device_put(state, replicated(mesh)), jax.device_put(batch, batch_sharding(mesh)),
                           jax.device_put(rng, replicated(mesh)))
    elif wrapper == "pmap":
        mapped = _pmap_train_step(program_config(_for_mesh(config, mesh)), mesh)

        def run(state, batch, rng):
            _check_batch(batch, mesh)
            batch = jax.tree.map(lambda a: a.reshape(n, a.shape[0] // n, *a.shape[1:]), batch)
            return mapped(state, batch, rng)
    else:
        raise ValueError(f"config.parallel.wrapper={wrapper!r}, expected one of {WRAPPERS}")
    return run
