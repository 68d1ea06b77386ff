"""The train step compiled ahead of time for a TPU slice, on any host (this CPU included): memory, FLOPs, and
whether the slice's program partitions and compiles. `python -m rcot_jax.benchmark --mode=aot` prints its record.

libtpu (`pip install -e ".[tpu-aot]"`) compiles for a topology it is given by name, e.g. `v5e:2x2`, without the
chips. The program is `parallel.jit_train_step`'s, the one `parallel.compile_train_step` runs for users: the
mesh spans every chip of every host, the state is replicated and the global batch is split along `data` as
`train.py` feeds it (each host its share). Convolutions follow `config.model.conv_impl` resolved for TPU ('auto':
XLA's own). Memory is XLA's buffer assignment per chip; step time needs the chips, so docs/performance.md turns FLOPs
and bytes into lower bounds with published peaks.

Sizes are in GiB (2**30 bytes), as HBM capacities are quoted.
"""
import concurrent.futures
import hashlib
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import time

import jax
import jax.numpy as jnp
from absl import logging

import rcot_jax
from rcot_jax import models, parallel, steps
from rcot_jax.checkpointing import abstract_like
from rcot_jax.state import create_train_state

GIB = 2 ** 30
# HBM per chip (GiB) by device kind: Google Cloud's TPU system-architecture pages (v4, v5e, v5p, v6e).
HBM_GIB = {"TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95, "TPU v6 lite": 32}
TOPOLOGY_NAMES = ("v4:2x2x1", "v4:2x2x2", "v5e:2x2", "v5e:2x4", "v5e:4x4", "v5p:2x2x1", "v5p:2x2x2", "v6e:2x2",
                  "v6e:4x4")
RECORD_KEYS = ("topology", "chips", "hosts", "device_kind", "per_chip_batch", "global_batch", "conv_impl", "remat",
               "precision", "temp_gb_per_chip", "argument_gb_per_chip", "hbm_gb_per_chip", "fits",
               "tflop_per_chip_step", "gb_accessed_per_chip_step", "compile_s")
_OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "Ran out of memory")


class AotError(ValueError):
    """libtpu is missing or does not know the topology: the message says what to install or which names exist."""


def tpu_devices(topology):
    """The compile-only devices of a TPU slice named as libtpu names it (`v5e:2x2`), one per chip (v4 as
    megacore chips, as JAX sees them on a v4 VM)."""
    if importlib.util.find_spec("libtpu") is None:
        raise AotError('--mode=aot compiles with libtpu, which is not installed: pip install -e ".[tpu-aot]" '
                       "(libtpu as jax pins it, about 0.7 GB)")
    from jax.experimental import topologies
    if not rcot_jax.tpu_attached():
        # libtpu lets one process at a time load it (/tmp/libtpu_lockfile), to guard the chips. Compiling for a
        # topology uses none, so several compiling processes (a search beside the tests) may run at once.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    options = {"chip_config_name": "megacore"} if topology.startswith("v4:") else {}
    try:
        return topologies.get_topology_desc(topology, platform="tpu", **options).devices
    except Exception as e:   # noqa: BLE001 - libtpu raises JaxRuntimeError(INVALID_ARGUMENT) with its reason
        raise AotError(f"--topology={topology}: libtpu does not know it ({str(e).splitlines()[0]}); names are "
                       f"GENERATION:CHIPS, the chips a multiple of one host's 2x2(x1), e.g. "
                       f"{', '.join(TOPOLOGY_NAMES)}") from None


def abstract_arguments(config, mesh):
    """(state, global batch, key) as ShapeDtypeStructs placed as `parallel.compile_train_step` places them."""
    state = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0)))
    b, p = config.data.batch_size, config.data.patch_size
    batch = {"degraded": jnp.zeros((b, p, p, 3), jnp.float32), "target": jnp.zeros((b, p, p, 3), jnp.float32),
             "paired": jnp.zeros((b,), bool), "de_id": jnp.zeros((b,), jnp.int32)}
    return (abstract_like(state, parallel.replicated(mesh)), abstract_like(batch, parallel.batch_sharding(mesh)),
            abstract_like(jax.eval_shape(lambda: jax.random.key(0)), parallel.replicated(mesh)))


