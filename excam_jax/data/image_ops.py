"""Image operations in numpy (no TensorFlow): the resize and normalisation of the pipelines.

`resize_bilinear` computes what TensorFlow's ResizeBilinear with half-pixel centres computes
(the VOC pipeline's resize), so the parts pipeline, `localize` and the figures match the VOC
path without loading TensorFlow.
"""

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(image01):
  """Maps an RGB image in [0, 1] to ImageNet-normalised values: (x - mean) / std per channel.

  Args:
    image01: float array or tensor (..., 3) with values in [0, 1] (numpy or TF).

  Returns:
    The normalised image, same type and shape.
  """
  return (image01 - IMAGENET_MEAN) / IMAGENET_STD


def denormalize(image):
  """Inverse of `normalize`: x * std + mean, for display."""
  return image * IMAGENET_STD + IMAGENET_MEAN


def _weights(in_size, out_size):
  """(out, in) float32 interpolation matrix of a half-pixel-centre bilinear resize.

  Output pixel o samples the input at x = (o + 0.5) * in / out - 0.5; with x0 = floor(x), it is
  (1 - f) * in[max(x0, 0)] + f * in[min(x0 + 1, in - 1)], f = x - x0 (TensorFlow's rule).
  """
  scale = np.float32(in_size) / np.float32(out_size)  # float32 arithmetic, as TensorFlow's.
  x = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  x0 = np.floor(x)
  frac = x - x0
  lower = np.clip(x0, 0, in_size - 1).astype(int)
  upper = np.clip(x0 + 1, 0, in_size - 1).astype(int)
  w = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(w, (rows, lower), 1.0 - frac)
  np.add.at(w, (rows, upper), frac)
  return w


def resize_bilinear(images, height, width):
  """Resizes (..., H, W, C) images to (..., height, width, C), float32 in the input's scale.

  Bilinear with half-pixel centres and no antialiasing, as tf.raw_ops.ResizeBilinear(
  half_pixel_centers=True); an image already of that size is only converted to float32.
  """
  images = np.asarray(images)
  in_h, in_w = images.shape[-3:-1]
  out = images.astype(np.float32)
  if (in_h, in_w) == (height, width):
    return out
  out = np.einsum('oh,...hwc->...owc', _weights(in_h, height), out)
  return np.einsum('ow,...hwc->...hoc', _weights(in_w, width), out)


def to_model_input(images_uint8, size):
  """uint8 (..., H, W, 3) images -> the model's float32 (..., size, size, 3) input."""
  return normalize(resize_bilinear(images_uint8, size, size) / 255.0).astype(np.float32)
