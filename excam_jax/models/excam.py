"""ex-CAM intra-class sequential dropout over the M maps of each class (thesis section 3.3).

For maps F_1..F_M of a class, with drop masks D_j = 1[F_j <= t] (1 on unimportant cells, 0 on
important ones; t = logit(delta), so F_j <= t is sigmoid(F_j) <= delta):

  F'_1 = (1 - D_1) * F_1                       only the important part of the first map stays;
  F'_j = D_1 * ... * D_j * F_j        (j >= 2) the important parts of all earlier maps, and of
                                               the map itself, are dropped (self_drop=True);
  F'_j = D_1 * ... * D_{j-1} * F_j    (j >= 2) with self_drop=False: later maps must find
                                               evidence outside the earlier maps' supports.

Once the running product is zero everywhere, later maps are zero: "until the entire map is
dropped" needs no special case. The recursion is a `jax.lax.scan` over M whose carry is the
running product, applied to all classes at once. `SequentialDropout` is the same recursion as
the per-map transform of a `wildcat.WildcatHead`, with its knobs and its learned threshold.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def drop_mask(maps, threshold, straight_through=True, temperature=1.0):
  """D = 1[F <= t]; with straight_through its gradient is that of 1 - sigmoid((F - t) / tau).

  The forward value is always the hard mask. Without straight_through the mask is a constant
  for autodiff (it passes no gradient to F or t).
  """
  hard = (maps <= threshold).astype(maps.dtype)
  if not straight_through:
    return hard
  soft = 1.0 - jax.nn.sigmoid((maps - threshold) / temperature)
  return soft + jax.lax.stop_gradient(hard - soft)


def sequential_dropout(maps, threshold=0.0, self_drop=True, straight_through=True,
                       temperature=1.0):
  """Applies intra-class sequential dropout to per-class maps.

  Args:
    maps: (B, h, w, C, M) maps; m = 0 is the first map of each class.
    threshold: t in logit units (t = logit(delta)); a scalar or a (C,) array (per class).
    self_drop: drop each map's own important part for j >= 2 (the thesis's literal text).
    straight_through: hard masks forward, sigmoid-surrogate gradients backward.
    temperature: tau of the sigmoid surrogate.

  Returns:
    The masked maps F' with the shape of `maps`.
  """
  threshold = jnp.asarray(threshold, maps.dtype)
  per_map = jnp.moveaxis(maps, -1, 0)  # (M, B, h, w, C)
  masks = drop_mask(per_map, threshold, straight_through, temperature)
  first = (1.0 - masks[0]) * per_map[0]
  if per_map.shape[0] == 1:
    return first[..., None]

  def step(product, inputs):
    f, d = inputs
    if self_drop:
      product = product * d
      return product, product * f
    return product * d, product * f

  _, rest = jax.lax.scan(step, masks[0], (per_map[1:], masks[1:]))
  return jnp.moveaxis(jnp.concatenate([first[None], rest], axis=0), 0, -1)


class SequentialDropout(nn.Module):
  """`sequential_dropout` as a per-map transform: (B, h, w, C, M) -> same, train or not.

  Attributes:
    drop_threshold: delta of ex-CAM; a cell is important where sigmoid(F) > delta.
    self_drop, straight_through, temperature: see `sequential_dropout`.
    learn_threshold: 'none' (fixed t = logit(delta)), 'scalar' or 'per_class' (a 'threshold'
      parameter initialised at logit(delta), of shape () or (C,); C is read from the maps).
  """
  drop_threshold: float = 0.5
  self_drop: bool = True
  straight_through: bool = True
  temperature: float = 1.0
  learn_threshold: str = 'none'

  @nn.compact
  def __call__(self, maps, train=False):
    del train  # The dropout is deterministic: the same in training and evaluation.
    return sequential_dropout(maps, self._threshold(maps.shape[-2]), self_drop=self.self_drop,
                              straight_through=self.straight_through,
                              temperature=self.temperature)

  def _threshold(self, num_classes):
    """The threshold t in logit units: a constant or a learned parameter."""
    t0 = math.log(self.drop_threshold) - math.log1p(-self.drop_threshold)
    if self.learn_threshold == 'none':
      return t0
    shape = {'scalar': (), 'per_class': (num_classes,)}.get(self.learn_threshold)
    if shape is None:
      raise ValueError("learn_threshold must be 'none', 'scalar' or 'per_class', "
                       f'got {self.learn_threshold!r}.')
    return self.param('threshold', nn.initializers.constant(t0), shape)
