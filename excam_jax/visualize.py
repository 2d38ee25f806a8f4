"""Figures of the evaluation: per-class AP bars, box overlays and class-map heat overlays.

Images are RGB everywhere (channel 0 is red), float in [0, 1] or uint8. Overlays are drawn with
numpy into RGB uint8 arrays, pixel-exact; matplotlib only lays panels out and writes PNGs. The
figures use matplotlib's object API (no pyplot), so no display or global state is involved.
Class maps are drawn each on its own scale (`heat_fn`).
"""

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from excam_jax.errors import UserError

RED = (255, 0, 0)  # Ground truth, as in the thesis's Fig. 4.
GREEN = (0, 255, 0)  # Predictions.


def to_rgb_uint8(image):
  """Returns an RGB uint8 copy of an image (H, W, 3) given as uint8 or as floats in [0, 1]."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise UserError(f'expected an RGB image of shape (H, W, 3), got {image.shape}.')
  if image.dtype == np.uint8:
    return image.copy()
  return np.clip(np.round(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)


def draw_box(canvas, box, colour, width=2):
  """Draws the outline of an inclusive pixel box (x1, y1, x2, y2) into canvas, in place.

  The outline lies inside the box, `width` pixels thick, clipped to the canvas.
  """
  height, wide = canvas.shape[:2]
  x1, y1, x2, y2 = (int(v) for v in box)
  x1, y1 = max(x1, 0), max(y1, 0)
  x2, y2 = min(x2, wide - 1), min(y2, height - 1)
  if x1 > x2 or y1 > y2:
    return canvas
  canvas[y1:min(y1 + width, y2 + 1), x1:x2 + 1] = colour
  canvas[max(y2 - width + 1, y1):y2 + 1, x1:x2 + 1] = colour
  canvas[y1:y2 + 1, x1:min(x1 + width, x2 + 1)] = colour
  canvas[y1:y2 + 1, max(x2 - width + 1, x1):x2 + 1] = colour
  return canvas


def overlay_boxes(image, gt_boxes=(), pred_boxes=(), width=2):
  """RGB uint8 image with ground-truth boxes in red and predicted boxes in green (drawn last)."""
  canvas = to_rgb_uint8(image)
  for box in gt_boxes:
    draw_box(canvas, box, RED, width)
  for box in pred_boxes:
    draw_box(canvas, box, GREEN, width)
  return canvas


def overlay_cam(image, cam, alpha=0.5, vmin=0.0, vmax=1.0, colormap='jet'):
  """Blends a class map (H, W) at image resolution over an RGB image as a heat map.

  The map is scaled by the fixed range [vmin, vmax] (not its own extremes), so a constant map is
  drawn as one colour. NaN values raise UserError.
  """
  canvas = to_rgb_uint8(image).astype(np.float64) / 255
  cam = np.asarray(cam, np.float64)
  if cam.shape != canvas.shape[:2]:
    raise UserError(f'the class map {cam.shape} must match the image {canvas.shape[:2]}.')
  if not np.all(np.isfinite(cam)):
    raise UserError('the class map holds NaN or infinite values: the model diverged.')
  scaled = np.clip((cam - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
  heat = colormaps[colormap](scaled)[..., :3]  # RGBA -> RGB.
  return to_rgb_uint8((1 - alpha) * canvas + alpha * heat)


def sigmoid(z):
  """sigmoid(z) = 1 / (1 + exp(-z)) in float64: how maps on the logit scale are drawn."""
  return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def heat_fn(model, expansion=None):
  """z -> heat in [0, 1]: the display scale of a run's class maps (the one place that knows it).

  Maps on the logit scale (the heads' own maps, ACoL's 'logits' fusion, 'erase', whose cellwise
  max over passes keeps the scale of the maps it is given) are drawn as sigmoid(z). Maps stored
  as n - b with n in [0, 1] are drawn as n = clip(z + b, 0, 1): ACoL's 'normalised' fusion
  (b = 0.5), the 'relative' and '*+relative' transforms (b = map_expansion_threshold) and
  'advcam' (A / max A, b = 0). A sigmoid would squeeze those into a quarter of the colours.

  Args:
    model: config.model (its head and acol_fusion; an absent acol_fusion is 'normalised').
    expansion: the map-transform fields (evaluation.inference.transform_fields), or None for
      the plain maps.
  """
  fields = expansion or {}
  kind = fields.get('map_expansion', 'none')
  if kind.endswith('relative'):
    offset = float(fields['map_expansion_threshold'])
  elif kind == 'advcam':
    offset = 0.0
  elif model['head'] == 'acol' and model.get('acol_fusion', 'normalised') == 'normalised':
    offset = 0.5
  else:
    return sigmoid
  return lambda z: np.clip(np.asarray(z, np.float64) + offset, 0.0, 1.0)


def save_ap_bars(path, class_names, runs, title='', ylabel='AP'):
  """Grouped bars of per-class values, one colour per run (the thesis's Figs. 2 and 3).

  Args:
    path: PNG file to write.
    class_names: the C class names (x axis).
    runs: dict run name -> C values (NaN drawn as a missing bar).
    title: figure title.
    ylabel: y-axis label.
  """
  fig = Figure(figsize=(max(6.0, 0.55 * len(class_names) * max(len(runs), 1)), 4.0))
  ax = fig.add_subplot()
  step = 0.8 / max(len(runs), 1)
  x = np.arange(len(class_names))
  for k, (name, values) in enumerate(runs.items()):
    values = np.asarray(values, np.float64)
    if values.shape != (len(class_names),):
      raise UserError(f'run {name!r} has {values.size} values for {len(class_names)} classes.')
    ax.bar(x - 0.4 + step * (k + 0.5), np.nan_to_num(values), step, label=name)
  ax.set_xticks(x, class_names, rotation=60, ha='right')
  ax.set_ylabel(ylabel)
  ax.set_ylim(0, 1.05 if all(np.nanmax(np.r_[v, 0]) <= 1 for v in runs.values()) else None)
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def save_panels(path, panels, titles=None, columns=4, panel_inches=2.5):
  """Writes RGB uint8 panels (each (H, W, 3)) in a grid with optional titles."""
  if not panels:
    raise UserError(f'no images to draw in {path}.')
  rows = -(-len(panels) // columns)
  cols = min(columns, len(panels))
  fig = Figure(figsize=(cols * panel_inches, rows * panel_inches))
  for i, panel in enumerate(panels):
    ax = fig.add_subplot(rows, cols, i + 1)
    ax.imshow(to_rgb_uint8(panel), interpolation='nearest')  # RGB, as imshow expects.
    ax.set_axis_off()
    if titles:
      ax.set_title(titles[i], fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
