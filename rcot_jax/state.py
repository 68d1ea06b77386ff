"""The training state: a plain pytree of both networks' parameters and optimiser states."""
from typing import Any

import flax.struct
import jax.numpy as jnp


@flax.struct.dataclass
class RCOTState:
    step: jnp.ndarray     # int32 scalar: train steps taken
    t_params: Any         # transport map T
    f_params: Any         # potential (critic) F
    t_opt_state: Any
    f_opt_state: Any
