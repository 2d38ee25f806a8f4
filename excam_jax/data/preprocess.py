"""Preprocessing: small dict -> dict functions on single examples, usable eagerly and in tf.data.

An example entering these functions holds:
  image          uint8 (H, W, 3), or a scalar string of encoded bytes before `decode_image`.
  boxes          float32 (n, 4) TFDS-normalised [ymin, xmin, ymax, xmax].
  box_labels     int32 (n,).
  box_difficult  bool (n,).
  image_id       int32 scalar.
and may hold (single-label TFDS sets, data/cub_tfds.py):
  class_id           int32 scalar, passed through.
  segmentation_mask  scalar string: the encoded mask (PNG, one channel), dropped from the output;
                     decoded into object_mask when `prepare_example(object_masks=True)`.
Normalised boxes do not change under an anisotropic resize, so only the flip touches them.
"""

import tensorflow as tf

from excam_jax.data import image_ops

IMAGENET_MEAN, IMAGENET_STD = image_ops.IMAGENET_MEAN, image_ops.IMAGENET_STD
normalize, denormalize = image_ops.normalize, image_ops.denormalize
# A segmentation mask's pixel is object from this grey level on (half of 255: a binary 0/255 mask
# keeps its objects; a soft one its majority).
MASK_THRESHOLD = 128


def decode_image(example):
  """Decodes the encoded image bytes into uint8 (H, W, 3) and records the original size."""
  example = dict(example)
  image = tf.io.decode_image(example['image'], channels=3, expand_animations=False)
  example['image'] = image
  example['orig_size'] = tf.shape(image)[:2]
  return example


def set_orig_size(example):
  """Records the size of an already decoded image as orig_size (height, width)."""
  example = dict(example)
  example['orig_size'] = tf.shape(example['image'])[:2]
  return example


def from_one_based_corners(example):
  """Moves ymin, xmin from 1-based pixel indices to the package's 0-based edges.

  TFDS stores a VOC box as (ymin/H, xmin/W, ymax/H, xmax/W) straight from the XML, whose pixel
  indices start at 1. In the package's convention (x1, x2 inclusive 0-based pixels) a box is
  (y1/H, x1/W, (y2+1)/H, (x2+1)/W): the 1-based maxima already equal y2+1, x2+1, while the
  1-based minima are one pixel too far. Needs orig_size (after decoding).
  """
  example = dict(example)
  size = tf.cast(example['orig_size'], tf.float32)
  shift = tf.stack([1.0 / size[0], 1.0 / size[1], 0.0, 0.0])
  example['boxes'] = tf.maximum(tf.cast(example['boxes'], tf.float32) - shift, 0.0)
  return example


def from_inclusive_maxima(example):
  """Moves ymax, xmax from inclusive pixel indices to the package's edges, one pixel further.

  TFDS stores a CUB-200-2011 box as (y/H, x/W, (y+h)/H, (x+w)/W) from bounding_boxes.txt's x, y,
  width, height; wsolevaluation's metadata lists the same box as the inclusive pixels x0 = x,
  x1 = x + w (and scores it so). In the package's convention that box is (y/H, x/W, (y+h+1)/H,
  (x+w+1)/W), clipped to the image. Needs orig_size (after decoding).
  """
  example = dict(example)
  size = tf.cast(example['orig_size'], tf.float32)
  shift = tf.stack([0.0, 0.0, 1.0 / size[0], 1.0 / size[1]])
  example['boxes'] = tf.minimum(tf.cast(example['boxes'], tf.float32) + shift, 1.0)
  return example


def object_mask(encoded, size, threshold=MASK_THRESHOLD):
  """uint8 (size, size) of an encoded one-channel mask: 1 where it is >= threshold, 0 elsewhere.

  Nearest neighbour without half-pixel centres: output row o reads row floor(o * H / size), as
  cv2.resize with INTER_NEAREST (wsolevaluation's get_mask; data/wsol.py `_nearest`).
  """
  mask = tf.io.decode_image(encoded, channels=1, expand_animations=False)
  mask = tf.raw_ops.ResizeNearestNeighbor(images=mask[None], size=[size, size],
                                          align_corners=False, half_pixel_centers=False)
  return tf.cast(mask[0, :, :, 0] >= threshold, tf.uint8)


def resize(example, size):
  """Resizes the image anisotropically to size x size (bilinear, half-pixel centres), float32 [0, 1].

  The resize runs on the uint8 pixels, before the conversion to float, and without antialiasing:
  together about twice as fast as tf.image.resize with antialias, which keeps a 2-core machine
  above 500 VOC images/s; downscaling 500 x 375 to 224 is at most a 2.2x reduction.
  """
  example = dict(example)
  image = example['image']
  scale = 1.0 / 255.0 if image.dtype == tf.uint8 else 1.0
  if tuple(image.shape[:2]) != (size, size):
    image = tf.raw_ops.ResizeBilinear(images=image[None], size=[size, size],
                                      half_pixel_centers=True)[0]
  example['image'] = tf.cast(image, tf.float32) * scale
  return example


