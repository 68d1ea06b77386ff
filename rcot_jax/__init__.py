"""rcot_jax: Residual-Conditioned Optimal Transport in JAX."""
import os

# XLA:CPU settings measured on RCOT's train step with jaxlib 0.10 (experiments/benchmarks.md):
#  - its experimental YNN library fusions (on by default) make the step slower and its memory 1.7x larger;
#  - its optimization-barrier expander lets common-subexpression elimination merge rematerialised forward
#    passes back into the original ones, so `config.model.remat` would save no memory at all.
_XLA_CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "", "xla_disable_hlo_passes": "cse_barrier_expander"}


def _xla_cpu_defaults():
    """Adds `_XLA_CPU_FLAGS` to XLA_FLAGS before JAX starts its backend, unless the user set them, when jaxlib
    is 0.10.x (whose flags these are) and no GPU or TPU plugin is installed."""
    from importlib import metadata
    installed = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
    accelerator = any(n.startswith(("jax-cuda", "jax-rocm", "libtpu")) for n in installed)
    try:
        jaxlib_010 = metadata.version("jaxlib").startswith("0.10.")
    except metadata.PackageNotFoundError:
        return
    if accelerator or not jaxlib_010:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f"--{name}={value}" for name, value in _XLA_CPU_FLAGS.items() if name not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


_xla_cpu_defaults()
