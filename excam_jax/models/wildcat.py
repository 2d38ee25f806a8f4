"""WILDCAT head: 1x1 conv to C*M maps, class-wise mean over M, top-k/bottom-k spatial pooling.

Durand et al., "WILDCAT: Weakly Supervised Learning of Deep ConvNets for Image Classification,
Pointwise Localization and Segmentation", CVPR 2017. The pooling follows the official code,
including its final /2 (the thesis's formula drops it; it only rescales the scores).
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from excam_jax.models import excam
from excam_jax.models import variants


def resolve_k(k, n):
  """Number of cells that a k setting selects among n.

  Args:
    k: k <= 0 selects none; 0 < k < 1 is a fraction, round(k * n) cells but at least 1 (Python
      rounding, as the official code); k >= 1 is a count, capped at n (k = 1 is max pooling).
    n: number of spatial cells h * w.

  Returns:
    An int in [0, n].
  """
  if k <= 0:
    return 0
  if k < 1:
    return max(1, int(round(k * n)))
  return min(int(k), n)


def class_wise_pool(maps, num_maps):
  """Class-wise mean: (B, h, w, C*M) -> (B, h, w, C); channel c*M + m is map m of class c."""
  b, h, w, cm = maps.shape
  if cm % num_maps:
    raise ValueError(f'{cm} channels are not a multiple of num_maps={num_maps}.')
  return maps.reshape(b, h, w, cm // num_maps, num_maps).mean(axis=-1)


def wildcat_pool(maps, kmax=0.2, kmin=None, alpha=0.6):
  """WILDCAT spatial pooling: (B, h, w, C) -> (B, C).

  s = (mean of the kmax highest cells + alpha * mean of the kmin lowest cells) / 2 when kmin
  resolves to at least one cell and alpha != 0; s = mean of the kmax highest cells otherwise.
  k values resolve as in `resolve_k`; kmin=None means kmin = kmax. Gradients come from autodiff
  through `jax.lax.top_k`: 1/kmax to each top cell, alpha/kmin to each bottom cell, halved
  where the /2 applies.
  """
  b, h, w, c = maps.shape
  n = h * w
  kmax_n = resolve_k(kmax, n)
  kmin_n = resolve_k(kmax if kmin is None else kmin, n)
  if kmax_n < 1:
    raise ValueError(f'kmax must select at least one cell, got kmax={kmax}.')
  cells = jnp.swapaxes(maps.reshape(b, n, c), 1, 2)  # (B, C, n)
  top = jax.lax.top_k(cells, kmax_n)[0].mean(axis=-1)
  if kmin_n == 0 or alpha == 0:
    return top
  bottom = -jax.lax.top_k(-cells, kmin_n)[0].mean(axis=-1)
  return (top + alpha * bottom) / 2


class WildcatHead(nn.Module):
  """1x1 conv -> per-map transform (ex-CAM dropout, ADL or none) -> class mean -> pooling.

  Attributes:
    num_classes: C.
    num_maps: M maps per class.
    kmax, kmin, alpha: spatial pooling settings (see `wildcat_pool`).
    method: 'wildcat' (no transform), 'excam' (intra-class sequential dropout) or 'adl'.
    drop_threshold: delta of ex-CAM; a cell is important where sigmoid(F) > delta.
    self_drop, straight_through, temperature: see `excam.sequential_dropout`.
    learn_threshold: 'none' (fixed t = logit(delta)), 'scalar' or 'per_class' (a parameter
      initialised at logit(delta)).
    adl_gamma, adl_drop_rate: ADL settings (see `variants.adl_per_map`).

  Returns `(logits, aux)`: logits (B, C) are the pooled scores s_c; aux holds 'class_maps'
  (B, h, w, C) from the transformed maps, 'class_maps_undropped' (the plain class mean, a
  diagnostic), 'maps' (B, h, w, C, M) before and 'dropped_maps' after the transform.
  """
  num_classes: int
  num_maps: int = 8
  kmax: float = 0.2
  kmin: Optional[float] = None
  alpha: float = 0.6
  method: str = 'excam'
  drop_threshold: float = 0.5
  self_drop: bool = True
  straight_through: bool = True
  temperature: float = 1.0
  learn_threshold: str = 'none'
  adl_gamma: float = 0.9
  adl_drop_rate: float = 0.75

  @nn.compact
  def __call__(self, features, train=False):
    features = features.astype(jnp.float32)  # The head is tiny: keep it in float32.
    x = nn.Conv(self.num_classes * self.num_maps, (1, 1), name='classifier')(features)
    b, h, w, _ = x.shape
    maps = x.reshape(b, h, w, self.num_classes, self.num_maps)
    if self.method == 'excam':
      dropped = excam.sequential_dropout(
          maps, self.threshold(), self_drop=self.self_drop,
          straight_through=self.straight_through, temperature=self.temperature)
    elif self.method == 'adl':
      rng = self.make_rng('dropout') if train else None
      dropped = variants.adl_per_map(maps, rng, train, self.adl_gamma, self.adl_drop_rate)
    elif self.method == 'wildcat':
      dropped = maps
    else:
      raise ValueError(f"method must be 'wildcat', 'excam' or 'adl', got {self.method!r}.")
    class_maps = dropped.mean(axis=-1)
    logits = wildcat_pool(class_maps, self.kmax, self.kmin, self.alpha)
    aux = {'class_maps': class_maps, 'class_maps_undropped': maps.mean(axis=-1),
           'maps': maps, 'dropped_maps': dropped}
    return logits, aux

  def threshold(self):
    """The ex-CAM threshold t in logit units: a constant or a learned parameter."""
    t0 = math.log(self.drop_threshold) - math.log1p(-self.drop_threshold)
    if self.learn_threshold == 'none':
      return t0
    shape = {'scalar': (), 'per_class': (self.num_classes,)}.get(self.learn_threshold)
    if shape is None:
      raise ValueError("learn_threshold must be 'none', 'scalar' or 'per_class', "
                       f'got {self.learn_threshold!r}.')
    return self.param('threshold', nn.initializers.constant(t0), shape)
