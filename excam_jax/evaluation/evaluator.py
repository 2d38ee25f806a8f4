"""Evaluation over batches: an accumulate/compute Evaluator and the protocol it scores with.

`Evaluator(class_names, protocol)` takes each batch of `excam_jax.data.pipeline.eval_batches`
with the model's outputs on it (`add`), turns its maps into boxes at once (one
scipy.ndimage.label call per batch and purpose, so nothing image-sized is kept between
batches), and `compute()` returns every metric. `score(predict_fn, batches, ...)` is the loop.

Which maps give which metric (docs/method.md):
  detection AP (VOC 11-point and all-point): every component of z_c > threshold for the predicted
    classes (sigma(s_c) > 0.5), scored sigma(s_c);
  CorLoc: the largest component's box for each ground-truth class of an image;
  expansion: area(largest box) / area(ground-truth box of c with the highest IoU with it), for the
    ground-truth classes that are also predicted; 0 when the map has no component;
  pointwise AP: argmax of each class map upsampled to the original size (exact, computed on the
    few rows that can hold it; first in raster order), tolerance in pixels;
  MaxBoxAcc / V2: see sweep.py; per-class values are taken at the overall best tau.

Difficult objects: the AP metrics ignore them (VOC rules); CorLoc, expansion and MaxBoxAcc skip
the (image, class) samples whose objects of that class are all difficult, and a sample they keep
is scored against all of its class's boxes (a difficult one is still that object).

The WSOL benchmark's data sets ('wsol/...', 'caltech_birds2011': those data/sources.py marks
`benchmark`) are scored by wsol_benchmark.Scorer instead, under wsolevaluation's protocol
(make_scorer picks the accumulator by data set).

Boxes come from the one path of boxes.py: the class map upsampled to the original image size
(`Protocol.box_grid=None`, the default of every final evaluation), thresholded, 8-connected
components, pixel boxes. The cheap in-training evaluations may set a square working grid instead
(its box edges are mapped to original pixels; protocol "grid N").
"""

import concurrent.futures
import multiprocessing
import os
import signal
from typing import NamedTuple, Optional

import numpy as np

from excam_jax.data import sources
from excam_jax.errors import UserError
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import metrics
from excam_jax.evaluation import sweep
from excam_jax.evaluation import wsol_benchmark
from excam_jax.evaluation import wsolevaluation


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


class Protocol(NamedTuple):
  """The settings that change a reported number (config.eval; written to metrics.json).

  threshold: absolute threshold on z for detection AP, CorLoc and expansion (0 is sigma = 0.5).
  box_grid: None (boxes at each image's original size) or the side of a square working grid.
  maxboxacc: 'exact' or 'wsolevaluation' (see sweep.py).
  sweep_grid: 'exact' MaxBoxAcc only: None (original size) or a working grid side.
  sweep_step: 'exact' MaxBoxAcc only: spacing of the relative thresholds tau in [0, 1).
  pointwise_tolerance: pointwise localization tolerance in pixels.
  """
  threshold: float = 0.0
  box_grid: Optional[int] = None
  maxboxacc: str = 'exact'
  sweep_grid: Optional[int] = None
  sweep_step: float = 0.01
  pointwise_tolerance: int = 18

  def taus(self):
    """The relative thresholds of the MaxBoxAcc sweep."""
    if self.maxboxacc == 'wsolevaluation':
      return wsolevaluation.cam_threshold_list(0.001)
    return np.arange(0.0, 1.0 - 1e-9, self.sweep_step)

  def describe(self):
    """The protocol as a JSON-ready mapping (metrics.json "protocol")."""
    out = self._asdict()
    out['box_grid'] = 'original size' if self.box_grid is None else f'grid {self.box_grid}'
    if self.maxboxacc == 'exact':
      out['sweep_grid'] = 'original size' if self.sweep_grid is None else f'grid {self.sweep_grid}'
    else:
      out.update(sweep_grid='224 x 224 (cubic)', sweep_step=0.001)
    out['difficult'] = ('difficult objects ignored in the AP metrics (neither true nor false '
                        'positives); CorLoc, MaxBoxAcc, expansion and the parts measures skip '
                        'samples (image, class) whose objects are all difficult')
    return out


