"""Networks of RCOT: the transport maps T (two backbones) and the potential (critic) F."""
from rcot_jax.models.critic import Critic
from rcot_jax.models.mprnet import MPRNetRCOT
from rcot_jax.models.restormer import RestormerRCOT

__all__ = ["Critic", "MPRNetRCOT", "RestormerRCOT"]
