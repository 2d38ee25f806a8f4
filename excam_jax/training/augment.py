"""Input augmentations of training, run inside the jitted train step: Hide-and-Seek and CutMix.

Both are pure functions of (rng, batch) with static shapes: the step compiles once, and a run
keyed by fold_in(rng, step) repeats exactly when resumed. A hidden pixel is 0 in the normalised
input, the data set's mean colour, as in ACoL's erasing (models/acol.py).
"""

import jax
import jax.numpy as jnp

from excam_jax import config_schema


def hide_patches(rng, images, grid, drop_rate):
  """Hide-and-Seek (Singh & Lee 2017): zeroes random grid x grid-pixel squares of each image.

  Square (i, j) covers rows [i g, min((i + 1) g, H)) and columns [j g, min((j + 1) g, W)), g =
  grid: the last row and column of squares are partial where g does not divide H or W. Each
  square of each image is hidden independently with probability drop_rate:
  out[b, y, x] = keep[b, y // g, x // g] * images[b, y, x], keep ~ Bernoulli(1 - drop_rate).

  Args:
    rng: a PRNG key.
    images: (B, H, W, C) normalised images.
    grid: the squares' side in pixels (a Python int >= 1).
    drop_rate: the probability that a square is hidden, in [0, 1].

  Returns:
    (B, H, W, C) images, hidden squares 0.
  """
  b, h, w, _ = images.shape
  rows, cols = -(-h // grid), -(-w // grid)
  keep = jax.random.uniform(rng, (b, rows, cols)) >= drop_rate
  keep = jnp.repeat(jnp.repeat(keep, grid, axis=1), grid, axis=2)[:, :h, :w, None]
  return jnp.where(keep, images, jnp.zeros((), images.dtype))


def cutmix(rng, images, labels, beta, prob):
  """CutMix (Yun et al. 2019) as wsolevaluation trains it: one draw for the whole batch.

  With probability prob: lam ~ Beta(beta, beta), pi a random permutation of the batch, a box of
  sides c_h = floor(H sqrt(1 - lam)), c_w = floor(W sqrt(1 - lam)) around a uniform pixel
  (y, x), clipped: rows [clip(y - c_h // 2), clip(y + c_h // 2)), columns likewise (the
  reference's box); out_b = images[pi(b)] inside the box, images[b] outside; lam is then the
  true kept area 1 - |box| / (H W) (its mean is 163/240 = 0.68 for beta = 1, not 0.5: clipping
  shrinks the boxes near the border). Otherwise the images are unchanged and lam = 1.
  The loss is lam L(labels_a) + (1 - lam) L(labels_b) (see soft_labels).

  Args:
    rng: a PRNG key.
    images: (B, H, W, C).
    labels: (B, C) 0/1.
    beta: the Beta distribution's parameter, > 0.
    prob: the probability that the batch is mixed, in [0, 1].

  Returns:
    (mixed images, (labels_a, labels_b, lam)): labels_a = labels, labels_b = labels[pi], lam a
    float32 scalar.
  """
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  b, h, w, _ = images.shape
  mix_rng, lam_rng, perm_rng, y_rng, x_rng = jax.random.split(rng, 5)
  cut = jnp.sqrt(1.0 - jax.random.beta(lam_rng, beta, beta))

  def span(size, key):  # [low, high) of the box along one axis, as a (size,) mask.
    half = jnp.floor(size * cut).astype(jnp.int32) // 2
    centre = jax.random.randint(key, (), 0, size)
    at = jnp.arange(size)
    return (at >= jnp.clip(centre - half, 0, size)) & (at < jnp.clip(centre + half, 0, size))

  box = span(h, y_rng)[:, None] & span(w, x_rng)[None, :]
  box = box & (jax.random.uniform(mix_rng) < prob)
  perm = jax.random.permutation(perm_rng, b)
  mixed = jnp.where(box[None, :, :, None], images[perm], images)
  lam = 1.0 - box.sum(dtype=jnp.float32) / (h * w)
  return mixed, (labels, labels[perm], lam)


def soft_labels(labels_a, labels_b, lam):
  """lam labels_a + (1 - lam) labels_b: as BCE is linear in the labels, BCE(z, this) =
  lam BCE(z, labels_a) + (1 - lam) BCE(z, labels_b), CutMix's loss; its positive entries are
  the classes present in the mixed image (ACoL's stage 'b' erases for them)."""
  return lam * labels_a + (1.0 - lam) * labels_b


def from_config(train):
  """config.train.augment as f(rng, images, labels) -> (images, labels), or None for 'none'.

  Fields absent from a config (saved before they existed) take config_schema.AUGMENT_DEFAULTS.
  CutMix returns soft_labels.
  """
  field = {name: train.get(name, default)
           for name, default in config_schema.AUGMENT_DEFAULTS.items()}
  if field['augment'] == 'has':
    return lambda rng, images, labels: (
        hide_patches(rng, images, field['has_grid'], field['has_drop_rate']), labels)
  if field['augment'] == 'cutmix':
    def mix(rng, images, labels):
      mixed, pair = cutmix(rng, images, labels, field['cutmix_beta'], field['cutmix_prob'])
      return mixed, soft_labels(*pair)
    return mix
  return None