def protocol_from_config(eval_config=None, **overrides):
  """A Protocol from a config's `eval` section (absent fields keep their defaults)."""
  fields = {k: eval_config[k] for k in Protocol._fields
            if eval_config is not None and k in eval_config}
  fields.update({k: v for k, v in overrides.items() if v is not None})
  for grid in ('box_grid', 'sweep_grid'):  # 0 or 'original': the original image size.
    if fields.get(grid) in (0, 'original'):
      fields[grid] = None
  protocol = Protocol(**fields)
  if protocol.maxboxacc not in sweep.PROTOCOLS:
    raise UserError(f'maxboxacc={protocol.maxboxacc!r} is invalid: allowed one of '
                    f'{sweep.PROTOCOLS}.')
  return protocol


class _Truth:
  """Ground truth of the valid images of one batch, in original-image pixels."""

  def __init__(self, batch, valid):
    self.index = np.flatnonzero(valid)
    self.image_id = np.asarray(batch['image_id'])[self.index]
    size = np.asarray(batch['orig_size'])[self.index]
    self.height, self.width = size[:, 0], size[:, 1]
    labels = np.asarray(batch['box_labels'])[self.index]
    self.present = labels >= 0
    self.labels = np.where(self.present, labels, 0)
    self.difficult = np.asarray(batch['box_difficult'])[self.index].astype(bool)
    self.boxes = boxlib.normalized_to_pixels(np.asarray(batch['boxes'])[self.index],
                                             self.height[:, None], self.width[:, None])

  def objects(self, i):
    """(classes, pixel boxes, difficult) of the i-th valid image."""
    keep = self.present[i]
    return self.labels[i][keep], self.boxes[i][keep], self.difficult[i][keep]

  def class_boxes(self, images, classes):
    """Padded boxes (P, N, 4) of class classes[p] in image images[p], with a validity mask."""
    valid = self.present[images] & (self.labels[images] == classes[:, None])
    return self.boxes[images], valid


