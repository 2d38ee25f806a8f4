"""The network: ResNet trunk + a head chosen by config (the one place that reads model.head)."""

import flax.linen as nn
import jax.numpy as jnp

from excam_jax import config_checks
from excam_jax.models import excam
from excam_jax.models import losses
from excam_jax.models import resnet
from excam_jax.models import variants
from excam_jax.models import wildcat

HEADS = config_checks.HEADS
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}



class WSOLNet(nn.Module):
  """Trunk + head. `apply(variables, images, train)` returns `(logits, aux)`.

  Parameters live under 'trunk' and 'head'; aux holds 'class_maps' (B, h, w, C) and, for the
  WILDCAT-family heads, 'maps' and 'dropped_maps' (B, h, w, C, M) (see `wildcat.WildcatHead`).
  """
  trunk: nn.Module
  head: nn.Module

  def __call__(self, images, train=False):
    return self.head(self.trunk(images, train=train), train=train)


def create_model(model_config, num_classes):
  """Builds the network that `model_config` (the config's `model` field) describes.

  model.head picks the method: 'cam' is `variants.CAMHead`; 'wildcat', 'excam' and 'adl' are a
  `wildcat.WildcatHead` with no transform, `excam.SequentialDropout` or
  `variants.AttentionDropout`, each built from its own config fields.
  """
  m = model_config
  if m.head not in HEADS:
    raise ValueError(f'model.head must be one of {HEADS}, got {m.head!r}.')
  conv_impl = m.get('conv_impl', 'auto')  # Absent from configs saved before it existed.
  trunk = resnet.ResNet(depth=m.depth, width=m.width, output_stride=m.output_stride,
                        dtype=DTYPES[m.dtype], freeze_bn=m.freeze_bn, remat=m.remat,
                        conv_impl=conv_impl)
  if m.head == 'cam':
    return WSOLNet(trunk=trunk, head=variants.CAMHead(num_classes=num_classes))
  transform = None
  if m.head == 'excam':
    transform = excam.SequentialDropout(
        drop_threshold=m.drop_threshold, self_drop=m.self_drop,
        straight_through=m.straight_through, temperature=m.temperature,
        learn_threshold=m.learn_threshold)
  elif m.head == 'adl':
    transform = variants.AttentionDropout(gamma=m.adl_gamma, drop_rate=m.adl_drop_rate)
  head = wildcat.WildcatHead(num_classes=num_classes, num_maps=m.num_maps, kmax=m.kmax,
                             kmin=m.kmin, alpha=m.alpha, transform=transform,
                             conv_impl=conv_impl)
  return WSOLNet(trunk=trunk, head=head)
