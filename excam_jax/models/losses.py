"""Loss terms of training: the multi-label classification loss and the map diversity term."""

import jax.numpy as jnp
import optax

from excam_jax import config_checks

DIVERSITY_LOSSES = config_checks.DIVERSITY_LOSSES


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