def _stack_components(stacks, masks_of, heights, widths):
  """Components of every stack of maps, with boxes in original pixels.

  Args:
    stacks: list of (indices, (P_i, G_h, G_w) maps) covering the P maps (sweep.grid_maps).
    masks_of: maps (P_i, G_h, G_w) -> masks (T, P_i, G_h, G_w).
    heights, widths: (P,) original size of each map's image.

  Returns:
    (threshold index, map index in 0..P-1, area, pixel boxes (K, 4)) of every component.
  """
  taus, pairs, areas, pixels = [], [], [], []
  for index, stack in stacks:
    comps = boxlib.components(masks_of(stack))
    count = stack.shape[0]
    pair = index[comps.map_index % count]
    taus.append(comps.map_index // count)
    pairs.append(pair)
    areas.append(comps.area)
    pixels.append(boxlib.grid_boxes_to_pixels(comps.boxes, stack.shape[1], stack.shape[2],
                                              heights[pair], widths[pair]).reshape(-1, 4))
  return tuple(np.concatenate(x) for x in (taus, pairs, areas, pixels))


class _Localization:
  """The localization accumulators and the per-batch work that feeds them."""

  def __init__(self, num_classes, protocol, pool=None):
    self.pool = pool
    self.sweeps = []
    self.num_classes = num_classes
    self.protocol = protocol
    self.threshold = protocol.threshold
    self.box_grid = protocol.box_grid
    self.taus = protocol.taus()
    self.detection = metrics.DetectionAP(num_classes)
    self.pointwise = metrics.PointwiseAP(protocol.pointwise_tolerance)
    self.corloc = metrics.CorLoc(num_classes)
    self.expansion = metrics.SampleMeans(num_classes)
    self.maxboxacc = metrics.MaxBoxAcc(num_classes, self.taus)

  def add_batch(self, logits, class_maps, truth):
    """Adds the valid images of one batch: logits (B, C), class maps (B, h, w, C)."""
    logits = logits[truth.index]
    maps = np.moveaxis(class_maps[truth.index], -1, 1)  # (B, C, h, w)
    boxlib.check_finite(maps)
    for i in range(len(truth.index)):
      classes, pix, difficult = truth.objects(i)
      self.detection.add_ground_truth(int(truth.image_id[i]), classes, pix, difficult)
    self._pointwise(logits, maps, truth)
    predicted = logits > 0.0  # sigma(s) > 0.5
    positive = np.zeros_like(predicted)  # Classes with a non-difficult object: the box samples.
    for i in range(len(truth.index)):
      classes, _, difficult = truth.objects(i)
      positive[i, classes[~difficult]] = True
    images, classes = np.nonzero(predicted | positive)
    if len(images):
      self._boxes(logits, maps, truth, images, classes, predicted, positive)
    images, classes = np.nonzero(positive)
    if len(images):
      self._sweep(maps, truth, images, classes)

  def _pointwise(self, logits, maps, truth):
    points = np.stack([boxlib.upsampled_argmax(m, int(h), int(w))
                       for m, h, w in zip(maps, truth.height, truth.width)])
    objects = []
    for i in range(len(truth.index)):
      classes, pix, difficult = truth.objects(i)
      objects.append([(int(c), tuple(b), bool(d)) for c, b, d in zip(classes, pix, difficult)])
    self.pointwise.accumulate(logits, points, objects)

  def _boxes(self, logits, maps, truth, images, classes, predicted, positive):
    """Detections, CorLoc and expansion from the absolute threshold."""
    heights, widths = truth.height[images], truth.width[images]
    stacks = sweep.grid_maps(maps[images, classes], self.box_grid, heights, widths)
    _, index, area, pix = _stack_components(stacks, lambda m: (m > self.threshold)[None],
                                            heights, widths)
    order = np.lexsort((np.arange(len(area)), -area, index))  # Per map, largest first.
    index, pix = index[order], pix[order]
    top = np.full((len(images), 4), -1, dtype=np.int64)
    first = np.ones(len(index), dtype=bool)
    first[1:] = index[1:] != index[:-1]
    top[index[first]] = pix[first]
    starts = np.searchsorted(index, np.arange(len(images) + 1))
    for p, (i, c) in enumerate(zip(images, classes)):
      image_id = int(truth.image_id[i])
      if predicted[i, c]:
        score = _sigmoid(float(logits[i, c]))
        self.detection.add_detections(image_id, int(c), score, pix[starts[p]:starts[p + 1]])
      if positive[i, c]:
        gt, valid = truth.class_boxes(np.array([i]), np.array([c]))
        self.corloc.accumulate(image_id, int(c), None if top[p, 0] < 0 else top[p],
                               [tuple(b) for b in gt[0][valid[0]]])
    self._expansion(top, truth, images, classes, predicted & positive)

  def _expansion(self, top, truth, images, classes, both):
    keep = both[images, classes]
    images, classes, top = images[keep], classes[keep], top[keep]
    if not len(images):
      return
    gt, valid = truth.class_boxes(images, classes)
    iou = sweep.pair_iou(np.where(top < 0, 0, top), gt, valid)  # (0,0,0,0) stands in for no box.
    matched = gt[np.arange(len(top)), np.argmax(iou, axis=1)]
    self.expansion.accumulate(metrics.expansion_ratio(top, matched), classes)

  def _sweep(self, maps, truth, images, classes):
    """Queues the MaxBoxAcc sweep of every (image, ground-truth class) of the batch."""
    gt, valid = truth.class_boxes(images, classes)
    args = (self.protocol.maxboxacc, maps[images, classes], truth.height[images],
            truth.width[images], gt, valid, self.taus, self.protocol.sweep_grid)
    if self.pool is None:
      self.sweeps.append((sweep.sample_ious(*args), classes))
    else:
      self.sweeps.append((self.pool.submit(sweep.sample_ious, *args), classes))

  def compute(self):
    """Returns scalar metrics and a dict of per-class arrays."""
    for result, classes in self.sweeps:
      v1, v2 = result if isinstance(result, tuple) else result.result()
      self.maxboxacc.accumulate(v1, v2, classes)
    self.sweeps = []
    ap = self.detection.compute()
    ap07 = self.detection.compute(use_07_metric=True)
    point = self.pointwise.compute()
    cor = self.corloc.compute()
    expansion, expansion_per_class = self.expansion.compute()
    sweep = self.maxboxacc.compute()
    scalars = {'localization_ap': nanmean(ap), 'localization_ap_07': nanmean(ap07),
               'pointwise_ap': nanmean(point), 'corloc': nanmean(cor), 'expansion': expansion,
               'maxboxacc': sweep['maxboxacc'], 'maxboxaccv2': sweep['maxboxaccv2'],
               'maxboxacc_threshold': sweep['maxboxacc_threshold'],
               'maxboxaccv2_thresholds': sweep['maxboxaccv2_thresholds']}
    per_class = {'localization_ap': ap, 'localization_ap_07': ap07, 'pointwise_ap': point,
                 'corloc': cor, 'expansion': expansion_per_class,
                 'maxboxacc': sweep['per_class_maxboxacc'],
                 'maxboxaccv2': sweep['per_class_maxboxaccv2']}
    return scalars, per_class


def nanmean(values):
  """Mean of the non-NaN values; NaN when there are none."""
  values = np.asarray(values, dtype=np.float64)
  return float(np.mean(values[~np.isnan(values)])) if np.any(~np.isnan(values)) else float('nan')



class Evaluator:
  """Accumulates classification and localization metrics over batches; `compute()` at the end.

  Args:
    class_names: the C class names.
    protocol: a Protocol (how boxes and the sweep are made).
    localization: also compute the box and point metrics (needs boxes, orig_size, image_id).
    pool: an optional concurrent.futures executor for the MaxBoxAcc sweeps.
  """

  def __init__(self, class_names, protocol=Protocol(), localization=True, pool=None):
    self.num_classes = len(class_names)
    self.protocol = protocol
    self.localization = localization
    self.classification = metrics.ClassificationAP()
    self.local = _Localization(self.num_classes, protocol, pool) if localization else None
    self.count = 0

  def add(self, batch, logits, class_maps):
    """Adds one batch (rows with mask 0 are skipped) and the model's outputs on all its rows."""
    valid = np.asarray(batch['mask']) > 0
    if not valid.any():
      return
    logits = np.asarray(logits, dtype=np.float32)
    class_maps = np.asarray(class_maps, dtype=np.float32)
    if logits.shape[-1] != self.num_classes:
      raise UserError(f'The model predicts {logits.shape[-1]} classes but the data set has '
                      f'{self.num_classes}: evaluate with the config the checkpoint was trained '
                      'with.')
    self.count += int(valid.sum())
    self.classification.accumulate(logits[valid], np.asarray(batch['label'])[valid],
                                   np.asarray(batch['ignore'])[valid])
    if self.localization:
      self.local.add_batch(logits, class_maps, _Truth(batch, valid))

  def compute(self):
    """{'num_examples', 'classification_map', the localization scalars, 'per_class'}."""
    per_class_ap = self.classification.compute()
    result = {'num_examples': self.count, 'classification_map': nanmean(per_class_ap)}
    per_class = {'classification_ap': per_class_ap}
    if self.localization:
      scalars, local_per_class = self.local.compute()
      result.update(scalars)
      per_class.update(local_per_class)
    result['per_class'] = {k: [float(v) for v in values] for k, values in per_class.items()}
    return result


def sweep_pool(workers):
  """A process pool for the MaxBoxAcc sweeps, or None for workers <= 1.

  'spawn' keeps the workers free of the parent's JAX threads; they import numpy and scipy only,
  and the parent's main module (keep workers at 0 where that module is heavy).
  """
  workers = min(workers, os.cpu_count() or 1)
  if workers <= 1:
    return None
  return concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context('spawn'), initializer=_ignore_sigint)


