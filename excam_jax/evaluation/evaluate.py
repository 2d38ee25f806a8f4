"""Runs a model over an evaluation split and computes every metric of SPEC section 5.

`evaluate` takes a predict function and the batches of `excam_jax.data.pipeline.eval_batches`
and streams: each batch's maps are turned into boxes at once (one scipy.ndimage.label call per
batch and per purpose), so nothing image-sized is kept between batches.

Working grids. Boxes are found on class maps upsampled bilinearly to a square working grid
(`box_grid`, default 128 x 128 cells) and their edges are then mapped to the original image's
pixels through the normalised convention of boxes.py (x1 = floor(xmin * W),
x2 = ceil(xmax * W) - 1).
A grid cell covers W / 128 original pixels (about 4 on a 500-pixel VOC image), far below the
resolution of a 14 x 14 or 7 x 7 map; labelling every map at full resolution costs ~3 ms, which is
too slow for VOC. The MaxBoxAcc threshold sweep labels every map at every threshold; it runs on a
coarser grid (`sweep_grid`, default 32). `box_grid=None` and `sweep_grid=None` use each image's
original size instead (exact, slow). With `workers=2` the sweep runs in two worker processes
while this one runs the model and the other metrics (experiments/bench_localization.py times it).

Which maps give which metric (SPEC section 4):
  detection AP (VOC 11-point and all-point): every component of z_c > threshold for the predicted
    classes (sigma(s_c) > 0.5), scored sigma(s_c);
  CorLoc: the largest component's box for each ground-truth class of an image (difficult included);
  expansion: area(largest box) / area(ground-truth box of c with the highest IoU with it), for the
    ground-truth classes that are also predicted; 0 when the map has no component;
  pointwise AP: argmax of each class map upsampled to the original size (exact, computed on the
    few rows that can hold it; first in raster order), tolerance 18 pixels;
  MaxBoxAcc / V2: min-max normalised map, tau in {0, step, ..., < 1}, largest component (V1) or the
    best of all components (V2), IoU with the ground-truth boxes of c (difficult included), over
    (image, ground-truth class) samples; per-class values are taken at the overall best tau.
"""

import concurrent.futures
import json
import math
import multiprocessing
import os

import numpy as np

from excam_jax.data import image_ops
from excam_jax.data import voc_info
from excam_jax import files
from excam_jax.errors import UserError
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import metrics


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


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


def _pair_iou(pred, truth_boxes, truth_valid):
  """IoU (K, N) of each predicted box (K, 4) with its truth boxes (K, N, 4); -1 where invalid."""
  iou = metrics.broadcast_iou(pred[:, None, :], truth_boxes)
  return np.where(truth_valid, iou, -1.0)


def _best_iou(pred, truth_boxes, truth_valid):
  """IoU of each predicted box with its best valid truth box, 0 when it has none -> (K,)."""
  iou = _pair_iou(pred, truth_boxes, truth_valid)
  return np.maximum(iou.max(axis=1), 0.0) if iou.shape[1] else np.zeros(len(pred))


def _grid_maps(maps, grid, heights, widths):
  """Upsamples maps (P, h, w) to [(P, grid, grid)], or to [(1, H_p, W_p)] when grid is None."""
  if grid is not None:
    return [boxlib.upsample(maps, grid, grid)]
  return [boxlib.upsample(m[None], int(h), int(w)) for m, h, w in zip(maps, heights, widths)]