def lower_for(config, devices, per_chip_batch):
    """(config, lowered train step) for a mesh of `devices`, the global batch being `per_chip_batch` per chip."""
    mesh = parallel.make_mesh(devices)
    config = steps.with_values(config, {"data.batch_size": per_chip_batch * len(devices)})
    parallel.check_batch_size(config.data.batch_size, mesh, config.optim.accumulate_steps)
    return config, parallel.jit_train_step(config, mesh).lower(*abstract_arguments(config, mesh))


def program_id(lowered):
    """What a compilation's result depends on besides the topology: the lowered program (StableHLO without source
    locations, so whatever config fields or code produced it) and the libtpu that compiles it."""
    digest = hashlib.sha256(lowered.as_text().encode()).hexdigest()[:16]
    return digest, importlib.metadata.version("libtpu")


def compile_lowered(config, devices, lowered):
    """(record, compiled step or None where XLA reports that it does not fit the chips' memory) of `lowered`, the
    step of `config` on a mesh of `devices`, compiled with the XLA:CPU flags of `rcot_jax` kept out of it."""
    t0 = time.perf_counter()
    try:
        compiled = lowered.compile(compiler_options=dict(rcot_jax.NON_CPU_COMPILER_OPTIONS) or None)
    except Exception as e:   # noqa: BLE001 - XLA raises JaxRuntimeError; only an out-of-memory verdict is a result
        if not any(s in str(e) for s in _OUT_OF_MEMORY):
            raise
        compiled = None
    compile_s = time.perf_counter() - t0
    kind = devices[0].device_kind
    record = {"chips": len(devices), "hosts": len({d.process_index for d in devices}),
              "device_kind": kind, "per_chip_batch": config.data.batch_size // len(devices),
              "global_batch": config.data.batch_size,
              "conv_impl": models.conv_impl(config, "tpu"), "remat": config.model.remat,
              "precision": config.precision, "temp_gb_per_chip": None, "argument_gb_per_chip": None,
              "hbm_gb_per_chip": HBM_GIB.get(kind), "fits": False, "tflop_per_chip_step": None,
              "gb_accessed_per_chip_step": None, "compile_s": round(compile_s, 1)}
    if compiled is None:
        return record, None
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    needed = (memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
              - memory.alias_size_in_bytes + memory.generated_code_size_in_bytes) / GIB
    record.update(temp_gb_per_chip=round(memory.temp_size_in_bytes / GIB, 3),
                  argument_gb_per_chip=round(memory.argument_size_in_bytes / GIB, 3),
                  fits=record["hbm_gb_per_chip"] is None or needed <= record["hbm_gb_per_chip"],
                  tflop_per_chip_step=round(cost["flops"] / 1e12, 4),
                  gb_accessed_per_chip_step=round(cost["bytes accessed"] / GIB, 2))
    return record, compiled


def _compile_record(config, topology, per_chip_batch, non_cpu_compiler_options):
    # This process took the XLA:CPU flags it inherited in XLA_FLAGS for the user's: its parent's overrides apply.
    rcot_jax.NON_CPU_COMPILER_OPTIONS.update(non_cpu_compiler_options)
    devices = tpu_devices(topology)
    config, lowered = lower_for(config, devices, per_chip_batch)
    return program_id(lowered), compile_lowered(config, devices, lowered)[0]


