"""Loss terms of training: the classification losses (multi-label BCE, single-label softmax
cross-entropy), the map diversity term, the map-area penalty and BAS's background-activation
ratio."""

import jax
import jax.numpy as jnp
import optax

from excam_jax import config_schema

DIVERSITY_LOSSES = config_schema.DIVERSITY_LOSSES


def bce_loss(logits, labels, mask=None):
  """Sigmoid binary cross-entropy, mean over classes and over valid examples.

  loss = sum_b mask_b * mean_c BCE(sigmoid(logits_bc), labels_bc) / sum_b mask_b.
  Labels may be soft: BCE is linear in them, so CutMix's lam L(y_a) + (1 - lam) L(y_b) is
  bce_loss(logits, lam y_a + (1 - lam) y_b) (training/augment.py soft_labels).
  """
  return _mean(optax.sigmoid_binary_cross_entropy(logits, labels).mean(axis=-1), mask)


def softmax_loss(logits, labels, mask=None):
  """Softmax cross-entropy of single-label data (wsolevaluation's nn.CrossEntropyLoss), mean
  over valid examples.

  loss = sum_b mask_b * (-sum_c labels_bc log softmax(logits_b)_c) / sum_b mask_b, with labels the
  one-hot of each image's class. Soft labels work the same way: CE is linear in them, so CutMix's
  lam CE(z, y_a) + (1 - lam) CE(z, y_b) is softmax_loss(z, lam y_a + (1 - lam) y_b).
  """
  return _mean(optax.softmax_cross_entropy(logits, labels), mask)


def _mean(per_example, mask):
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


def area_loss(class_maps, labels, mask=None):
  """The map-area penalty: the mean of sigmoid(z_c) over the cells of each positive class's map.

  mean over the (image, class) pairs with labels 1 (and mask 1) of mean_{cells} sigmoid(z_c),
  i.e. the soft fraction of the map that says "class c here". Added with a weight to the loss,
  it leaves the top-k cells that carry the class score and pulls the rest of the positive
  classes' maps below zero (negative classes' maps are pushed down by the BCE already).
  Alone, on the classifier's own maps, it plays the role of the area constraint of BAS (Wu, Zhai
  and Cao, CVPR 2022) without BAS's background term; on the maps of a foreground generator
  (model.map_generator) it is BAS's area term, beside `background_loss`.

  Args:
    class_maps: (B, h, w, C).
    labels: (B, C) 0/1.
    mask: (B,) 1 for real examples (None: all).
  """
  area = jnp.mean(jax.nn.sigmoid(class_maps.astype(jnp.float32)), axis=(1, 2))  # (B, C)
  weight = labels if mask is None else labels * mask[:, None]
  return (area * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def background_loss(activation_maps, class_maps, labels, mask=None, eps=0.01, detach=False):
  """BAS's background-activation ratio (Wu, Zhai and Cao, CVPR 2022) for multi-label data.

  For each positive class c of an image, with a = relu(activation_maps_c) the classifier's
  activation and m = sigmoid(class_maps_c) the generator's foreground:
  ratio = mean_cells((1 - m) a) / (mean_cells(a) + eps), the share of the class's activation left
  in its background; the loss is its mean over the (image, class) pairs with labels 1 (and mask
  1). Beside `area_loss` (the mean of m) it asks for the smallest foreground that holds the
  activation: a cell is worth covering where a > (area weight / background weight) * mean(a).
  Its gradient reaches the classifier too (as in BAS), which moves activation into the
  foreground, unless `detach`: then only the generator (and the trunk under it) learns from it,
  and the classifier's activation is a fixed target. eps bounds the gradient of a class with
  almost no activation.

  Args:
    activation_maps: (B, h, w, C) the classifier's class maps z.
    class_maps: (B, h, w, C) the generator's logits g.
    labels: (B, C) 0/1.
    mask: (B,) 1 for real examples (None: all).
    eps: added to the mean activation.
    detach: stop the gradient to activation_maps.
  """
  a = jax.nn.relu(activation_maps.astype(jnp.float32))
  if detach:
    a = jax.lax.stop_gradient(a)
  outside = 1.0 - jax.nn.sigmoid(class_maps.astype(jnp.float32))
  ratio = jnp.mean(outside * a, axis=(1, 2)) / (jnp.mean(a, axis=(1, 2)) + eps)  # (B, C)
  weight = labels if mask is None else labels * mask[:, None]
  return (ratio * weight).sum() / jnp.maximum(weight.sum(), 1.0)
