"""rcot_jax: Residual-Conditioned Optimal Transport in JAX."""
import os

# XLA:CPU settings measured on RCOT's train step with jaxlib 0.10, again on 0.11 and 0.12 (experiments/benchmarks.md):
#  - its experimental YNN library fusions (on by default) make the step slower and its memory 1.7x larger;
#  - its optimization-barrier expander lets common-subexpression elimination merge rematerialised forward
#    passes back into the original ones, so `config.model.remat` would save no memory at all.
_XLA_CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "", "xla_disable_hlo_passes": "cse_barrier_expander"}
_MEASURED_JAXLIB = ("0.10.", "0.11.", "0.12.")
# XLA_FLAGS reach every backend's compiler. `xla_disable_hlo_passes` is not CPU-only: a TPU program compiled with it
# keeps its optimization barriers and fails ("HLO opt-barrier is not implemented on TPU"). A process that sets the
# flags has no GPU or TPU of its own (`_xla_cpu_defaults`), so its only other compilations are ahead of time for a
# TPU topology (rcot_jax.aot), which pass these overrides: the flag's default, an empty list. The xla_cpu_* flag is
# read by XLA:CPU only.
NON_CPU_COMPILER_OPTIONS = {}


def tpu_attached():
    """Whether this machine has TPU chips: JAX's own PCI check (importing it starts no backend)."""
    try:
        from jax._src import hardware_utils
    except ImportError:
        return True     # cannot tell: a machine with libtpu is taken for a TPU host
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0


def _xla_cpu_defaults():
    """Adds `_XLA_CPU_FLAGS` to XLA_FLAGS before JAX starts its backend, unless the user set them, when jaxlib
    is one of `_MEASURED_JAXLIB` (an XLA that does not know a flag aborts the process) and the machine has no GPU
    plugin and no TPU attached (libtpu alone, for compiling ahead of time, does not count)."""
    from importlib import metadata
    installed = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
    gpu = any(n.startswith(("jax-cuda", "jax-rocm")) for n in installed)
    try:
        measured = metadata.version("jaxlib").startswith(_MEASURED_JAXLIB)
    except metadata.PackageNotFoundError:
        return
    if gpu or not measured or (any(n.startswith("libtpu") for n in installed) and tpu_attached()):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    added = {name: value for name, value in _XLA_CPU_FLAGS.items() if name not in flags}
    os.environ["XLA_FLAGS"] = " ".join([flags, *(f"--{name}={value}" for name, value in added.items())]).strip()
    if "xla_disable_hlo_passes" in added:
        NON_CPU_COMPILER_OPTIONS["xla_disable_hlo_passes"] = ""


_xla_cpu_defaults()