def flip_left_right(example):
  """Mirrors the image and its boxes horizontally: xmin' = 1 - xmax, xmax' = 1 - xmin."""
  example = dict(example)
  example['image'] = tf.reverse(example['image'], axis=[1])
  if 'boxes' in example:
    ymin, xmin, ymax, xmax = tf.unstack(example['boxes'], axis=-1)
    example['boxes'] = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
  return example


def random_flip(example, seed):
  """Flips with probability 1/2, decided by a stateless draw from `seed` (shape (2,) int).

  A stateless draw keyed by the example's position in the stream makes the pipeline
  deterministic and exactly resumable whatever the parallelism.
  """
  flip = tf.random.stateless_uniform([], seed=seed) < 0.5
  return tf.cond(flip, lambda: flip_left_right(example), lambda: dict(example))


def normalize_image(example):
  """Applies `normalize` to the example's [0, 1] image."""
  example = dict(example)
  example['image'] = normalize(example['image'])
  return example


def multi_hot(example, num_classes):
  """Adds label (multi-hot over all objects) and ignore (classes present only as difficult).

  label[c] = 1 if any object has class c; ignore[c] = label[c] and no non-difficult object has c.
  """
  example = dict(example)
  labels = tf.cast(example['box_labels'], tf.int32)
  valid = labels >= 0
  onehot = tf.one_hot(tf.where(valid, labels, 0), num_classes, dtype=tf.float32)
  onehot *= tf.cast(valid, tf.float32)[:, None]
  easy = tf.cast(tf.logical_not(example['box_difficult']), tf.float32)[:, None]
  present = tf.reduce_max(tf.concat([onehot, tf.zeros((1, num_classes))], 0), axis=0)
  present_easy = tf.reduce_max(tf.concat([onehot * easy, tf.zeros((1, num_classes))], 0), axis=0)
  example['label'] = present
  example['ignore'] = tf.logical_and(present > 0, present_easy == 0)
  return example


def pad_boxes(example, max_boxes):
  """Pads (or truncates) boxes, box_labels (-1 pad) and box_difficult to max_boxes rows."""
  example = dict(example)
  n = tf.minimum(tf.shape(example['box_labels'])[0], max_boxes)
  pad = max_boxes - n
  example['boxes'] = tf.pad(tf.cast(example['boxes'][:n], tf.float32), [[0, pad], [0, 0]])
  example['box_labels'] = tf.pad(
      tf.cast(example['box_labels'][:n], tf.int32), [[0, pad]], constant_values=-1)
  example['box_difficult'] = tf.pad(example['box_difficult'][:n], [[0, pad]])
  example['boxes'].set_shape((max_boxes, 4))
  example['box_labels'].set_shape((max_boxes,))
  example['box_difficult'].set_shape((max_boxes,))
  return example


def prepare_example(example, *, size, num_classes, max_boxes, encoded, flip_seed=None,
                    one_based_boxes=False, inclusive_maxima=False, object_masks=False):
  """Full per-example preprocessing to the batch format of `excam_jax.data` (mask included).

  Args:
    example: a raw example (see the module docstring).
    size: S, the side of the output image.
    num_classes: C, the length of label and ignore.
    max_boxes: rows of the padded box arrays.
    encoded: whether `image` holds encoded bytes (VOC) or decoded uint8 pixels (parts).
    flip_seed: (2,) int stateless seed for the random horizontal flip; None for evaluation.
    one_based_boxes: the boxes' minima are 1-based pixel indices (TFDS VOC), see
      `from_one_based_corners`.
    inclusive_maxima: the boxes' maxima are inclusive pixel indices (TFDS CUB), see
      `from_inclusive_maxima`.
    object_masks: decode example['segmentation_mask'] into object_mask, uint8 (S, S) (evaluation;
      the mask is not flipped). The encoded mask is dropped either way.

  Returns:
    A dict with image, label, ignore, boxes, box_labels, box_difficult, orig_size, image_id, mask
    (and class_id, object_mask when asked for, if the example has them).
  """
  example = dict(example)
  encoded_mask = example.pop('segmentation_mask', None)
  example = decode_image(example) if encoded else set_orig_size(example)
  if one_based_boxes:
    example = from_one_based_corners(example)
  if inclusive_maxima:
    example = from_inclusive_maxima(example)
  if object_masks:
    example['object_mask'] = object_mask(encoded_mask, size)
  example = resize(example, size)
  if flip_seed is not None:
    example = random_flip(example, flip_seed)
  example = normalize_image(example)
  example = multi_hot(example, num_classes)
  example = pad_boxes(example, max_boxes)
  example['orig_size'] = tf.cast(example['orig_size'], tf.int32)
  example['image_id'] = tf.cast(example['image_id'], tf.int32)
  if 'class_id' in example:
    example['class_id'] = tf.cast(example['class_id'], tf.int32)
  example['mask'] = tf.constant(1.0, tf.float32)
  return example
