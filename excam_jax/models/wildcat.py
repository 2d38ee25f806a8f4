"""WILDCAT head: 1x1 conv to C*M maps, class-wise mean (or max) over M, top-k/bottom-k pooling.

Between the conv and the class-wise pooling the head applies a per-map transform handed to it
(ex-CAM's sequential dropout, ADL, or none for WILDCAT itself); `network.create_model` picks it.
`class_pooling='max'` takes the max of a class's maps instead of their mean: the `wildcat_max`
control, whose boxes at z > 0 are the union of its maps' supports, as ex-CAM's are at M = 2 with
self_drop=False; only it tells sequential dropout from an OR of maps.

Durand et al., "WILDCAT: Weakly Supervised Learning of Deep ConvNets for Image Classification,
Pointwise Localization and Segmentation", CVPR 2017. The pooling follows the official code,
including its final /2 (the thesis's formula drops it; it only rescales the scores).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from excam_jax.models import fastconv


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


def pool_maps(maps, pooling='mean'):
  """A class's maps F_1..F_M (last axis) -> its class map: z = mean_m F_m or z = max_m F_m.

  The max passes its gradient to the largest map only (split evenly among tied maps).
  """
  if pooling == 'mean':
    return maps.mean(axis=-1)
  if pooling == 'max':
    return maps.max(axis=-1)
  raise ValueError(f"class_pooling must be 'mean' or 'max', got {pooling!r}.")


def class_wise_pool(maps, num_maps, pooling='mean'):
  """Class-wise pooling: (B, h, w, C*M) -> (B, h, w, C); channel c*M + m is map m of class c.

  `pooling` is 'mean' or 'max' over the M maps (see `pool_maps`).
  """
  b, h, w, cm = maps.shape
  if cm % num_maps:
    raise ValueError(f'{cm} channels are not a multiple of num_maps={num_maps}.')
  return pool_maps(maps.reshape(b, h, w, cm // num_maps, num_maps), pooling)


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
  """1x1 conv -> per-map transform -> class-wise mean (or max) -> WILDCAT pooling.

  The method lives in `transform`, a Module called as `transform(maps, train)` on the
  (B, h, w, C, M) maps that returns maps of the same shape: `excam.SequentialDropout` (ex-CAM),
  `adl.AttentionDropout` (ADL) or None (plain WILDCAT). The transform shares the head's
  scope, so its parameters sit beside the conv (params['head']['threshold'] for a learned ex-CAM
  threshold, as before heads took transforms) and its 'dropout' draws are the head's.

  Attributes:
    num_classes: C.
    num_maps: M maps per class.
    kmax, kmin, alpha: spatial pooling settings (see `wildcat_pool`).
    class_pooling: 'mean' (WILDCAT) or 'max' over a class's M transformed maps (`pool_maps`).
    spatial_pooling: 'wildcat' (`wildcat_pool` with kmax, kmin, alpha) or 'gap': global average
      pooling of each class map (CAM's; ex-CAM on a CAM base, the thesis's section 3.7).
    transform: the per-map transform, or None for none.
    conv_impl: how the 1x1 conv is computed (`fastconv`; the same parameters either way).
    generator: add a foreground generator after BAS (Wu, Zhai and Cao, CVPR 2022): a second 1x1
      conv ('generator', C channels) whose logits g_c, sigmoid(g_c) the
      foreground of class c, are the maps that localize; the classifier's maps only classify.
      It learns from `losses.background_loss` and `losses.area_loss` (optim.background_weight,
      optim.area_weight). It reads `generator_features` where the call is given them (a
      mid-level stage of the trunk at the features' resolution, as BAS's reads), the features
      otherwise.

  Returns `(logits, aux)`: logits (B, C) are the pooled scores s_c; aux holds 'class_maps'
  (B, h, w, C), the class-wise pooling of the transformed maps, and 'maps' (B, h, w, C, M) before
  and 'dropped_maps' after the transform. With the generator, 'class_maps' are its logits g and
  'activation_maps' the classifier's class maps.
  """
  num_classes: int
  num_maps: int = 8
  kmax: float = 0.2
  kmin: Optional[float] = None
  alpha: float = 0.6
  class_pooling: str = 'mean'
  spatial_pooling: str = 'wildcat'
  transform: Optional[nn.Module] = None
  conv_impl: str = 'auto'
  generator: bool = False

  def setup(self):
    if self.transform is not None:
      # Without this the transform would get a scope of its own: its parameters would move to
      # params['head']['transform'] (old checkpoints would not load) and its 'dropout' key would
      # change (ADL would draw other masks from the same seed).
      nn.share_scope(self, self.transform)

  @nn.compact
  def __call__(self, features, train=False, generator_features=None):
    features = features.astype(jnp.float32)  # The head is tiny: keep it in float32.
    x = fastconv.Conv(self.num_classes * self.num_maps, 1, use_bias=True, impl=self.conv_impl,
                      name='classifier')(features)
    b, h, w, _ = x.shape
    maps = x.reshape(b, h, w, self.num_classes, self.num_maps)
    dropped = maps if self.transform is None else self.transform(maps, train)
    class_maps = pool_maps(dropped, self.class_pooling)
    if self.spatial_pooling == 'gap':  # A CAM base: the class map's mean over all its cells.
      logits = class_maps.mean(axis=(1, 2))
    else:
      logits = wildcat_pool(class_maps, self.kmax, self.kmin, self.alpha)
    aux = {'class_maps': class_maps, 'maps': maps, 'dropped_maps': dropped}
    if self.generator:
      source = features if generator_features is None else generator_features
      foreground = fastconv.Conv(self.num_classes, 1, use_bias=True, impl=self.conv_impl,
                                 name='generator')(source.astype(jnp.float32))
      aux.update(class_maps=foreground, activation_maps=class_maps)
    return logits, aux
