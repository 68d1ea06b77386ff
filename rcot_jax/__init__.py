"""rcot_jax: Residual-Conditioned Optimal Transport in JAX."""
