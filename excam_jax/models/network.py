"""The network: ResNet trunk + a head chosen by config, its loss terms and config checks."""

import math

import flax.linen as nn
import jax.numpy as jnp
import optax

from excam_jax.errors import check_field
from excam_jax.models import resnet
from excam_jax.models import variants
from excam_jax.models import wildcat

HEADS = ('excam', 'wildcat', 'adl', 'cam')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
LEARN_THRESHOLD = ('none', 'scalar', 'per_class')
DIVERSITY_LOSSES = ('none', 'pairwise_l2', 'cosine')


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


def validate_config(config):
  """Checks the model-defining fields of a full config; raises ConfigError naming a bad one."""
  m = config.model
  size = config.image_size
  check_field(m.head in HEADS, 'model.head', m.head, f'one of {HEADS}')
  check_field(m.depth in resnet.STAGES, 'model.depth', m.depth, f'one of {sorted(resnet.STAGES)}')
  check_field(isinstance(m.width, int) and m.width >= 1, 'model.width', m.width, 'an int >= 1')
  check_field(m.output_stride in resnet.OUTPUT_STRIDES, 'model.output_stride', m.output_stride,
              f'one of {resnet.OUTPUT_STRIDES}')
  check_field(isinstance(size, int) and size >= 32 and size % 32 == 0, 'image_size', size,
              'a positive multiple of 32 (e.g. 224 or 448)')
  check_field(isinstance(m.num_maps, int) and m.num_maps >= 1, 'model.num_maps', m.num_maps,
              'an int >= 1')
  n = (size // m.output_stride) ** 2
  check_field(0 < m.kmax < 1 or 1 <= m.kmax <= n, 'model.kmax', m.kmax,
              f'a fraction in (0, 1) or a count in [1, {n}] (h*w of the final map)')
  check_field(m.kmin is None or 0 <= m.kmin < 1 or 1 <= m.kmin <= n, 'model.kmin', m.kmin,
              f'0 (off), a fraction in (0, 1) or a count in [1, {n}]')
  check_field(math.isfinite(m.alpha), 'model.alpha', m.alpha, 'a finite float')
  check_field(0 < m.drop_threshold < 1, 'model.drop_threshold', m.drop_threshold, 'delta in (0, 1)')
  check_field(m.temperature > 0, 'model.temperature', m.temperature, 'a float > 0')
  check_field(m.learn_threshold in LEARN_THRESHOLD, 'model.learn_threshold', m.learn_threshold,
              f'one of {LEARN_THRESHOLD}')
  check_field(m.dtype in DTYPES, 'model.dtype', m.dtype, f'one of {tuple(DTYPES)}')
  check_field(0 < m.adl_gamma <= 1, 'model.adl_gamma', m.adl_gamma, 'a float in (0, 1]')
  check_field(0 <= m.adl_drop_rate <= 1, 'model.adl_drop_rate', m.adl_drop_rate,
              'a float in [0, 1]')
  if 'diversity_loss' in config:
    check_field(config.diversity_loss in DIVERSITY_LOSSES, 'diversity_loss', config.diversity_loss,
                f'one of {DIVERSITY_LOSSES}')
    check_field(config.diversity_loss == 'none' or m.head != 'cam', 'diversity_loss',
                config.diversity_loss, "'none' with model.head='cam' (it has no per-class maps)")