def _ignore_sigint():
  """Sweep workers leave Ctrl-C to the parent, which reports it in one line."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def close_pool(pool, failed):
  """Shuts a sweep pool down; after a failure, without waiting for the queued sweeps."""
  if pool is not None:
    pool.shutdown(wait=not failed, cancel_futures=failed)


def make_scorer(class_names, protocol=Protocol(), localization=True, pool=None, dataset=None,
                eval_config=None):
  """The accumulator of `dataset`: a wsol_benchmark.Scorer (its protocol from the config's
  `eval_config`) for the WSOL benchmark's data sets (sources.is_benchmark), an
  Evaluator(class_names, protocol, ...) for the others."""
  if sources.is_benchmark(dataset):
    return wsol_benchmark.Scorer(class_names, wsol_benchmark.Protocol.from_config(eval_config),
                                 localization, pool)
  return Evaluator(class_names, protocol, localization, pool)


def score(predict_fn, batches, class_names, protocol=Protocol(), *, localization=True, workers=0,
          dataset=None, eval_config=None):
  """Runs `predict_fn` over `batches` and computes every metric (an accumulator's loop).

  Args:
    predict_fn: images (B, S, S, 3) -> numpy (logits (B, C), class_maps (B, h, w, C)).
    batches: iterable of batch dicts (excam_jax/data/__init__.py); rows with mask 0 are skipped.
    class_names: the C class names.
    protocol: a Protocol.
    localization: also compute the box and point metrics.
    workers: processes for the MaxBoxAcc sweep, which then overlaps the model's forward passes.
    dataset, eval_config: config.data.dataset and config.eval (make_scorer).

  Returns:
    The accumulator's compute() dict.
  """
  pool = sweep_pool(workers) if localization else None
  failed = True
  try:
    evaluator = make_scorer(class_names, protocol, localization, pool, dataset, eval_config)
    for batch in batches:
      if np.any(np.asarray(batch['mask']) > 0):
        evaluator.add(batch, *predict_fn(batch['image']))
    result = evaluator.compute()
    failed = False
    return result
  finally:
    close_pool(pool, failed)
