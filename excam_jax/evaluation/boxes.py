"""From class maps to boxes: the one path (`map_to_boxes`) and its batched pieces.

Box conventions. Inside the code boxes are TFDS-normalised [ymin, xmin, ymax, xmax] in [0, 1].
The public functions of this module and of metrics.py take and give inclusive pixel boxes
(x1, y1, x2, y2): the box covers columns x1..x2 and rows y1..y2 of an image of width W and
height H. The conversion at the edge is

  x1 = floor(xmin * W),  x2 = ceil(xmax * W) - 1   (the same for y with H)
  xmin = x1 / W,         xmax = (x2 + 1) / W

so a pixel box survives the round trip exactly.

Class maps are upsampled bilinearly with half-pixel centres and clamped edges (the convention of
jax.image.resize, OpenCV INTER_LINEAR and PyTorch align_corners=False). Connected components are
8-connected and come from scipy.ndimage.label.
"""

import functools
from typing import NamedTuple

import numpy as np
import scipy.ndimage

from excam_jax.errors import UserError

# 8-connectivity in the last two axes only: stacked maps never touch each other.
_EIGHT = np.ones((3, 3), dtype=bool)


def check_finite(maps, what='class map'):
  """Raises UserError when a map holds NaN or infinity (a diverged model)."""
  if not np.all(np.isfinite(maps)):
    raise UserError(f'The {what} holds NaN or infinite values: the model diverged; evaluate an '
                    'earlier checkpoint or retrain with a lower learning rate.')


@functools.lru_cache(maxsize=256)
def interpolation_matrix(out_size, in_size):
  """Returns the (out_size, in_size) matrix of 1-D bilinear upsampling.

  Output sample i sits at source coordinate (i + 0.5) * in_size / out_size - 0.5, clamped to
  [0, in_size - 1]; its value mixes the two nearest input samples linearly.
  """
  src = (np.arange(out_size, dtype=np.float64) + 0.5) * in_size / out_size - 0.5
  src = np.clip(src, 0.0, in_size - 1)
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  matrix = np.zeros((out_size, in_size), dtype=np.float64)
  rows = np.arange(out_size)
  np.add.at(matrix, (rows, lo), 1.0 - frac)
  np.add.at(matrix, (rows, hi), frac)
  matrix = matrix.astype(np.float32)
  matrix.flags.writeable = False  # Cached and shared.
  return matrix


@functools.lru_cache(maxsize=256)
def _band_edges(out_size, in_size):
  """Output rows that start or end a band of rows mixing the same two input rows."""
  band = [tuple(np.flatnonzero(r)) for r in interpolation_matrix(out_size, in_size)]
  edge = [i in (0, out_size - 1) or band[i] != band[i - 1] or band[i] != band[i + 1]
          for i in range(out_size)]
  return np.flatnonzero(edge)


def upsample(maps, height, width):
  """Bilinearly resizes maps (..., h, w) to (..., height, width) with separable matrices."""
  maps = np.asarray(maps, dtype=np.float32)
  rows = interpolation_matrix(height, maps.shape[-2])
  cols = interpolation_matrix(width, maps.shape[-1])
  return np.matmul(rows, np.matmul(maps, cols.T))