def compile_in_fresh_process(config, topology, per_chip_batch):
    """(`program_id`, `compile_lowered`'s record) of the step of `config` for `topology` at `per_chip_batch`, lowered
    and compiled in a new (spawned) process. XLA keeps 1-2.5 GB of host memory per compilation of the paper's step that
    `jax.clear_caches()` does not return; a process per compilation keeps a search at one compilation's memory."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_compile_record, config, topology, per_chip_batch,
                               rcot_jax.NON_CPU_COMPILER_OPTIONS).result()
        except concurrent.futures.process.BrokenProcessPool:
            raise AotError(f"--topology={topology} at {per_chip_batch} per chip: the compiling process died (killed "
                           "for host memory? one compilation of the paper's step takes 17 GB or more); the records "
                           "written so far stay") from None


def max_per_chip_batch(fits, start, limit=1024):
    """The largest b <= limit with fits(b), fits being monotone (True up to some b, then False): doubling from
    `start` while it fits, then bisection between the last batch that fit and the first that did not."""
    known = {}

    def check(b):
        if b not in known:
            known[b] = fits(b)
        return known[b]

    lo, hi = 0, None
    b = max(start, 1)
    while hi is None:
        if check(b):
            lo = b
            if b >= limit:
                return b
            b = min(2 * b, limit)
        else:
            hi = b
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if check(mid) else (lo, mid)
    return lo


def read_records(path):
    """{(program, libtpu, topology): record} of a `--records` file (absent: empty). Records without a program (the
    config-keyed ones written before 2026-12-06) cannot be matched to a program and are left out, with a warning."""
    if not path or not os.path.exists(path):
        return {}
    records, unkeyed = {}, 0
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                record = {k: r[k] for k in RECORD_KEYS}
            except (ValueError, KeyError, TypeError) as e:
                raise AotError(f"--records={path}, line {number}: not a record of --mode=aot ({e!r})") from None
            if "program" not in r:
                unkeyed += 1
                continue
            records[r["program"], r["libtpu"], r["topology"]] = record
    if unkeyed:
        logging.warning("--records=%s: %d records without a program (written before records were keyed by "
                        "program) are not reused", path, unkeyed)
    return records


def aot_record(config, topology, per_chip_batch=0, find_max_batch=False, records_path="", fresh_processes=False):
    """The JSON record of `--mode=aot`: the train step of `config` compiled for `topology` at `per_chip_batch`
    (0: the config's `data.batch_size` on each chip, as on its one GPU). `find_max_batch` adds
    `max_per_chip_batch`. `records_path`: a JSON-lines file that every compilation's record is appended to, with
    its `program_id`, and that the record of a program already compiled for the topology is taken from instead of
    compiling again (each batch is lowered, seconds, to know its program), so a long search resumes.
    `fresh_processes`: each compilation runs in a process of its own (`compile_in_fresh_process`)."""
    devices = tpu_devices(topology)
    per_chip_batch = per_chip_batch or config.data.batch_size
    known = read_records(records_path)

    def compiled(b):
        config_b, lowered = lower_for(config, devices, b)
        program, libtpu = program_id(lowered)
        if (program, libtpu, topology) not in known:
            if fresh_processes:
                compiled_program, record = compile_in_fresh_process(config, topology, b)
                assert compiled_program == (program, libtpu), "a fresh process lowered another program"
            else:
                record, _ = compile_lowered(config_b, devices, lowered)
            known[program, libtpu, topology] = record = {"topology": topology, **record}
            logging.info("compiled: %s", json.dumps(record))
            if records_path:
                with open(records_path, "a") as f:
                    f.write(json.dumps({"program": program, "libtpu": libtpu, **record}) + "\n")
        return known[program, libtpu, topology]

    # A reused record may come from another config that lowers to the same program: its labels are this config's.
    record = {**compiled(per_chip_batch), "conv_impl": models.conv_impl(config, "tpu"), "remat": config.model.remat,
              "precision": config.precision}
    if find_max_batch:
        record["max_per_chip_batch"] = max_per_chip_batch(lambda b: compiled(b)["fits"], per_chip_batch)
    return record
