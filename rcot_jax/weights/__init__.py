"""Official RCOT weights in and out: read official checkpoints without the official code or torch, map them to
rcot_jax parameters (and back), and load converted checkpoints as initial parameters.

  sd_map, sd_critic, _ = weights.networks(["model.pth"])
  t_params = weights.to_params(sd_map, t_model, weights.abstract_params(t_model), "model.pth")
  weights.write("export.pth", weights.from_params(t_params, t_model))
"""
from rcot_jax.weights.files import networks, read, write
from rcot_jax.weights.mapping import abstract_params, from_params, official_keys, to_params, unused_modules
from rcot_jax.weights.torch_format import WeightsError

__all__ = ["WeightsError", "abstract_params", "from_params", "networks", "official_keys", "read", "to_params",
           "unused_modules", "write"]
