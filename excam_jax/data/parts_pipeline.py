"""Batches of the built-in parts data set, in numpy: no TensorFlow in a parts run.

The order follows the rules of `excam_jax.data.pipeline`: epoch e is a permutation of the split
drawn from (config.train.seed, e); position p of the concatenated epochs is example p % B of global step
p // B, process i keeps positions with (p % B) // (B / P) == i, and the flip of position p is a
draw keyed by (config.train.seed, p). A batch therefore depends only on (config, step), never on how
many processes share it, and a resumed run reads exactly the batches it would have read.
"""

import math

import numpy as np

from excam_jax.data import image_ops
from excam_jax.data import synthetic

_FLIP_STREAM = 1  # Keeps the flip draws apart from the permutations' streams.


def _split(config, split):
  """The split, rendered on demand (the first batch does not wait for the whole split)."""
  p = config.data.parts
  num = p.num_train if split == 'train' else p.num_eval
  return synthetic.split_of(p.seed, split, num, **synthetic.options(p))


def _permutation(seed, epoch, n):
  return np.random.default_rng([seed, epoch]).permutation(n)


def flips(seed, positions):
  """Whether each stream position's image is mirrored: a stateless draw per (seed, p)."""
  return np.array([np.random.default_rng([seed, _FLIP_STREAM, int(p)]).random() < 0.5
                   for p in positions], bool)


def _labels(box_labels, box_difficult, num_classes):
  """Multi-hot labels and the classes present only as difficult objects (see preprocess)."""
  valid = box_labels >= 0
  onehot = np.zeros(box_labels.shape + (num_classes,), bool)
  rows, cols = np.nonzero(valid)
  onehot[rows, cols, box_labels[rows, cols]] = True
  present = onehot.any(axis=1)
  present_easy = (onehot & ~box_difficult[..., None]).any(axis=1)
  return present.astype(np.float32), present & ~present_easy


def _batch(split, indices, size, num_classes, flip=None):
  """The batch format of `excam_jax.data` for examples `indices` of a `synthetic.Split`."""
  arrays = split.take(indices)
  images = image_ops.resize_bilinear(arrays['image'], size, size) / np.float32(255.0)
  boxes = arrays['boxes']
  if flip is not None and flip.any():
    images[flip] = images[flip][:, :, ::-1]
    ymin, xmin, ymax, xmax = np.moveaxis(boxes[flip], -1, 0)
    boxes[flip] = np.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
  box_labels = arrays['box_labels']
  difficult = arrays['box_difficult']
  label, ignore = _labels(box_labels, difficult, num_classes)
  side = split.image_size
  return {
      'image': image_ops.normalize(images).astype(np.float32),
      'label': label, 'ignore': ignore,
      'boxes': np.where(box_labels[..., None] >= 0, boxes, 0.0).astype(np.float32),
      'box_labels': box_labels.astype(np.int32), 'box_difficult': difficult.astype(bool),
      'orig_size': np.full((len(indices), 2), side, np.int32),
      'image_id': arrays['image_id'].astype(np.int32),
      'mask': np.ones(len(indices), np.float32),
  }


def train_batches(config, local, *, start_step, process_index):
  """Infinite iterator of this process's training batches from `start_step` on."""
  split = _split(config, config.data.train_split)
  n, global_batch = len(split), config.train.batch_size
  step = start_step
  orders = {}
  while True:
    positions = step * global_batch + process_index * local + np.arange(local)
    epochs = positions // n
    for e in np.unique(epochs):
      if e not in orders:
        orders[e] = _permutation(config.train.seed, int(e), n)
    orders = {e: order for e, order in orders.items() if e >= epochs.min()}
    indices = np.array([orders[e][p % n] for e, p in zip(epochs, positions)])
    yield _batch(split, indices, config.data.image_size, config.data.parts.num_classes,
                 flips(config.train.seed, positions))
    step += 1


def eval_batches(config, split, local, *, process_index):
  """The split in order, padded with mask-0 examples to whole global batches."""
  examples = _split(config, split)
  n, global_batch = len(examples), config.eval.batch_size
  for start in range(0, math.ceil(n / global_batch) * global_batch, global_batch):
    positions = start + process_index * local + np.arange(local)
    real = positions[positions < n]
    batch = _batch(examples, real, config.data.image_size, config.data.parts.num_classes)
    pad = local - len(real)
    if pad:
      batch = {k: np.concatenate([v, _padding(v, k, pad)]) for k, v in batch.items()}
    yield batch


def _padding(value, key, count):
  """`count` mask-0 rows for field `key`: zeros, with box_labels and image_id -1."""
  fill = -1 if key in ('box_labels', 'image_id') else 0
  return np.full((count,) + value.shape[1:], fill, value.dtype)