def upsampled_argmax(maps, height, width):
  """Argmax of each map (..., h, w) bilinearly upsampled to height x width, without upsampling.

  Between two input rows an output row is a convex combination (1 - a) u + a v of two
  column-upsampled rows, and its maximum over columns is convex in a: over the rows of one band
  (the rows mixing the same two input rows) it peaks at the band's first or last row. Only those
  rows are evaluated; the result equals the argmax of the full upsampled map (first in raster
  order on ties).

  Returns:
    int64 (..., 2): the point (x, y) in output pixels.
  """
  maps = np.asarray(maps, dtype=np.float32)
  rows = interpolation_matrix(height, maps.shape[-2])
  cols = interpolation_matrix(width, maps.shape[-1])
  candidates = _band_edges(height, maps.shape[-2])
  values = np.matmul(rows[candidates], np.matmul(maps, cols.T))
  flat = values.reshape(values.shape[:-2] + (-1,)).argmax(axis=-1)
  return np.stack([flat % width, candidates[flat // width]], axis=-1).astype(np.int64)


def normalized_to_pixels(boxes, height, width):
  """Converts TFDS-normalised boxes (..., 4) [ymin, xmin, ymax, xmax] to inclusive pixel boxes.

  Returns int64 (..., 4) as (x1, y1, x2, y2) with x1 = floor(xmin * W), x2 = ceil(xmax * W) - 1,
  clipped to the image and with x2 >= x1. `height` and `width` broadcast against boxes[..., 0].
  """
  boxes = np.asarray(boxes, dtype=np.float64)
  height = np.asarray(height, dtype=np.float64)
  width = np.asarray(width, dtype=np.float64)
  # Boxes arrive as float32: k / W * W misses k by up to ~3e-5 pixels at VOC sizes. A 1e-3 px
  # slack absorbs that and is far below any real fractional edge.
  x1 = np.floor(boxes[..., 1] * width + 1e-3)
  y1 = np.floor(boxes[..., 0] * height + 1e-3)
  x2 = np.ceil(boxes[..., 3] * width - 1e-3) - 1
  y2 = np.ceil(boxes[..., 2] * height - 1e-3) - 1
  x1 = np.clip(x1, 0, width - 1)
  y1 = np.clip(y1, 0, height - 1)
  x2 = np.clip(np.maximum(x2, x1), 0, width - 1)
  y2 = np.clip(np.maximum(y2, y1), 0, height - 1)
  return np.stack([x1, y1, x2, y2], axis=-1).astype(np.int64)


def pixels_to_normalized(boxes, height, width):
  """Converts inclusive pixel boxes (..., 4) (x1, y1, x2, y2) to TFDS-normalised boxes."""
  boxes = np.asarray(boxes, dtype=np.float64)
  return np.stack([boxes[..., 1] / height, boxes[..., 0] / width,
                   (boxes[..., 3] + 1) / height, (boxes[..., 2] + 1) / width], axis=-1)


def cam_to_boxes(cam, threshold):
  """Boxes of the 8-connected components of `cam > threshold`, largest component first.

  Args:
    cam: 2-D class map at image resolution (already upsampled).
    threshold: cells strictly above it are foreground.

  Returns:
    A list of inclusive pixel boxes (x1, y1, x2, y2), one per component, sorted by the
    component's pixel count, largest first (ties: the component met first in raster order).

  Raises:
    UserError: if `cam` is not 2-D or holds NaN or infinite values.
  """
  cam = np.asarray(cam)
  if cam.ndim != 2:
    raise UserError(f'cam_to_boxes needs a 2-D map at image resolution, got shape {cam.shape}.')
  check_finite(cam)
  comps = components(cam[None] > threshold)
  order = np.argsort(-comps.area, kind='stable')
  return [tuple(int(v) for v in comps.boxes[i]) for i in order]


def map_to_boxes(class_map, height, width, threshold=0.0):
  """The one path from a class map to boxes: what the metrics, the figures and `localize` use.

  The map (h, w) is upsampled bilinearly to the original image size (height, width), cells with
  z > threshold (z > 0 is sigma(z) > 0.5) form 8-connected components, and each gives an
  inclusive pixel box of the original image, largest component first (see `cam_to_boxes`).
  """
  return cam_to_boxes(upsample(class_map, int(height), int(width)), threshold)


class Components(NamedTuple):
  """Connected components of a stack of masks, in raster order of their first pixel.

  map_index: (K,) index of the mask each component belongs to (non-decreasing).
  area: (K,) pixel count.
  boxes: (K, 4) inclusive (x1, y1, x2, y2) in the mask's pixel grid.
  """
  map_index: np.ndarray
  area: np.ndarray
  boxes: np.ndarray


def components(masks):
  """Labels a stack of boolean masks (..., H, W) at once, 8-connected within each mask.

  All leading axes are flattened into one stack axis; `map_index` indexes that flattened axis.
  """
  masks = np.asarray(masks, dtype=bool)
  height, width = masks.shape[-2:]
  stack = masks.reshape(-1, height, width)
  if not stack.size:
    return Components(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.int64))
  structure = np.zeros((3, 3, 3), dtype=bool)
  structure[1] = _EIGHT
  labels, count = scipy.ndimage.label(stack, structure=structure)
  # Labels grow in raster order, so each mask owns a contiguous range of them.
  last = labels.reshape(len(stack), -1).max(axis=1)
  first = np.concatenate([[0], np.maximum.accumulate(last)[:-1]]) + 1
  per_map = np.where(last > 0, last - first + 1, 0)
  map_index = np.repeat(np.arange(len(stack)), per_map)
  area = np.zeros(count, dtype=np.int64)
  boxes = np.zeros((count, 4), dtype=np.int64)
  single = np.flatnonzero(per_map == 1)
  if len(single):
    # Most masks hold one component: its box is the mask's own extent.
    area[first[single] - 1], boxes[first[single] - 1] = _mask_extents(stack[single])
  multi = np.flatnonzero(per_map > 1)
  if len(multi):
    sub = labels[multi]
    area += np.bincount(sub.ravel(), minlength=count + 1)[1:]
    for lab, found in enumerate(scipy.ndimage.find_objects(sub)):
      if found is not None:
        boxes[lab] = (found[2].start, found[1].start, found[2].stop - 1, found[1].stop - 1)
  return Components(map_index, area, boxes)


def _mask_extents(masks):
  """Pixel counts (K,) and inclusive boxes (K, 4) of non-empty masks (K, H, W)."""
  rows = masks.any(axis=2)
  cols = masks.any(axis=1)
  y1 = np.argmax(rows, axis=1)
  y2 = rows.shape[1] - 1 - np.argmax(rows[:, ::-1], axis=1)
  x1 = np.argmax(cols, axis=1)
  x2 = cols.shape[1] - 1 - np.argmax(cols[:, ::-1], axis=1)
  return masks.sum(axis=(1, 2)), np.stack([x1, y1, x2, y2], axis=1)


def grid_boxes_to_pixels(boxes, grid_height, grid_width, height, width):
  """Maps inclusive boxes on a working grid to inclusive pixel boxes of the original image."""
  boxes = np.asarray(boxes)
  normalized = pixels_to_normalized(boxes, grid_height, grid_width)
  return normalized_to_pixels(normalized, height, width)


def normalize_minmax(maps):
  """Min-max normalises each map (..., H, W) to [0, 1]; a constant map becomes all zeros."""
  maps = np.asarray(maps, dtype=np.float32)
  low = maps.min(axis=(-2, -1), keepdims=True)
  span = maps.max(axis=(-2, -1), keepdims=True) - low
  safe = np.where(span > 0, span, 1.0)
  return np.where(span > 0, (maps - low) / safe, 0.0).astype(np.float32)
