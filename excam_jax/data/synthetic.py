"""The built-in synthetic "parts" data set: exact ground truth for the part-domination failure of WSOL.

Each image is a smooth random colour field with small clutter shapes and 1-2 objects (1-3 in
`small`) of distinct classes. An object is a large striped **body** (an ellipse, or a rounded
rectangle with probability 0.3) plus a small square **part** whose colour and pattern depend on
the class. In the `main`, `hard` and `small` presets every class shares the body's look, so a
classifier can win by looking at the part alone while the ground-truth box covers the whole
object (the presets are described below).

The **body cue** c in [0, 1] (`body_cue`, shared-body presets) makes the body graded evidence of
its class. At c = 0 the body looks the same for every class. At c > 0 every body is tinted
(half its colour, as in `easy`) with a hue jittered per object (a nuisance, standard deviation
a quarter of the spacing between class hues); the hue is the object's class's with probability
c and a class drawn uniformly otherwise (its own included). So a tinted body says "class k" with
probability c + (1 - c) / C: usable but weaker evidence than the part, which is certain, at
every c < 1; at c = 1 the body is as telling as in `easy`.

Probes (`probe`) certify what each cue carries: 'body_only' paints the part over with the
body's look (the body's stripes continue over it), 'part_only' leaves the body out (the
background shows where it was); boxes and masks stay those of the whole object.

Geometry is given at the 96-px scale of the design notes and scaled to the native image size.
Every example is a pure function of (seed, split, index, preset, num_classes, image_size), so
`render` can regenerate any single example, with its per-object body and part masks.

Boxes are tight around each object's pixels (body and part, before occlusion by later objects,
clipped to the image) in TFDS-normalised [ymin, xmin, ymax, xmax] with edges on pixel borders:
pixel rows r0..r1 give ymin = r0 / H, ymax = (r1 + 1) / H.

With `difficult_objects` (off by default; for robustness runs) an object is drawn tiny with
probability 0.1 (body scaled by 0.3-0.4) or placed anywhere, truncated by the border, with
probability 0.1. Whatever the switch, an object is flagged difficult when it is tiny, when less
than 60 % of it lies inside the image, or when less than half of its part stays visible (cut by
the border or covered by a later object); the metrics skip samples whose objects are all
difficult.
"""

import functools
import threading
from typing import NamedTuple

import numpy as np

from excam_jax.errors import UserError

SPLITS = {'train': 0, 'validation': 1, 'test': 2}
PATTERNS = ('bars', 'columns', 'checks', 'rings', 'dots', 'diagonal', 'cross', 'frame')
MAX_OBJECTS = 3  # The most objects any preset draws (the padding of the generated arrays).
PROBES = ('none', 'body_only', 'part_only')
MAX_CLASSES = 24  # Beyond this, class colours become too close to tell apart.
_REFERENCE_SIZE = 96.0  # The design notes give sizes in pixels of a 96-px image.
_SHARED_BODY = np.array([[0.66, 0.58, 0.46], [0.42, 0.36, 0.29]], np.float32)
_PART_BACKGROUND = np.array([0.08, 0.08, 0.08], np.float32)
_ROUNDED_PROB = 0.3
_TINY_PROB = 0.1
_TRUNCATED_PROB = 0.1
_TINT_WEIGHT = 0.5  # Share of the tint in a tinted body's colour (as the 'class' look).
_HUE_JITTER = 0.25  # Standard deviation of a tint's hue, in units of the class hue spacing.
_MAX_OVERLAP = 0.05  # Largest overlap, as a fraction of the smaller object's pixels.
_PLACEMENT_TRIES = 30


class Preset(NamedTuple):
  """Knobs of one preset (sizes in pixels of a 96-px image)."""
  body_look: str  # 'shared' (same texture for all classes) or 'class' (tinted per class).
  semi_major: tuple  # Range of the body's semi-major axis.
  aspect: tuple  # Range of semi-minor / semi-major.
  placements: tuple  # Part placements drawn uniformly: 'inside', 'border', 'tip'.
  max_objects: int  # Objects per image are drawn uniformly from 1..max_objects.


PRESETS = {
    'main': Preset('shared', (36.0, 46.0), (0.35, 0.55), ('inside', 'border'), 2),
    'hard': Preset('shared', (36.0, 46.0), (0.35, 0.55), ('tip',), 2),
    'easy': Preset('class', (36.0, 46.0), (0.35, 0.55), ('tip',), 2),
    'small': Preset('shared', (14.0, 26.0), (0.35, 0.55), ('inside', 'border', 'tip'), 3),
}


