"""The network: ResNet trunk + a head chosen by config (the one place that reads model.head)."""

import flax.linen as nn
import jax.numpy as jnp

from excam_jax import config_schema
from excam_jax.models import acol
from excam_jax.models import adl
from excam_jax.models import cam
from excam_jax.models import excam
from excam_jax.models import losses
from excam_jax.models import resnet
from excam_jax.models import wildcat

HEADS = config_schema.HEADS
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}



class WSOLNet(nn.Module):
  """Trunk + head. `apply(variables, images, train)` returns `(logits, aux)`.

  Parameters live under 'trunk' and 'head'; aux holds 'class_maps' (B, h, w, C), 'features'
  (B, h, w, K), the trunk's output the head read, and, for the WILDCAT-family heads, 'maps' and
  'dropped_maps' (B, h, w, C, M) (see `wildcat.WildcatHead`). A trunk with a tap (a generator
  reading a mid-level stage) hands that stage's output to the head as `generator_features`.
  """
  trunk: nn.Module
  head: nn.Module

  def __call__(self, images, train=False):
    features = self.trunk(images, train=train)
    if isinstance(features, tuple):  # A tapped stage for the head's generator.
      features, tapped = features
      logits, aux = self.head(features, train=train, generator_features=tapped)
    else:
      logits, aux = self.head(features, train=train)
    return logits, dict(aux, features=features)


def generator_tap(model_config):
  """The trunk stage that BAS's generator reads (0: none, the generator reads the trunk's
  output): model.map_generator_stage when the generator is on and reads a stage before the last."""
  m = model_config
  stage = m.get('map_generator_stage', 4)
  return stage if m.get('map_generator', False) and stage != 4 else 0


def create_model(model_config, num_classes, head=None):
  """Builds the network that `model_config` (the config's `model` field) describes.

  model.head picks the method: 'cam' is `cam.CAMHead`; 'wildcat', 'excam' and 'adl' are a
  `wildcat.WildcatHead` with no transform, `excam.SequentialDropout` or
  `adl.AttentionDropout`, each built from its own config fields; 'acol' is an
  `acol.ACoLNet` of two networks of the kind model.acol_head, its test-time map fused as
  model.acol_fusion. model.class_pooling ('mean' or 'max' over a class's M maps) sets the
  WILDCAT-family heads' class-wise pooling; CAM has none. model.map_generator adds BAS's
  foreground generator to a WILDCAT-family head (its maps localize), reading the trunk's stage
  model.map_generator_stage. `head` overrides model.head. Fields
  absent from configs saved before they existed take the value those runs had.
  """
  m = model_config
  head = head or m.head
  if head not in HEADS:
    raise ValueError(f'model.head must be one of {HEADS}, got {head!r}.')
  if head == 'acol':  # Two classifiers of the kind model.acol_head (models/acol.py).
    base = m.get('acol_head', 'wildcat')
    return acol.ACoLNet(a=create_model(m, num_classes, base), b=create_model(m, num_classes, base),
                        threshold=m.get('acol_threshold', 0.6),
                        fusion=m.get('acol_fusion', 'normalised'))
  conv_impl = m.get('conv_impl', 'auto')  # Absent from configs saved before it existed.
  trunk = resnet.ResNet(depth=m.depth, width=m.width, output_stride=m.output_stride,
                        dilate=m.get('dilate', True), dtype=DTYPES[m.dtype],
                        freeze_bn=m.freeze_bn, remat=m.remat, conv_impl=conv_impl,
                        norm_impl=m.get('norm_impl', 'flax'), tap=generator_tap(m))
  pooling = m.get('class_pooling', 'mean')
  if head == 'cam':
    if pooling != 'mean':
      raise ValueError(f"model.class_pooling must be 'mean' with a CAM head, got {pooling!r}.")
    return WSOLNet(trunk=trunk, head=cam.CAMHead(num_classes=num_classes))
  transform = None
  if head == 'excam':
    transform = excam.SequentialDropout(
        drop_threshold=m.drop_threshold, self_drop=m.self_drop,
        straight_through=m.straight_through, temperature=m.temperature,
        learn_threshold=m.learn_threshold)
  elif head == 'adl':
    transform = adl.AttentionDropout(gamma=m.adl_gamma, drop_rate=m.adl_drop_rate)
  wildcat_head = wildcat.WildcatHead(num_classes=num_classes, num_maps=m.num_maps, kmax=m.kmax,
                                     kmin=m.kmin, alpha=m.alpha, class_pooling=pooling,
                                     spatial_pooling=m.get('spatial_pooling', 'wildcat'),
                                     transform=transform, conv_impl=conv_impl,
                                     generator=m.get('map_generator', False))
  return WSOLNet(trunk=trunk, head=wildcat_head)
