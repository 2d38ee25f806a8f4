"""ADL (attention-based dropout) as the per-map transform of a `wildcat.WildcatHead`.

This is the thesis's variant (section 3.8.3), applied per class map, not Choe et al.'s original
placement inside layer3/layer4 with the channel mean of trunk features as attention.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def adl_per_map(maps, rng, train, gamma=0.9, drop_rate=0.75):
  """Attention-based dropout on each map: F * D with probability drop_rate, else F * sigmoid(F).

  D = 1[F < gamma * max_spatial(F)] drops each map's most important cells; one Bernoulli draw per
  step picks D or the importance map sigmoid(F) for the whole batch. Identity at test time.

  Args:
    maps: (B, h, w, C, M) maps.
    rng: a PRNG key (unused when not training).
    train: apply the dropout only in training.
    gamma: drop threshold relative to each map's spatial maximum.
    drop_rate: probability of picking the drop mask.
  """
  if not train:
    return maps
  peak = maps.max(axis=(1, 2), keepdims=True)
  drop = jax.lax.stop_gradient((maps < gamma * peak).astype(maps.dtype))
  importance = jax.nn.sigmoid(maps)
  use_drop = jax.random.bernoulli(rng, drop_rate)
  return maps * jnp.where(use_drop, drop, importance)


class AttentionDropout(nn.Module):
  """`adl_per_map` as a per-map transform: (B, h, w, C, M) -> same; identity at eval.

  In training it draws from the 'dropout' rng stream (`apply(..., rngs={'dropout': key})`).

  Attributes:
    gamma: drop threshold relative to each map's spatial maximum.
    drop_rate: probability of picking the drop mask at a step.
  """
  gamma: float = 0.9
  drop_rate: float = 0.75

  @nn.compact
  def __call__(self, maps, train=False):
    rng = self.make_rng('dropout') if train else None
    return adl_per_map(maps, rng, train, self.gamma, self.drop_rate)