def _stack_components(stacks, masks_of, heights, widths):
  """Components of every stack of maps, with boxes in original pixels.

  Args:
    stacks: list of (P_i, G_h, G_w) maps; together they hold the P maps in order.
    masks_of: maps (P_i, G_h, G_w) -> masks (T, P_i, G_h, G_w).
    heights, widths: (P,) original size of each map's image.

  Returns:
    (threshold index, map index in 0..P-1, area, pixel boxes (K, 4)) of every component.
  """
  taus, pairs, areas, pixels, offset = [], [], [], [], 0
  for stack in stacks:
    comps = boxlib.components(masks_of(stack))
    count = stack.shape[0]
    pair = comps.map_index % count + offset
    taus.append(comps.map_index // count)
    pairs.append(pair)
    areas.append(comps.area)
    pixels.append(boxlib.grid_boxes_to_pixels(comps.boxes, stack.shape[1], stack.shape[2],
                                              heights[pair], widths[pair]).reshape(-1, 4))
    offset += count
  return tuple(np.concatenate(x) for x in (taus, pairs, areas, pixels))


def second_peak(stack):
  """Per map (P, H, W): the highest local maximum other than the first global argmax.

  A local maximum is a pixel with no strictly greater 8-neighbour. Above this level every
  superlevel set {f > tau} is one 8-connected component: from any of its pixels a path of strictly
  increasing neighbours stays in the set and can only end at the global argmax. Returns -inf for
  a map whose only local maximum is its argmax.
  """
  num, height, width = stack.shape
  padded = np.pad(stack, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  neighbours = np.full(stack.shape, -np.inf, dtype=stack.dtype)
  for dy in (0, 1, 2):
    for dx in (0, 1, 2):
      if (dy, dx) != (1, 1):
        np.maximum(neighbours, padded[:, dy:dy + height, dx:dx + width], out=neighbours)
  peaks = (stack >= neighbours).reshape(num, -1)
  peaks[np.arange(num), stack.reshape(num, -1).argmax(axis=1)] = False
  return np.where(peaks, stack.reshape(num, -1), -np.inf).max(axis=1)


def _sweep_components(stack, taus):
  """Components of {stack[p] > tau} for every (tau, p): (tau index, p, area, grid boxes).

  Slots above the map's second peak hold one component, its box is the mask's extent: only the
  other slots are labelled (exact; see second_peak).
  """
  level = second_peak(stack)
  tau_l, pair_l = np.nonzero(taus[:, None] < level[None, :])
  comps = boxlib.components(stack[pair_l] > taus[tau_l, None, None])
  tau_s, pair_s = np.nonzero(taus[:, None] >= level[None, :])
  rows = stack.max(axis=2)[pair_s] > taus[tau_s, None]
  cols = stack.max(axis=1)[pair_s] > taus[tau_s, None]
  found = rows.any(axis=1)
  rows, cols, tau_s, pair_s = rows[found], cols[found], tau_s[found], pair_s[found]
  last_row, last_col = rows.shape[1] - 1, cols.shape[1] - 1
  single = np.stack([cols.argmax(axis=1), rows.argmax(axis=1),
                     last_col - cols[:, ::-1].argmax(axis=1),
                     last_row - rows[:, ::-1].argmax(axis=1)], axis=1)
  return (np.concatenate([tau_l[comps.map_index], tau_s]),
          np.concatenate([pair_l[comps.map_index], pair_s]),
          np.concatenate([comps.area, np.ones(len(tau_s), np.int64)]),
          np.concatenate([comps.boxes, single]).reshape(-1, 4))


def _sweep_ious(maps, heights, widths, gt, valid, taus, grid):
  """IoUs of the MaxBoxAcc sweep for P maps (P, h, w) of (image, ground-truth class) samples.

  Args:
    maps: (P, h, w) class maps; heights, widths: (P,) original image sizes.
    gt, valid: (P, N, 4) pixel boxes of each sample's class and their validity.
    taus: (T,) relative thresholds; grid: working grid side (None: original size).

  Returns:
    (v1, v2), each (P, T): the IoU of the largest component's box (v1) and the best IoU over
    all components' boxes (v2) at each tau; 0 where no component exists.
  """
  num_pairs, num_taus = len(maps), len(taus)
  parts, offset = [], 0
  for stack in _grid_maps(maps, grid, heights, widths):
    tau, pair, area, boxes = _sweep_components(boxlib.normalize_minmax(stack), taus)
    pair = pair + offset
    pix = boxlib.grid_boxes_to_pixels(boxes, stack.shape[1], stack.shape[2], heights[pair],
                                      widths[pair]).reshape(-1, 4)
    parts.append((tau, pair, area, pix))
    offset += len(stack)
  tau, pair, area, pix = (np.concatenate(x) for x in zip(*parts))
  iou = _best_iou(pix, gt[pair], valid[pair])
  v2 = np.zeros((num_taus, num_pairs))
  np.maximum.at(v2, (tau, pair), iou)
  # The largest component of each (tau, pair) slot: sort by slot, then by area descending.
  slot = tau * num_pairs + pair
  order = np.lexsort((np.arange(len(area)), -area, slot))
  first = np.ones(len(order), dtype=bool)
  first[1:] = slot[order][1:] != slot[order][:-1]
  v1 = np.zeros(num_taus * num_pairs)
  v1[slot[order][first]] = iou[order][first]
  return v1.reshape(num_taus, num_pairs).T, v2.T


class _Localization:
  """The localization accumulators and the per-batch work that feeds them."""

  def __init__(self, num_classes, threshold, box_grid, sweep_grid, sweep_step, tolerance,
               pool=None):
    self.pool = pool
    self.sweeps = []
    self.num_classes = num_classes
    self.threshold = threshold
    self.box_grid = box_grid
    self.sweep_grid = sweep_grid
    self.taus = np.arange(0.0, 1.0 - 1e-9, sweep_step)
    self.detection = metrics.DetectionAP(num_classes)
    self.pointwise = metrics.PointwiseAP(tolerance)
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
    positive = np.zeros_like(predicted)
    for i in range(len(truth.index)):
      positive[i, truth.objects(i)[0]] = True
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
    stacks = _grid_maps(maps[images, classes], self.box_grid, heights, widths)
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
    iou = _pair_iou(np.where(top < 0, 0, top), gt, valid)  # (0,0,0,0) stands in for no box.
    matched = gt[np.arange(len(top)), np.argmax(iou, axis=1)]
    self.expansion.accumulate(metrics.expansion_ratio(top, matched), classes)

  def _sweep(self, maps, truth, images, classes):
    """Queues the MaxBoxAcc sweep of every (image, ground-truth class) of the batch."""
    gt, valid = truth.class_boxes(images, classes)
    args = (maps[images, classes], truth.height[images], truth.width[images], gt, valid,
            self.taus, self.sweep_grid)
    if self.pool is None:
      self.sweeps.append((_sweep_ious(*args), classes))
    else:
      self.sweeps.append((self.pool.submit(_sweep_ious, *args), classes))

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
    scalars = {'localization_ap': _nanmean(ap), 'localization_ap_07': _nanmean(ap07),
               'pointwise_ap': _nanmean(point), 'corloc': _nanmean(cor), 'expansion': expansion,
               'maxboxacc': sweep['maxboxacc'], 'maxboxaccv2': sweep['maxboxaccv2'],
               'maxboxacc_threshold': sweep['maxboxacc_threshold'],
               'maxboxaccv2_thresholds': sweep['maxboxaccv2_thresholds']}
    per_class = {'localization_ap': ap, 'localization_ap_07': ap07, 'pointwise_ap': point,
                 'corloc': cor, 'expansion': expansion_per_class,
                 'maxboxacc': sweep['per_class_maxboxacc'],
                 'maxboxaccv2': sweep['per_class_maxboxaccv2']}
    return scalars, per_class


def _nanmean(values):
  values = np.asarray(values, dtype=np.float64)
  return float(np.mean(values[~np.isnan(values)])) if np.any(~np.isnan(values)) else float('nan')


def evaluate(predict_fn, batches, class_names, *, localization=True, threshold=0.0, box_grid=128,
             sweep_grid=32, sweep_step=0.01, tolerance=18, workers=0):
  """Runs `predict_fn` over `batches` and computes the metrics of SPEC section 5.

  Args:
    predict_fn: images (B, S, S, 3) -> numpy (logits (B, C), class_maps (B, h, w, C)).
    batches: iterable of batch dicts (excam_jax/data/__init__.py); rows with mask 0 are skipped.
    class_names: the C class names.
    localization: also compute the box and point metrics (needs boxes, orig_size, image_id).
    threshold: absolute threshold on z for detection AP, CorLoc and expansion (0 is sigma = 0.5).
    box_grid: working grid side for boxes (None: each image's original size).
    sweep_grid: working grid side for the MaxBoxAcc sweep (None: original size).
    sweep_step: spacing of the relative thresholds tau in [0, 1).
    tolerance: pointwise localization tolerance in pixels.
    workers: processes for the MaxBoxAcc sweep, which then overlaps the model's forward passes
      (0 or 1: in this process). The workers are started with 'spawn' and import the parent's
      main module, so keep 0 where that module is heavy (the training loop).

  Returns:
    A dict: 'num_examples', 'classification_map', the localization scalars ('localization_ap',
    'localization_ap_07', 'pointwise_ap', 'corloc', 'maxboxacc', 'maxboxaccv2', 'expansion',
    'maxboxacc_threshold', 'maxboxaccv2_thresholds') and 'per_class' (metric -> list of C floats).
  """
  workers = min(workers, os.cpu_count() or 1)
  if workers > 1 and localization:
    # 'spawn' keeps the workers free of the parent's JAX threads; they import numpy and scipy only.
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      return _evaluate(predict_fn, batches, class_names, localization,
                       (threshold, box_grid, sweep_grid, sweep_step, tolerance, pool))
  return _evaluate(predict_fn, batches, class_names, localization,
                   (threshold, box_grid, sweep_grid, sweep_step, tolerance, None))


def _evaluate(predict_fn, batches, class_names, localization, local_args):
  """The body of `evaluate`, with the localization settings and process pool in `local_args`."""
  num_classes = len(class_names)
  classification = metrics.ClassificationAP()
  local = _Localization(num_classes, *local_args)
  count = 0
  for batch in batches:
    valid = np.asarray(batch['mask']) > 0
    if not valid.any():
      continue
    logits, class_maps = (np.asarray(x, dtype=np.float32) for x in predict_fn(batch['image']))
    if logits.shape[-1] != num_classes:
      raise UserError(f'The model predicts {logits.shape[-1]} classes but the data set has '
                      f'{num_classes}: evaluate with the config the checkpoint was trained with.')
    count += int(valid.sum())
    classification.accumulate(logits[valid], np.asarray(batch['label'])[valid],
                              np.asarray(batch['ignore'])[valid])
    if localization:
      local.add_batch(logits, class_maps, _Truth(batch, valid))
  per_class_ap = classification.compute()
  result = {'num_examples': count, 'classification_map': _nanmean(per_class_ap)}
  per_class = {'classification_ap': per_class_ap}
  if localization:
    scalars, local_per_class = local.compute()
    result.update(scalars)
    per_class.update(local_per_class)
  result['per_class'] = {k: [float(v) for v in values] for k, values in per_class.items()}
  return result


# ---------------------------------------------------------------------------------------------
# Reports: protocols, reference numbers (SPEC section 6) and markdown tables.

PROTOCOLS = {
    'classification_map': 'VOC classification AP (non-interpolated; difficult-only images '
                          'skipped per class), mean over classes',
    'localization_ap': 'VOC detection AP, all-point (VOC 2010+): components of sigma(z_c) > 0.5 '
                       'for predicted classes, score sigma(s_c), IoU > 0.5 (+1 pixels), difficult '
                       'ignored, duplicates false positives',
    'localization_ap_07': 'the same detections, VOC 2007 11-point AP',
    'pointwise_ap': 'pointwise localization AP (Oquab et al. 2015): argmax of the upsampled map '
                    'inside a box of the class enlarged by 18 pixels',
    'corloc': 'CorLoc: largest component of sigma(z_c) > 0.5, IoU >= 0.5, over the images '
              'holding the class',
    'maxboxacc': 'MaxBoxAcc (wsolevaluation): min-max normalised map, largest component, '
                 'IoU >= 0.5, best threshold',
    'maxboxaccv2': 'MaxBoxAccV2: all components, IoU >= {0.3, 0.5, 0.7} averaged, best '
                   'threshold per IoU',
    'expansion': 'area(largest box) / area(best-overlapping ground-truth box) for correctly '
                 'classified positives',
    'parts_body_coverage': 'parts data set: fraction of body pixels where z_c > 0',
    'parts_part_coverage': 'parts data set: fraction of part pixels where z_c > 0',
    'parts_background_activation': 'parts data set: fraction of background pixels where z_c > 0',
    'parts_map_precision': 'parts data set: fraction of pixels with z_c > 0 on objects of class c',
}

VOC_CLASSES = voc_info.CLASS_NAMES

# Per-class reference values in VOC class order: metric -> {column name: values}.
PER_CLASS_REFERENCES = {
    'voc/2012': {
        'localization_ap': {
            'ex-CAM (thesis T1)': [0.8, 0.81, 0.74, 0.7, 0.27, 0.76, 0.44, 0.84, 0.46, 0.65, 0.88,
                                   0.73, 0.81, 0.9, 0.71, 0.58, 0.32, 0.77, 0.49, 0.5],
            'WILDCAT (thesis T1)': [0.61, 0.45, 0.16, 0.59, 0.29, 0.75, 0.28, 0.52, 0.76, 0.59,
                                    0.63, 0.77, 0.62, 0.56, 0.59, 0.29, 0.55, 0.55, 0.77, 0.28]},
        'pointwise_ap': {
            'ex-CAM (thesis T3)': [1.0, 0.89, 0.87, 0.88, 0.58, 0.76, 0.73, 0.89, 0.87, 0.89, 0.89,
                                   0.75, 0.9, 0.95, 0.98, 0.78, 0.92, 0.83, 0.96, 0.6]}},
    'voc/2007': {
        'localization_ap_07': {
            'ex-CAM (thesis T2)': [0.79, 0.82, 0.74, 0.57, 0.26, 0.72, 0.67, 0.84, 0.52, 0.68, 0.81,
                                   0.76, 0.9, 0.84, 0.68, 0.49, 0.61, 0.83, 0.82, 0.47],
            'WILDCAT (thesis T2)': [0.18, 0.36, 0.3, 0.05, 0.16, 0.25, 0.55, 0.29, 0.34, 0.03, 0.16,
                                    0.41, 0.3, 0.4, 0.72, 0.2, 0.07, 0.27, 0.12, 0.3]}},
}

SUMMARY_REFERENCES = {
    'voc/2012': {
        'classification_map': 'WILDCAT paper (ResNet-101, multi-scale): 93.4',
        'localization_ap': 'thesis Table 1: ex-CAM 0.70 (its per-class values average 0.658), '
                           'WILDCAT 0.53',
        'pointwise_ap': 'thesis Table 4: Deep MIL 74.5, ProNet 77.7, WS Localization 79.7, '
                        'WILDCAT 82.9, ex-CAM 85 (Table 3 averages 0.846)'},
    'voc/2007': {
        'classification_map': 'WILDCAT paper (ResNet-101, multi-scale): 95.0',
        'localization_ap_07': 'thesis Table 2 (AP variant not stated): ex-CAM 0.69, WILDCAT 0.27',
        'corloc': 'weakly supervised detection on VOC07 trainval: OICR (VGG16) 60.6, PCL 67.2'},
}


def _cell(value, digits=3):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return 'n/a'
  return f'{value:.{digits}f}'


def markdown_report(result, class_names, dataset, split, step):
  """Markdown tables of an `evaluate` result: a summary and a per-class table.

  Every table states its protocol; for VOC the thesis's and WILDCAT's reference figures
  (SPEC section 6) stand beside ours. Other data sets have no reference figures.
  """
  refs = SUMMARY_REFERENCES.get(dataset, {})
  lines = [f'# Evaluation: {dataset}, split {split!r}, step {step}', '',
           f'{result["num_examples"]} examples. Values are fractions (references as published).',
           '', '## Summary', '', '| metric | protocol | ours | reference |',
           '| --- | --- | --- | --- |']
  for key, protocol in PROTOCOLS.items():
    if key in result:
      lines.append(f'| {key} | {protocol} | {_cell(result[key])} | {refs.get(key, "-")} |')
  if 'maxboxacc_threshold' in result:
    lines += ['', f'Best relative thresholds: MaxBoxAcc {result["maxboxacc_threshold"]:.2f}; '
              f'MaxBoxAccV2 {", ".join(f"{t:.2f}" for t in result["maxboxaccv2_thresholds"])}.']
  per_class = result['per_class']
  columns = list(per_class)
  references = PER_CLASS_REFERENCES.get(dataset, {})
  extra = [(metric, name, values) for metric, named in references.items()
           for name, values in named.items() if metric in per_class]
  named = {**PROTOCOLS, 'classification_ap': PROTOCOLS['classification_map']}
  lines += ['', '## Per class', '', 'Protocols: ' + '; '.join(
      f'{k}: {named.get(k, k)}' for k in columns) + '.', '']
  header = ['class'] + columns + [f'{name} [{metric}]' for metric, name, _ in extra]
  lines += ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  for c, name in enumerate(class_names):
    row = [name] + [_cell(per_class[k][c]) for k in columns]
    row += [_cell(values[c], 2) for _, _, values in extra]
    lines.append('| ' + ' | '.join(row) + ' |')
  means = ['mean of classes'] + [_cell(_nanmean(per_class[k])) for k in columns]
  means += [_cell(float(np.mean(values)), 3) for _, _, values in extra]
  lines.append('| ' + ' | '.join(means) + ' |')
  return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------
# Restore and evaluate (the body of `python -m excam_jax.evaluate`).

def _jsonable(value):
  """Converts numpy values to Python ones and NaN to None (JSON has no NaN)."""
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return None if math.isnan(value) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def bar_metric(dataset):
  """The per-class metric of the AP bar figure: VOC 2007 reports the 11-point AP."""
  return 'localization_ap_07' if dataset == 'voc/2007' else 'localization_ap'


def load_compare(path, num_classes, metric='localization_ap'):
  """(run name, per-class `metric` values) from another run's metrics.json."""
  try:
    with open(path) as f:
      values = json.load(f)['per_class'][metric]
  except (OSError, ValueError, KeyError, TypeError) as err:
    raise UserError(f'--compare={path} is not a readable metrics.json ({err}); pass the '
                    'metrics.json that `python -m excam_jax.evaluate` wrote for the other run.'
                   ) from err
  if len(values) != num_classes:
    raise UserError(f'--compare={path} has {len(values)} classes and this run {num_classes}: '
                    'compare runs on the same data set.')
  # <workdir>/eval/<step>/metrics.json is named after its workdir.
  parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
  name = parts[-4] if len(parts) >= 4 and parts[-3] == 'eval' else path
  return name, [float('nan') if v is None else float(v) for v in values]


def make_predict_fn(model, variables):
  """A jitted images -> numpy (logits, class_maps) for `evaluate`."""
  import jax  # pylint: disable=g-import-not-at-top

  @jax.jit
  def forward(variables, images):
    logits, aux = model.apply(variables, images, train=False)
    return logits.astype('float32'), aux['class_maps'].astype('float32')

  def predict_fn(images):
    logits, class_maps = forward(variables, np.asarray(images, np.float32))
    return np.asarray(logits), np.asarray(class_maps)

  return predict_fn


def _first_examples(batches, count):
  """The first `count` real examples of an eval iterator, as one batch dict."""
  taken = []
  for batch in batches:
    keep = np.flatnonzero(np.asarray(batch['mask']) > 0)
    taken.append({k: np.asarray(v)[keep] for k, v in batch.items()})
    if sum(len(t['mask']) for t in taken) >= count:
      break
  return {k: np.concatenate([t[k] for t in taken])[:count] for k in taken[0]}


def write_figures(out_dir, predict_fn, examples, class_names, per_class, dataset, compare=None):
  """Writes ap_bars.png, boxes.png and cams.png for the given examples (a batch dict)."""
  from excam_jax import visualize  # pylint: disable=g-import-not-at-top
  metric = bar_metric(dataset)
  runs = {'ours': per_class[metric]}
  if compare:
    runs[compare[0]] = compare[1]
  runs.update(PER_CLASS_REFERENCES.get(dataset, {}).get(metric, {}))
  visualize.save_ap_bars(os.path.join(out_dir, 'ap_bars.png'), class_names, runs,
                         title=f'{metric} per class, {dataset}', ylabel=metric)
  logits, class_maps = predict_fn(examples['image'])
  images = np.clip(image_ops.denormalize(examples['image']), 0, 1)
  size = images.shape[1]
  box_panels, cam_panels, box_titles, cam_titles = [], [], [], []
  for i, image in enumerate(images):
    labels = examples['box_labels'][i]
    gt = boxlib.normalized_to_pixels(examples['boxes'][i][labels >= 0], size, size)
    maps = boxlib.upsample(np.moveaxis(class_maps[i], -1, 0), size, size)
    predicted = np.flatnonzero(logits[i] > 0)
    pred = [b for c in predicted for b in boxlib.cam_to_boxes(maps[c], 0.0)]
    box_panels.append(visualize.overlay_boxes(image, gt, pred))
    box_titles.append(', '.join(class_names[c] for c in predicted) or '(none predicted)')
    for c in sorted(set(labels[labels >= 0].tolist()) | set(predicted.tolist())):
      cam_panels.append(visualize.overlay_cam(image, _sigmoid(maps[c])))
      cam_titles.append(f'{i}: {class_names[c]} s={_sigmoid(float(logits[i, c])):.2f}')
  visualize.save_panels(os.path.join(out_dir, 'boxes.png'), box_panels, box_titles)
  visualize.save_panels(os.path.join(out_dir, 'cams.png'), cam_panels, cam_titles)


def _writable_dir(path):
  """Creates `path` and checks that files can be written in it; UserError naming it if not."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'the output {path} is a file, not a directory; pass another --output.')
  files.check_writable(path, f'cannot write to {path}; pass a writable --output.')


def evaluate_checkpoint(workdir, split=None, step=None, compare=None, figures=8, workers=0,
                        output=None):
  """Restores a run's checkpoint and config, evaluates a split and writes the report.

  Every argument is checked, and the output folder made and probed, before the model runs.

  Returns:
    The output directory (default <workdir>/eval/<step>[/<split>]) with metrics.json, tables.md
    and the figures.
  """
  from excam_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from excam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from excam_jax.models import network  # pylint: disable=g-import-not-at-top
  config, variables, step = checkpoints.restore(workdir, step)
  split = split or config.eval_split
  info = pipeline.dataset_info(_with_eval_split(config, split))  # Checks the split.
  other = load_compare(compare, info.num_classes, bar_metric(config.dataset)) if compare else None
  out_dir = output or os.path.join(workdir, 'eval', str(step))
  if not output and split != config.eval_split:
    out_dir = os.path.join(out_dir, split)
  _writable_dir(out_dir)
  model = network.create_model(config.model, info.num_classes)
  predict_fn = make_predict_fn(model, variables)
  result = evaluate(predict_fn, pipeline.eval_batches(config, split), info.class_names,
                    workers=workers)
  if config.dataset == 'parts':
    result.update(parts_measures(config, split, predict_fn))
  result.update(dataset=config.dataset, split=split, step=int(step), protocols=PROTOCOLS)
  files.write_text(os.path.join(out_dir, 'metrics.json'), json.dumps(_jsonable(result), indent=2))
  files.write_text(os.path.join(out_dir, 'tables.md'),
              markdown_report(result, info.class_names, config.dataset, split, step))
  if figures > 0:
    examples = _first_examples(pipeline.eval_batches(config, split), figures)
    write_figures(out_dir, predict_fn, examples, info.class_names, result['per_class'],
                  config.dataset, other)
  return out_dir


def _with_eval_split(config, split):
  """A copy of `config` whose eval_split is `split` (so dataset_info checks that split)."""
  config = config.copy_and_resolve_references()
  config.eval_split = split
  return config


def parts_measures(config, split, predict_fn):
  """Body/part coverage, background activation and map precision on the parts data set.

  Each evaluated example is regenerated with its body and part masks
  (excam_jax.data.synthetic.render); for every (image, ground-truth class) the class map,
  upsampled to the native image size, is scored by metrics.mask_measures at z > 0.

  Returns:
    A dict of 'parts_<measure>' means over samples (NaN-valued samples left out) and
    'parts_argmax_in' (fractions of samples whose argmax falls on the part, body or outside).
  """
  from excam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from excam_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  p = config.parts
  samples = []
  for batch in pipeline.eval_batches(config, split):
    keep = np.flatnonzero(np.asarray(batch['mask']) > 0)
    if not len(keep):
      continue
    _, class_maps = predict_fn(np.asarray(batch['image'])[keep])
    for i, image_id in zip(range(len(keep)), np.asarray(batch['image_id'])[keep]):
      ex = synthetic.render(p.seed, split, int(image_id), p.preset, p.num_classes, p.image_size)
      size = ex['image'].shape[:2]
      maps = boxlib.upsample(np.moveaxis(class_maps[i], -1, 0), *size)
      occupied = ex['body_masks'].any(axis=0) | ex['part_masks'].any(axis=0)
      for c in np.unique(ex['labels']):
        mine = ex['labels'] == c
        samples.append(metrics.mask_measures(maps[c], ex['body_masks'][mine].any(axis=0),
                                             ex['part_masks'][mine].any(axis=0), ~occupied))
  out = {}
  for key in ('body_coverage', 'part_coverage', 'background_activation', 'map_precision'):
    out[f'parts_{key}'] = _nanmean([s[key] for s in samples])
  where = [s['argmax_in'] for s in samples]
  out['parts_argmax_in'] = {k: where.count(k) / max(len(where), 1)
                            for k in ('part', 'body', 'outside')}
  return out