def class_names(num_classes):
  """Names classes by their part: '<pattern>-<hue index>', e.g. 'bars-0'."""
  return tuple(f'{PATTERNS[c % len(PATTERNS)]}-{c}' for c in range(num_classes))


def hue_colours(hues):
  """Saturated RGB colours (float32 (n, 3)) of hues in [0, 1) (HSV with s = 0.9, v = 1)."""
  hues = np.asarray(hues, np.float64).reshape(-1)
  k = (np.array([5.0, 3.0, 1.0])[None, :] + hues[:, None] * 6.0) % 6.0
  return (1.0 - 0.9 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def class_colours(num_classes):
  """Saturated colours with evenly spaced hues, one per class (float32 (C, 3))."""
  return hue_colours(np.arange(num_classes) / num_classes)


def validate(preset, num_classes, image_size, body_cue=0.0, probe='none'):
  """Raises UserError naming the config field when a parts setting is out of range."""
  if preset not in PRESETS:
    raise UserError(f'config.data.parts.preset must be one of {sorted(PRESETS)}, not {preset!r}.')
  if not 1 <= num_classes <= MAX_CLASSES:
    raise UserError(f'config.data.parts.num_classes must lie in [1, {MAX_CLASSES}], not {num_classes}.')
  if image_size < 32:
    raise UserError(f'config.data.parts.image_size must be at least 32 pixels, not {image_size}.')
  if not 0.0 <= body_cue <= 1.0:
    raise UserError(f'config.data.parts.body_cue must lie in [0, 1], not {body_cue}.')
  if probe not in PROBES:
    raise UserError(f'config.data.parts.probe must be one of {PROBES}, not {probe!r}.')


def options(parts):
  """The generator's keyword arguments from a config.data.parts section (render, generate).

  Fields absent from configs saved before they existed take their defaults.
  """
  return {'preset': parts.preset, 'num_classes': parts.num_classes,
          'image_size': parts.image_size, 'body_cue': float(parts.get('body_cue', 0.0)),
          'difficult_objects': bool(parts.get('difficult_objects', False)),
          'probe': parts.get('probe', 'none')}


_TINT_STREAM = 7  # The tints' draws: apart from the scene's, so every body_cue has its scenes.


def _check_split(split):
  if split not in SPLITS:
    raise UserError(f'The parts data set has splits {sorted(SPLITS)}; {split!r} is not one of them.')


def _rng(seed, split, index, preset, num_classes, image_size, stream=None):
  """The draws of one example. Neither the body cue, the probe nor the difficult-objects switch
  is in the key: the same index is the same scene (backgrounds, classes, poses) at every cue
  level and in every probe, which pairs the comparisons across them."""
  _check_split(split)
  key = [seed, SPLITS[split], index, sorted(PRESETS).index(preset), num_classes, image_size]
  return np.random.default_rng(np.random.SeedSequence(key + ([] if stream is None else [stream])))


def _body_tint(tint_rng, label, num_classes, body_cue):
  """The tint of one body: None at body_cue 0, else an RGB colour (see the module docstring)."""
  # Drawn whatever the cue, so that the draws of later objects do not depend on it.
  own, other, jitter = tint_rng.random(), tint_rng.integers(num_classes), tint_rng.normal()
  if body_cue <= 0.0:
    return None
  hue_class = label if own < body_cue else int(other)
  hue = (hue_class + _HUE_JITTER * jitter) / num_classes % 1.0
  return hue_colours([hue])[0]


def _background(rng, size):
  """A smooth colour field (4x4 random colours, bilinearly upsampled) with fine noise."""
  grid = np.linspace(0.0, 3.0, size)
  lo = np.minimum(grid.astype(int), 2)
  frac = (grid - lo).astype(np.float32)
  interp = np.zeros((size, 4), np.float32)
  interp[np.arange(size), lo] = 1.0 - frac
  interp[np.arange(size), lo + 1] = frac
  colours = rng.uniform(0.1, 0.9, (4, 4, 3)).astype(np.float32)
  rows = np.tensordot(interp, colours, axes=(1, 0))  # (S, 4, 3): interpolated along y.
  image = np.matmul(interp[None], rows)  # (S, S, 3): then along x.
  image += (rng.random(image.shape, dtype=np.float32) - 0.5) * 0.08
  return image


def _draw_clutter(rng, image, scale):
  """Draws 6-14 small squares and discs (3-10 px at 96 px) in random colours."""
  size = image.shape[0]
  for _ in range(rng.integers(6, 15)):
    side = rng.uniform(3.0, 10.0) * scale
    cy, cx = rng.uniform(0, size, 2)
    y0, x0 = max(int(cy - side / 2), 0), max(int(cx - side / 2), 0)
    y1, x1 = min(int(cy + side / 2) + 1, size), min(int(cx + side / 2) + 1, size)
    ys, xs = np.ogrid[y0:y1, x0:x1]
    if rng.random() < 0.5:
      shape = (ys + 0.5 - cy) ** 2 + (xs + 0.5 - cx) ** 2 <= (side / 2) ** 2
    else:
      shape = np.ones((y1 - y0, x1 - x0), bool)
    image[y0:y1, x0:x1][shape] = rng.uniform(0.0, 1.0, 3)


def _pattern(kind, py, px):
  """Boolean foreground of a class pattern on local part coordinates py, px in [0, 1)."""
  if kind == 'bars':
    return np.floor(py * 4) % 2 == 0
  if kind == 'columns':
    return np.floor(px * 4) % 2 == 0
  if kind == 'checks':
    return (np.floor(py * 3) + np.floor(px * 3)) % 2 == 0
  if kind == 'rings':
    return np.floor(np.hypot(py - 0.5, px - 0.5) * 6) % 2 == 0
  if kind == 'dots':
    return ((py * 2) % 1 - 0.5) ** 2 + ((px * 2) % 1 - 0.5) ** 2 < 0.09
  if kind == 'diagonal':
    return np.floor((py + px) * 3) % 2 == 0
  if kind == 'cross':
    return (np.abs(py - 0.5) < 0.17) | (np.abs(px - 0.5) < 0.17)
  return np.maximum(np.abs(py - 0.5), np.abs(px - 0.5)) > 0.3  # 'frame'


class _Geometry(NamedTuple):
  """Scalars of one sampled object, in native pixels."""
  label: int
  centre: tuple  # (cy, cx) of the body.
  axes: tuple  # (a, b) semi-axes.
  theta: float  # Angle of the major axis.
  power: int  # 2: ellipse, 4: rounded rectangle (superellipse).
  period: float  # Stripe period of the body texture.
  part_centre: tuple  # (py, px).
  side: float  # Side of the square part.
  tiny: bool


class _Object(NamedTuple):
  """A rasterised object: masks on its own window, which may reach outside the image."""
  label: int
  window: tuple  # (y0, x0) of the window's top-left corner.
  body: np.ndarray  # bool (h, w): body pixels (the part drawn on top is not removed).
  part: np.ndarray  # bool (h, w): part pixels.
  stripes: np.ndarray  # int (h, w): stripe index 0/1 of the body texture.
  part_local: tuple  # (ly (h, 1), lx (1, w)): local part coordinates, in [0, 1) inside the part.
  tiny: bool


def _sample_candidates(rng, preset, label, size, tiny, truncated, n):
  """Samples n candidate poses of one object at once (arrays of length n), tried in order."""
  scale = size / _REFERENCE_SIZE
  a = rng.uniform(*preset.semi_major, n) * scale * (rng.uniform(0.3, 0.4, n) if tiny else 1.0)
  b = a * rng.uniform(*preset.aspect, n)
  theta = rng.uniform(0.0, np.pi, n)
  side = rng.uniform(8.0, 14.0, n) * scale * (0.6 if tiny else 1.0)
  cos, sin = np.cos(theta), np.sin(theta)
  half_x = np.sqrt((a * cos) ** 2 + (b * sin) ** 2) + side / 2
  half_y = np.sqrt((a * sin) ** 2 + (b * cos) ** 2) + side / 2
  if truncated:
    cy, cx = rng.uniform(0, size, (2, n))
  else:  # Inside the image; an object longer than the image is cut about equally at both ends.
    cy = rng.uniform(np.minimum(half_y, size - half_y), np.maximum(half_y, size - half_y))
    cx = rng.uniform(np.minimum(half_x, size - half_x), np.maximum(half_x, size - half_x))
  placement = np.array(preset.placements)[rng.integers(len(preset.placements), size=n)]
  tip = placement == 'tip'
  phi = np.where(tip, rng.integers(0, 2, n) * np.pi + rng.uniform(-0.15, 0.15, n),
                 rng.uniform(0, 2 * np.pi, n))
  rho = np.select([tip, placement == 'inside'], [0.95, rng.uniform(0.25, 0.55, n)], 1.0)
  pu, pv = rho * a * np.cos(phi), rho * b * np.sin(phi)
  py, px = cy + pu * sin + pv * cos, cx + pu * cos - pv * sin
  if not truncated:  # Keep the part in view: cut the body at the far end instead.
    dy = np.clip(py, side / 2, size - side / 2) - py
    dx = np.clip(px, side / 2, size - side / 2) - px
    cy, cx, py, px = cy + dy, cx + dx, py + dy, px + dx
  power = np.where(rng.random(n) < _ROUNDED_PROB, 4, 2)
  period = rng.uniform(3.0, 5.0, n) * scale
  return [_Geometry(label, (cy[i], cx[i]), (a[i], b[i]), theta[i], int(power[i]), period[i],
                    (py[i], px[i]), side[i], tiny) for i in range(n)], (cy, cx, a, theta, py, px)


def _clearly_blocked(arrays, owner):
  """Cheap pre-test per candidate: does the body's major axis or the part centre hit an object?"""
  cy, cx, a, theta, py, px = arrays
  size = owner.shape[0]
  t = np.linspace(-1.0, 1.0, 9)[None, :] * a[:, None]
  ys = np.concatenate([cy[:, None] + t * np.sin(theta)[:, None], py[:, None]], 1).astype(int)
  xs = np.concatenate([cx[:, None] + t * np.cos(theta)[:, None], px[:, None]], 1).astype(int)
  inside = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
  hits = owner[np.clip(ys, 0, size - 1), np.clip(xs, 0, size - 1)] >= 0
  return (hits & inside).any(1)


def _rasterise(geom):
  """Rasterises body, part and stripes on a window that encloses the whole object."""
  (cy, cx), (a, b), (py, px), side = geom.centre, geom.axes, geom.part_centre, geom.side
  cos, sin = np.cos(geom.theta), np.sin(geom.theta)
  # The superellipse lies inside the rotated a x b rectangle, whose extents bound both shapes.
  hx, hy = a * abs(cos) + b * abs(sin), a * abs(sin) + b * abs(cos)
  y0 = int(np.floor(min(cy - hy, py - side / 2)))
  x0 = int(np.floor(min(cx - hx, px - side / 2)))
  y1 = int(np.ceil(max(cy + hy, py + side / 2))) + 1
  x1 = int(np.ceil(max(cx + hx, px + side / 2))) + 1
  ys, xs = np.ogrid[y0:y1, x0:x1]
  dy, dx = ys + 0.5 - cy, xs + 0.5 - cx
  u, v = dx * cos + dy * sin, dy * cos - dx * sin
  if geom.power == 2:
    body = (u / a) ** 2 + (v / b) ** 2 <= 1.0
  else:
    body = np.square(np.square(u / a)) + np.square(np.square(v / b)) <= 1.0
  stripes = (np.floor(u / geom.period) % 2).astype(np.intp)
  ly, lx = (ys + 0.5 - (py - side / 2)) / side, (xs + 0.5 - (px - side / 2)) / side
  part = (ly >= 0) & (ly < 1) & (lx >= 0) & (lx < 1)
  return _Object(geom.label, (y0, x0), body, part, stripes, (ly, lx), geom.tiny)


def _clip(obj, size):
  """Slices of the image and of the object's window where they intersect."""
  y0, x0 = obj.window
  h, w = obj.body.shape
  iy0, ix0, iy1, ix1 = max(y0, 0), max(x0, 0), min(y0 + h, size), min(x0 + w, size)
  if iy1 <= iy0 or ix1 <= ix0:
    return None
  image = (slice(iy0, iy1), slice(ix0, ix1))
  window = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
  return image, window


def _fits(obj, owner, areas, size):
  """Whether the object lies at least partly in the image and overlaps others by <= 5 %."""
  clip = _clip(obj, size)
  if clip is None:
    return False
  image, window = clip
  mask = (obj.body | obj.part)[window]
  area = int(mask.sum())
  if area == 0:
    return False
  taken = owner[image][mask]
  overlaps = np.bincount(taken[taken >= 0] // 2, minlength=len(areas))
  return all(o <= _MAX_OVERLAP * min(area, a) for o, a in zip(overlaps, areas))


def _draw_object(rng, image, owner, index, obj, tint, colour, probe='none'):
  """Paints the striped body then the patterned part; owner gets 2i (body) and 2i+1 (part).

  tint: None (the shared look) or the RGB colour mixed into the body. The probe leaves the body
  out ('part_only') or paints the part's cells with the body's look ('body_only'); the owner
  map, hence the masks, stays that of the whole object.
  """
  image_slices, window = _clip(obj, image.shape[0])
  body, part = obj.body[window], obj.part[window]
  shades = _SHARED_BODY * rng.uniform(0.85, 1.15)
  if tint is not None:
    shades = (1.0 - _TINT_WEIGHT) * shades + _TINT_WEIGHT * tint
  region = image[image_slices]
  if probe == 'body_only':
    cells = body | part
    region[cells] = shades[obj.stripes[window][cells]]
  elif probe != 'part_only':
    region[body] = shades[obj.stripes[window][body]]
  if probe != 'body_only':
    ly, lx = obj.part_local[0][window[0]], obj.part_local[1][:, window[1]]
    fg = _pattern(PATTERNS[obj.label % len(PATTERNS)], ly, lx)
    fg = np.broadcast_to(fg, part.shape)
    region[part & fg] = colour
    region[part & ~fg] = _PART_BACKGROUND
  owner[image_slices][body] = 2 * index
  owner[image_slices][part] = 2 * index + 1


def _box(obj, size):
  """Tight normalised box of the object's in-image pixels (edges on pixel borders)."""
  image_slices, window = _clip(obj, size)
  mask = (obj.body | obj.part)[window]
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  top, left = image_slices[0].start, image_slices[1].start
  return np.array([top + rows[0], left + cols[0], top + rows[-1] + 1, left + cols[-1] + 1],
                  np.float32) / size


def render(seed, split, index, preset='main', num_classes=6, image_size=128, body_cue=0.0,
           difficult_objects=False, probe='none'):
  """Generates one example of the parts data set, with its per-object masks.

  Args:
    seed: data set seed (config.data.parts.seed).
    split: 'train', 'validation' or 'test'.
    index: index of the example in its split.
    preset: 'main', 'hard', 'easy' or 'small'.
    num_classes: number of classes C.
    image_size: native side of the square image in pixels.
    body_cue: c in [0, 1], how often a body's tint names its class (shared-body presets; the
      'class' look of `easy` is always fully tinted).
    difficult_objects: also draw tiny and truncated objects (for robustness runs).
    probe: 'none', 'body_only' or 'part_only' (see the module docstring).

  Returns:
    A dict with image uint8 (S, S, 3), boxes float32 (k, 4) TFDS-normalised, labels int32 (k,),
    difficult bool (k,), body_masks and part_masks bool (k, S, S): the pixels where the object's
    body or part is visible in the final image (disjoint; later objects occlude earlier ones).
  """
  validate(preset, num_classes, image_size, body_cue, probe)
  rng = _rng(seed, split, index, preset, num_classes, image_size)
  tint_rng = _rng(seed, split, index, preset, num_classes, image_size, _TINT_STREAM)
  config, size, colours = PRESETS[preset], image_size, class_colours(num_classes)
  image = _background(rng, size)
  _draw_clutter(rng, image, size / _REFERENCE_SIZE)
  count = min(int(rng.integers(1, config.max_objects + 1)), num_classes)
  owner = np.full((size, size), -1, np.int32)
  objects, areas = [], []
  for label in rng.choice(num_classes, count, replace=False):
    # Drawn once per object, not per try: tiny or truncated objects fit more easily and would
    # otherwise crowd out the others.
    tiny, truncated = (rng.random(2) < (_TINY_PROB, _TRUNCATED_PROB)) & difficult_objects
    tint = colours[label] if config.body_look == 'class' else _body_tint(
        tint_rng, int(label), num_classes, body_cue)
    candidates, arrays = _sample_candidates(
        rng, config, int(label), size, tiny, truncated, _PLACEMENT_TRIES)
    for geom, blocked in zip(candidates, _clearly_blocked(arrays, owner)):
      if blocked:
        continue
      obj = _rasterise(geom)
      if _fits(obj, owner, areas, size):
        _draw_object(rng, image, owner, len(objects), obj, tint, colours[label], probe)
        objects.append(obj)
        areas.append(int((obj.body | obj.part)[_clip(obj, size)[1]].sum()))
        break
  body_masks = np.stack([owner == 2 * i for i in range(len(objects))])
  part_masks = np.stack([owner == 2 * i + 1 for i in range(len(objects))])
  difficult = [o.tiny or area < 0.6 * (o.body | o.part).sum()
               or part_masks[i].sum() < 0.5 * o.part.sum()
               for i, (o, area) in enumerate(zip(objects, areas))]
  return {
      'image': np.clip(np.round(image * 255), 0, 255).astype(np.uint8),
      'boxes': np.stack([_box(o, size) for o in objects]),
      'labels': np.array([o.label for o in objects], np.int32),
      'difficult': np.array(difficult, bool),
      'body_masks': body_masks,
      'part_masks': part_masks,
  }


class Split:
  """A split rendered on demand: each example the first time it is asked for, then kept.

  A run needs its first batch long before it has seen the whole split, so the split is not
  rendered up front: `take(indices)` renders what is missing (thread-safe) and returns the
  examples' arrays. `arrays()` renders the rest and returns the whole split.
  Fields: image uint8 (n, S, S, 3), boxes float32 (n, 3, 4), box_labels int32 (n, 3) with -1
  padding, box_difficult bool (n, 3), image_id int32 (n,).
  """

  def __init__(self, seed, split, num_examples, preset='main', num_classes=6, image_size=128,
               body_cue=0.0, difficult_objects=False, probe='none'):
    validate(preset, num_classes, image_size, body_cue, probe)
    _check_split(split)
    n = num_examples
    self.image_size = image_size
    self._render = functools.partial(render, seed, split, preset=preset,
                                     num_classes=num_classes, image_size=image_size,
                                     body_cue=body_cue, difficult_objects=difficult_objects,
                                     probe=probe)
    self._arrays = {
        'image': np.zeros((n, image_size, image_size, 3), np.uint8),
        'boxes': np.zeros((n, MAX_OBJECTS, 4), np.float32),
        'box_labels': np.full((n, MAX_OBJECTS), -1, np.int32),
        'box_difficult': np.zeros((n, MAX_OBJECTS), bool),
        'image_id': np.arange(n, dtype=np.int32),
    }
    self._done = np.zeros(n, bool)
    self._lock = threading.Lock()

  def __len__(self):
    return len(self._done)

  def take(self, indices):
    """The arrays of examples `indices` (copies), rendering those not rendered yet."""
    indices = np.asarray(indices, np.intp)
    with self._lock:
      for i in np.unique(indices[~self._done[indices]]):
        ex = self._render(int(i))
        k = len(ex['labels'])
        self._arrays['image'][i] = ex['image']
        self._arrays['boxes'][i, :k] = ex['boxes']
        self._arrays['box_labels'][i, :k] = ex['labels']
        self._arrays['box_difficult'][i, :k] = ex['difficult']
        self._done[i] = True
      return {key: value[indices] for key, value in self._arrays.items()}

  def arrays(self):
    """The whole split (read-only views), rendered now where needed."""
    self.take(np.flatnonzero(~self._done))
    views = {key: value.view() for key, value in self._arrays.items()}
    for value in views.values():
      value.flags.writeable = False
    return views


@functools.lru_cache(maxsize=8)
def split_of(seed, split, num_examples, preset='main', num_classes=6, image_size=128,
             body_cue=0.0, difficult_objects=False, probe='none'):
  """The process's one `Split` of these settings (cached, so examples are rendered once)."""
  return Split(seed, split, num_examples, preset, num_classes, image_size, body_cue,
               difficult_objects, probe)


def generate(seed, split, num_examples, preset='main', num_classes=6, image_size=128,
             body_cue=0.0, difficult_objects=False, probe='none'):
  """Generates a whole split into memory (cached per process; the arrays are read-only).

  The settings after `num_examples` are those of `render`; see `Split` for the fields.
  """
  return split_of(seed, split, num_examples, preset, num_classes, image_size, body_cue,
                  difficult_objects, probe).arrays()
