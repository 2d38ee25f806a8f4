"""The network: ResNet trunk + a head chosen by config, and its loss terms."""

import flax.linen as nn
import jax.numpy as jnp
import optax

from excam_jax import config_checks
from excam_jax.models import resnet
from excam_jax.models import variants
from excam_jax.models import wildcat

HEADS = config_checks.HEADS
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
DIVERSITY_LOSSES = config_checks.DIVERSITY_LOSSES


class WSOLNet(nn.Module):
  """Trunk + head. `apply(variables, images, train)` returns `(logits, aux)`.

  Parameters live under 'trunk' and 'head'; aux holds 'class_maps' (B, h, w, C) and, for the
  WILDCAT-family heads, 'maps' and 'dropped_maps' (B, h, w, C, M) (see `WildcatHead`).
  """
  trunk: nn.Module
  head: nn.Module

  def __call__(self, images, train=False):
    return self.head(self.trunk(images, train=train), train=train)


def create_model(model_config, num_classes):
  """Builds the network that `model_config` (the config's `model` field) describes."""
  m = model_config
  trunk = resnet.ResNet(depth=m.depth, width=m.width, output_stride=m.output_stride,
                        dtype=DTYPES[m.dtype], freeze_bn=m.freeze_bn, remat=m.remat)
  if m.head == 'cam':
    head = variants.CAMHead(num_classes=num_classes)
  else:
    head = wildcat.WildcatHead(
        num_classes=num_classes, num_maps=m.num_maps, kmax=m.kmax, kmin=m.kmin, alpha=m.alpha,
        method=m.head, drop_threshold=m.drop_threshold, self_drop=m.self_drop,
        straight_through=m.straight_through, temperature=m.temperature,
        learn_threshold=m.learn_threshold, adl_gamma=m.adl_gamma,
        adl_drop_rate=m.adl_drop_rate)
  return WSOLNet(trunk=trunk, head=head)


def bce_loss(logits, labels, mask=None):
  """Sigmoid binary cross-entropy, mean over classes and over valid examples.

  loss = sum_b mask_b * mean_c BCE(sigmoid(logits_bc), labels_bc) / sum_b mask_b.
  """
  per_example = optax.sigmoid_binary_cross_entropy(logits, labels).mean(axis=-1)
  if mask is None:
    return per_example.mean()
  return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def diversity_loss(maps, kind):
  """A term that pushes a class's M maps apart; add `weight * diversity_loss(...)` to the loss.

  'pairwise_l2' is the thesis's literal term, subtracted: -sum_{i,j} ||F_i - F_j||^2 over all
  ordered pairs and cells, mean over batch and classes. It is unbounded below.
  'cosine' is bounded: the mean over i < j of cos(F_i, F_j) (maps flattened over space), mean
  over batch and classes.

  Args:
    maps: (B, h, w, C, M) per-class maps before any dropout.
    kind: 'pairwise_l2' or 'cosine'.
  """
  b, h, w, c, m = maps.shape
  flat = jnp.moveaxis(maps.reshape(b, h * w, c, m), 1, -1)  # (B, C, M, n)
  if kind == 'pairwise_l2':
    diff = flat[:, :, :, None, :] - flat[:, :, None, :, :]
    return -jnp.sum(diff ** 2, axis=(2, 3, 4)).mean()
  if kind == 'cosine':
    unit = flat / jnp.maximum(jnp.linalg.norm(flat, axis=-1, keepdims=True), 1e-8)
    cos = jnp.einsum('bcin,bcjn->bcij', unit, unit)
    pairs = m * (m - 1) / 2
    upper = jnp.triu(jnp.ones((m, m)), k=1)
    return ((cos * upper).sum(axis=(2, 3)) / max(pairs, 1)).mean()
  raise ValueError(f'diversity_loss must be one of {DIVERSITY_LOSSES[1:]}, got {kind!r}.')
