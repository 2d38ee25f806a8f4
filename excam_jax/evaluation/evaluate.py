"""Runs a model over an evaluation split and computes every metric of SPEC section 5.

`evaluate` takes a predict function and the batches of `excam_jax.data.pipeline.eval_batches`
and streams: each batch's maps are turned into boxes at once (one scipy.ndimage.label call per
batch and per purpose), so nothing image-sized is kept between batches.

Working grids. Boxes are found on class maps upsampled bilinearly to a square working grid
(`box_grid`, default 128 x 128 cells) and their edges are then mapped to the original image's
pixels through the normalised convention of boxes.py (x1 = floor(xmin * W), x2 = ceil(xmax * W) - 1).
A grid cell covers W / 128 original pixels (about 4 on a 500-pixel VOC image), far below the
resolution of a 14 x 14 or 7 x 7 map; labelling every map at full resolution costs ~3 ms, which is
too slow for VOC. The MaxBoxAcc threshold sweep labels every map at every threshold; it runs on a
coarser grid (`sweep_grid`, default 32). `box_grid=None` and `sweep_grid=None` use each image's
original size instead (exact, slow).

Which maps give which metric (SPEC section 4):
  detection AP (VOC 11-point and all-point): every component of z_c > threshold for the predicted
    classes (sigma(s_c) > 0.5), scored sigma(s_c);
  CorLoc: the largest component's box for each ground-truth class of an image (difficult included);
  expansion: area(largest box) / area(ground-truth box of c with the highest IoU with it), for the
    ground-truth classes that are also predicted; 0 when the map has no component;
  pointwise AP: argmax of each class map upsampled to the original size (exact, computed on the
    few rows that can hold it; first in raster order), tolerance 18 pixels;
  MaxBoxAcc / V2: min-max normalised map, tau in {0, step, ..., < 1}, largest component (V1) or the
    best of all components (V2), IoU with the ground-truth boxes of c, over (image, ground-truth
    class) samples.
"""

import concurrent.futures
import multiprocessing

import numpy as np

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
  """IoU (K, N) of each predicted box (K, 4) with its own truth boxes (K, N, 4); -1 where invalid."""
  pred = pred[:, None, :].astype(np.float64)
  gt = truth_boxes.astype(np.float64)
  iw = np.minimum(pred[..., 2], gt[..., 2]) - np.maximum(pred[..., 0], gt[..., 0]) + 1
  ih = np.minimum(pred[..., 3], gt[..., 3]) - np.maximum(pred[..., 1], gt[..., 1]) + 1
  inter = np.maximum(iw, 0) * np.maximum(ih, 0)
  union = metrics.box_area(pred) + metrics.box_area(gt) - inter
  return np.where(truth_valid, inter / union, -1.0)


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
  stacks = [boxlib.normalize_minmax(s) for s in _grid_maps(maps, grid, heights, widths)]
  tau, pair, area, pix = _stack_components(
      stacks, lambda m: m[None] > taus[:, None, None, None], heights, widths)
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
    boxlib._check_finite(maps)
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
             sweep_grid=32, sweep_step=0.01, tolerance=18, workers=2):
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
    workers: processes for the MaxBoxAcc sweep, which overlaps the model's forward passes
      (0 or 1: in this process).

  Returns:
    A dict: 'num_examples', 'classification_map', the localization scalars ('localization_ap',
    'localization_ap_07', 'pointwise_ap', 'corloc', 'maxboxacc', 'maxboxaccv2', 'expansion',
    'maxboxacc_threshold', 'maxboxaccv2_thresholds') and 'per_class' (metric -> list of C floats).
  """
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
