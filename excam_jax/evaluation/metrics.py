"""Classification and localization metrics (docs/method.md), pure numpy.

Boxes here are inclusive pixel boxes (x1, y1, x2, y2); areas and IoU use the PASCAL VOC
"+1" convention: a box covers (x2 - x1 + 1) * (y2 - y1 + 1) pixels.

Each metric has a pure function tested on literal inputs and, where the evaluation loop needs
one, a small accumulate/compute object that gathers per-image results and calls the function.
"""

import numpy as np

from excam_jax.errors import UserError
from excam_jax.evaluation import wsolevaluation
# Public API: MaxBoxAcc exactly as clovaai/wsolevaluation computes it.
from excam_jax.evaluation.wsolevaluation import wsol_max_box_acc  # pylint: disable=unused-import


def broadcast_iou(boxes_a, boxes_b):
  """IoU of inclusive pixel boxes whose shapes (..., 4) broadcast against each other.

  IoU = |a n b| / (|a| + |b| - |a n b|) with |box| = (x2 - x1 + 1) * (y2 - y1 + 1) and the
  intersection's width max(0, min(x2) - max(x1) + 1) (the same for its height).
  """
  a = np.asarray(boxes_a, dtype=np.float64)
  b = np.asarray(boxes_b, dtype=np.float64)
  iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
  ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
  inter = np.maximum(iw, 0) * np.maximum(ih, 0)
  return inter / (box_area(a) + box_area(b) - inter)


def box_iou(boxes_a, boxes_b):
  """Pairwise IoU of inclusive pixel boxes: (A, 4) x (B, 4) -> (A, B); see `broadcast_iou`."""
  a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
  b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
  return broadcast_iou(a[:, None, :], b[None, :, :])


def box_area(boxes):
  """Inclusive pixel area (x2 - x1 + 1) * (y2 - y1 + 1) of boxes (..., 4)."""
  boxes = np.asarray(boxes, dtype=np.float64)
  return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)


def voc_ap(recall, precision, use_07_metric=False):
  """Average precision from a precision/recall curve, as in the PASCAL VOC devkit.

  VOC 2007 (use_07_metric=True): AP = (1/11) * sum over t in {0, 0.1, ..., 1} of
  max(precision[recall >= t]) (0 when no recall reaches t).
  VOC 2010+ (all-point): with the curve padded to recall 0 and 1 (precision 0 at both ends) and
  precision made monotone (p(r) = max precision at recall >= r),
  AP = sum over the points i where recall changes of (r_i - r_{i-1}) * p(r_i).

  Args:
    recall: (D,) cumulative recall after each ranked detection.
    precision: (D,) cumulative precision after each ranked detection.
    use_07_metric: use the 11-point VOC 2007 AP.

  Returns:
    The AP as a float (0.0 for an empty curve).
  """
  recall = np.asarray(recall, dtype=np.float64)
  precision = np.asarray(precision, dtype=np.float64)
  if use_07_metric:
    ap = 0.0
    for t in np.linspace(0.0, 1.0, 11):
      above = recall >= t
      ap += (np.max(precision[above]) if np.any(above) else 0.0) / 11.0
    return float(ap)
  mrec = np.concatenate([[0.0], recall, [1.0]])
  mpre = np.concatenate([[0.0], precision, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  changes = np.flatnonzero(mrec[1:] != mrec[:-1])
  return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def detection_ap(detections, ground_truth, iou_threshold=0.5, use_07_metric=False):
  """Localization AP of one class with the PASCAL VOC detection protocol.

  Detections are ranked by descending score (ties keep their input order). Each is matched to the
  ground-truth box of its image with the highest IoU (inclusive +1 convention). If that IoU is
  > iou_threshold: a difficult box makes the detection ignored (neither TP nor FP); otherwise it is
  a TP if the box is still unmatched, else an FP (a duplicate). Lower IoU, or an image without
  boxes, gives an FP. With npos the number of non-difficult boxes, recall = cumTP / npos,
  precision = cumTP / (cumTP + cumFP), and AP = voc_ap(recall, precision, use_07_metric).

  Args:
    detections: list of (image_id, score, (x1, y1, x2, y2)).
    ground_truth: dict image_id -> list of ((x1, y1, x2, y2), difficult).
    iou_threshold: strict IoU threshold for a match.
    use_07_metric: 11-point VOC 2007 AP instead of the all-point AP.

  Returns:
    The AP as a float; NaN when the class has no non-difficult box (AP is undefined).
  """
  npos = sum(1 for boxes in ground_truth.values() for _, difficult in boxes if not difficult)
  if npos == 0:
    return float('nan')
  scores = np.array([float(d[1]) for d in detections], dtype=np.float64)
  order = np.argsort(-scores, kind='stable')
  matched = {image_id: np.zeros(len(boxes), dtype=bool) for image_id, boxes in ground_truth.items()}
  tp = np.zeros(len(order))
  fp = np.zeros(len(order))
  for rank, index in enumerate(order):
    image_id, _, box = detections[index]
    gts = ground_truth.get(image_id, [])
    if not gts:
      fp[rank] = 1
      continue
    ious = box_iou([box], [g[0] for g in gts])[0]
    best = int(np.argmax(ious))
    if ious[best] > iou_threshold:
      if gts[best][1]:
        continue
      if matched[image_id][best]:
        fp[rank] = 1
      else:
        tp[rank] = 1
        matched[image_id][best] = True
    else:
      fp[rank] = 1
  keep = (tp + fp) > 0  # Ignored detections leave the ranking.
  tp, fp = np.cumsum(tp[keep]), np.cumsum(fp[keep])
  recall = tp / npos
  precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
  return voc_ap(recall, precision, use_07_metric)


def ranked_ap(scores, hits, npos):
  """Non-interpolated AP of one ranking.

  Items are ranked by descending score (ties keep their input order);
  AP = (1 / npos) * sum over hits of precision at the hit's rank, where the precision at rank k
  is (hits among the first k) / k. Positives never hit contribute 0.

  Args:
    scores: (N,) scores.
    hits: (N,) booleans, True where the item is a true positive.
    npos: number of positives (the recall denominator).

  Returns:
    The AP as a float; NaN when npos == 0.
  """
  if npos == 0:
    return float('nan')
  scores = np.asarray(scores, dtype=np.float64)
  order = np.argsort(-scores, kind='stable')
  ranked = np.asarray(hits, dtype=bool)[order]
  precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
  return float(np.sum(precision[ranked]) / npos)


def classification_ap(scores, labels, ignore=None):
  """Per-class classification AP (VOC): ranked_ap over images, difficult-only images skipped.

  AP_c = ranked_ap(scores[:, c], labels[:, c], sum(labels[:, c])) over the images with
  ignore[:, c] False.

  Args:
    scores: (N, C) class scores.
    labels: (N, C) multi-hot labels.
    ignore: (N, C) booleans; True leaves the image out of class c's ranking.

  Returns:
    (C,) per-class AP, NaN for a class without positives.
  """
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels) > 0
  ignore = np.zeros_like(labels) if ignore is None else np.asarray(ignore, dtype=bool)
  result = np.full(scores.shape[1], np.nan)
  for c in range(scores.shape[1]):
    keep = ~ignore[:, c]
    result[c] = ranked_ap(scores[keep, c], labels[keep, c], int(labels[keep, c].sum()))
  return result


def pointwise_ap(scores, points, ground_truth, tolerance=18):
  """Pointwise localization AP per class (Oquab et al. 2015; WILDCAT).

  For class c every image is ranked by scores[:, c]. An image is a true positive if it holds a
  non-difficult instance of c and its point (x, y) = points[i, c] satisfies
  x1 - tol <= x <= x2 + tol and y1 - tol <= y <= y2 + tol for some box of c (difficult boxes
  included); every other image is a false positive. An image whose only instances of c are
  difficult leaves class c's ranking. AP_c = ranked_ap(...) with npos the number of images
  holding a non-difficult instance of c.

  Args:
    scores: (N, C) class scores.
    points: (N, C, 2) points (x, y) in original-image pixels.
    ground_truth: list of N lists of (class_index, (x1, y1, x2, y2), difficult).
    tolerance: pixels added on each side of every box.

  Returns:
    (C,) per-class AP, NaN for a class without positives.
  """
  scores = np.asarray(scores, dtype=np.float64)
  points = np.asarray(points, dtype=np.float64)
  num_images, num_classes = scores.shape
  if len(ground_truth) != num_images or points.shape != (num_images, num_classes, 2):
    raise ValueError('pointwise_ap needs scores (N, C), points (N, C, 2) and N ground-truth lists.')
  positive = np.zeros((num_images, num_classes), dtype=bool)
  present = np.zeros((num_images, num_classes), dtype=bool)
  hit = np.zeros((num_images, num_classes), dtype=bool)
  for i, objects in enumerate(ground_truth):
    for c, (x1, y1, x2, y2), difficult in objects:
      present[i, c] = True
      positive[i, c] |= not difficult
      x, y = points[i, c]
      inside_x = x1 - tolerance <= x <= x2 + tolerance
      hit[i, c] |= inside_x and (y1 - tolerance <= y <= y2 + tolerance)
  result = np.full(num_classes, np.nan)
  for c in range(num_classes):
    keep = positive[:, c] | ~present[:, c]
    result[c] = ranked_ap(scores[keep, c], (hit & positive)[keep, c], int(positive[:, c].sum()))
  return result


def corloc(top_boxes, ground_truth, iou_threshold=0.5):
  """CorLoc of one class: the fraction of images whose top box has IoU >= threshold with a box.

  CorLoc = |{i : max_g IoU(top_i, g) >= iou_threshold}| / |images|, over the images of
  `top_boxes` (those holding the class); a None top box counts as a miss.

  Args:
    top_boxes: dict image_id -> (x1, y1, x2, y2) or None.
    ground_truth: dict image_id -> list of (x1, y1, x2, y2) (difficult boxes included).
    iou_threshold: inclusive IoU threshold.

  Returns:
    The fraction as a float; NaN when `top_boxes` is empty.
  """
  if not top_boxes:
    return float('nan')
  correct = 0
  for image_id, box in top_boxes.items():
    gts = ground_truth.get(image_id, [])
    if box is not None and gts and np.max(box_iou([box], gts)) >= iou_threshold:
      correct += 1
  return correct / len(top_boxes)


def max_box_accuracy(ious, classes, num_classes, iou_thresholds=(0.5,)):
  """MaxBoxAcc (wsolevaluation): the best accuracy over a sweep of CAM thresholds.

  For each threshold tau (column of `ious`) and IoU threshold delta,
  acc(tau, delta) = mean over samples of 1[ious[:, tau] >= delta]. Per delta the reported value is
  max over tau of acc(tau, delta); the result averages these over the deltas (one delta = 0.5 is
  MaxBoxAcc, {0.3, 0.5, 0.7} with all-contour boxes is MaxBoxAccV2). Per-class values are the
  class's accuracy at the tau that is best over all samples, averaged over deltas.

  Args:
    ious: (P, T) best IoU of each sample (an image and one of its classes) at each threshold.
    classes: (P,) class index of each sample.
    num_classes: C.
    iou_thresholds: the deltas.

  Returns:
    (value, per_class (C,) with NaN for classes without samples, best threshold index per delta).
  """
  ious = np.asarray(ious, dtype=np.float64)
  classes = np.asarray(classes, dtype=np.int64)
  if ious.shape[0] == 0:
    return float('nan'), np.full(num_classes, np.nan), [0] * len(iou_thresholds)
  values, per_class, best = [], np.zeros(num_classes), []
  counts = np.bincount(classes, minlength=num_classes)
  for delta in iou_thresholds:
    correct = ious >= delta
    accuracy = correct.mean(axis=0)
    tau = int(np.argmax(accuracy))
    best.append(tau)
    values.append(accuracy[tau])
    hits = np.bincount(classes, weights=correct[:, tau], minlength=num_classes)
    per_class += np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
  return float(np.mean(values)), per_class / len(iou_thresholds), best


def _per_class_mean(values, classes, num_classes):
  """Mean of `values` per class (NaN where a class has none)."""
  values = np.asarray(values, dtype=np.float64)
  classes = np.asarray(classes, dtype=np.int64)
  counts = np.bincount(classes, minlength=num_classes)
  sums = np.bincount(classes, weights=values, minlength=num_classes)
  return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def expansion_ratio(pred_boxes, gt_boxes):
  """Expansion: area(predicted box) / area(ground-truth box), inclusive areas.

  Args:
    pred_boxes: (P, 4) predicted boxes; a row of -1 means no box (ratio 0).
    gt_boxes: (P, 4) the matching ground-truth boxes.

  Returns:
    (P,) ratios.
  """
  pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
  gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
  ratio = box_area(pred) / box_area(gt)
  return np.where(pred[:, 0] < 0, 0.0, ratio)


class ClassificationAP:
  """Accumulates (scores, labels, ignore) over batches; compute() gives classification_ap."""

  def __init__(self):
    self._scores, self._labels, self._ignore = [], [], []

  def accumulate(self, scores, labels, ignore):
    self._scores.append(np.asarray(scores, dtype=np.float64))
    self._labels.append(np.asarray(labels))
    self._ignore.append(np.asarray(ignore, dtype=bool))

  def compute(self):
    if not self._scores:
      raise UserError('No examples were evaluated: check that the evaluation split is not empty.')
    return classification_ap(np.concatenate(self._scores), np.concatenate(self._labels),
                             np.concatenate(self._ignore))


class DetectionAP:
  """Accumulates per-class detections and ground truth; compute() gives detection_ap per class."""

  def __init__(self, num_classes):
    self.num_classes = num_classes
    self._detections = [[] for _ in range(num_classes)]
    self._truth = [{} for _ in range(num_classes)]

  def add_ground_truth(self, image_id, classes, boxes, difficult):
    """Registers the image and its boxes (every image, so that false positives count)."""
    for truth in self._truth:
      truth.setdefault(image_id, [])
    for c, box, hard in zip(classes, boxes, difficult):
      self._truth[int(c)][image_id].append((tuple(int(v) for v in box), bool(hard)))

  def add_detections(self, image_id, class_index, score, boxes):
    for box in boxes:
      self._detections[class_index].append((image_id, float(score), tuple(int(v) for v in box)))

  def compute(self, use_07_metric=False, iou_threshold=0.5):
    return np.array([detection_ap(self._detections[c], self._truth[c], iou_threshold, use_07_metric)
                     for c in range(self.num_classes)])


class PointwiseAP:
  """Accumulates scores, points and ground truth; compute() gives pointwise_ap."""

  def __init__(self, tolerance=18):
    self.tolerance = tolerance
    self._scores, self._points, self._truth = [], [], []

  def accumulate(self, scores, points, ground_truth):
    self._scores.append(np.asarray(scores, dtype=np.float64))
    self._points.append(np.asarray(points, dtype=np.float64))
    self._truth.extend(ground_truth)

  def compute(self):
    return pointwise_ap(np.concatenate(self._scores), np.concatenate(self._points), self._truth,
                        self.tolerance)


class CorLoc:
  """Accumulates each (image, class) top box; compute() gives corloc per class."""

  def __init__(self, num_classes, iou_threshold=0.5):
    self.num_classes = num_classes
    self.iou_threshold = iou_threshold
    self._top = [{} for _ in range(num_classes)]
    self._truth = [{} for _ in range(num_classes)]

  def accumulate(self, image_id, class_index, top_box, gt_boxes):
    self._top[class_index][image_id] = None if top_box is None else tuple(top_box)
    self._truth[class_index][image_id] = [tuple(b) for b in gt_boxes]

  def compute(self):
    return np.array([corloc(self._top[c], self._truth[c], self.iou_threshold)
                     for c in range(self.num_classes)])


class SampleMeans:
  """Accumulates one value per (image, class) sample; compute() gives (mean, per-class means)."""

  def __init__(self, num_classes):
    self.num_classes = num_classes
    self._values, self._classes = [], []

  def accumulate(self, values, classes):
    self._values.append(np.asarray(values, dtype=np.float64).reshape(-1))
    self._classes.append(np.asarray(classes, dtype=np.int64).reshape(-1))

  def compute(self):
    values = np.concatenate(self._values) if self._values else np.zeros(0)
    classes = np.concatenate(self._classes) if self._classes else np.zeros(0, np.int64)
    mean = float(values.mean()) if len(values) else float('nan')
    return mean, _per_class_mean(values, classes, self.num_classes)


class MaxBoxAcc:
  """Accumulates per-sample IoU sweeps; compute() gives MaxBoxAcc (V1) and MaxBoxAccV2."""

  def __init__(self, num_classes, thresholds):
    self.num_classes = num_classes
    self.thresholds = np.asarray(thresholds)
    self._v1, self._v2, self._classes = [], [], []

  def accumulate(self, ious_largest, ious_all, classes):
    self._v1.append(np.asarray(ious_largest, dtype=np.float64))
    self._v2.append(np.asarray(ious_all, dtype=np.float64))
    self._classes.append(np.asarray(classes, dtype=np.int64))

  def compute(self):
    """Returns a dict of the two metrics, their per-class values and their best thresholds."""
    shape = (0, len(self.thresholds))
    v1 = np.concatenate(self._v1) if self._v1 else np.zeros(shape)
    v2 = np.concatenate(self._v2) if self._v2 else np.zeros(shape)
    classes = np.concatenate(self._classes) if self._classes else np.zeros(0, np.int64)
    acc1, per1, best1 = max_box_accuracy(v1, classes, self.num_classes, (0.5,))
    acc2, per2, best2 = max_box_accuracy(v2, classes, self.num_classes, (0.3, 0.5, 0.7))
    return {'maxboxacc': acc1, 'maxboxaccv2': acc2, 'per_class_maxboxacc': per1,
            'per_class_maxboxaccv2': per2,
            'maxboxacc_threshold': float(self.thresholds[best1[0]]),
            'maxboxaccv2_thresholds': [float(self.thresholds[b]) for b in best2]}


def mask_measures(cam, body, part, background, threshold=0.0):
  """Coverage measures of one class map against an object's body and part masks (the parts data set of excam_jax/data/synthetic.py).

  With A = {cam > threshold}: body_coverage = |A n body| / |body|, part_coverage =
  |A n part| / |part|, background_activation = |A n background| / |background|,
  map_precision = |A n (body u part)| / |A|; each is NaN when its denominator is 0.
  argmax_in is 'part', 'body' or 'outside' for the first maximum of cam in raster order.

  Args:
    cam: (H, W) class map at image resolution.
    body, part, background: (H, W) boolean masks.
    threshold: activation threshold on cam (0 is sigma = 0.5 for logits).

  Returns:
    A dict of the four fractions and 'argmax_in'.
  """
  cam = np.asarray(cam, dtype=np.float64)
  if not np.all(np.isfinite(cam)):
    raise UserError('The class map holds NaN or infinite values: the model diverged.')
  active = cam > threshold
  body, part, background = (np.asarray(m, dtype=bool) for m in (body, part, background))

  def fraction(num, den):
    return float(num) / float(den) if den else float('nan')

  where = np.unravel_index(np.argmax(cam), cam.shape)
  return {'body_coverage': fraction((active & body).sum(), body.sum()),
          'part_coverage': fraction((active & part).sum(), part.sum()),
          'background_activation': fraction((active & background).sum(), background.sum()),
          'map_precision': fraction((active & (body | part)).sum(), active.sum()),
          'argmax_in': 'part' if part[where] else 'body' if body[where] else 'outside'}


def pxap_curve(true_hist, false_hist):
  """PxAP from score histograms, as wsolevaluation's `MaskEvaluator.compute` (commit 96f4b88).

  The histograms count object (mask 1) and background (mask 0) pixels over the bins
  [0, eps), ..., [1 - eps, 1), [1, 2), [2, 3]. Reversed cumulative sums give, at each bin's left
  edge from the top (2, 1, 1 - eps, ..., 0), tp_j and fp_j: the object and background pixels
  scoring >= that edge; with P = sum(true_hist), precision_j = tp_j / (tp_j + fp_j) (NaN where
  tp_j + fp_j = 0, as theirs), recall_j = tp_j / P, and
  PxAP = sum over j >= 1 with tp_j + fp_j > 0 of precision_j * (recall_j - recall_{j-1}).
  A perfect map gives exactly 1; a constant map (all zeros) gives P / (P + N).

  Returns:
    {'pxap': the fraction in [0, 1] (theirs is x100), 'precision', 'recall': (bins,) arrays}.

  Raises:
    UserError: no object pixel (P = 0), where wsolevaluation raises RuntimeError('No positive
      ground truth'); their 'No positive prediction' check cannot fire once P > 0.
  """
  tp = np.asarray(true_hist, np.float64)[::-1].cumsum()
  fp = np.asarray(false_hist, np.float64)[::-1].cumsum()
  if tp[-1] <= 0:
    raise UserError('PxAP needs at least one object pixel (mask value 1); the masks have none.')
  with np.errstate(invalid='ignore'):
    precision = tp / (tp + fp)
  recall = tp / tp[-1]  # tp + fn = P.
  counted = (tp + fp) != 0
  pxap = (precision[1:] * np.diff(recall))[counted[1:]].sum()
  return {'pxap': float(pxap), 'precision': precision, 'recall': recall}


class PxAP:
  """Pixel average precision (wsolevaluation's `MaskEvaluator`) accumulated one map at a time.

  accumulate(cam, mask) resizes the raw cam to the mask's (H, W) with cv2 INTER_CUBIC (float64),
  min-max normalises it as `normalize_scoremap` (constant -> zeros) and adds the scores of the
  object (1) and background (0) pixels to histograms over the edges
  (0, eps, 2 eps, ..., <1, 1, 2, 3), eps = cam_curve_interval; ignore (255) pixels are left out
  (they still take part in the min-max normalisation, as theirs). compute() is `pxap_curve`.

  Unlike wsolevaluation, which scores a NaN map as all zeros, a cam with NaN or +-inf raises
  UserError: on our models it means a diverged run. Masks must be 2-D with values in {0, 1, 255}.
  """

  def __init__(self, cam_curve_interval=0.001):
    thresholds = wsolevaluation.cam_threshold_list(cam_curve_interval)
    self.edges = np.append(thresholds, [1.0, 2.0, 3.0])
    self.true_hist = np.zeros(len(self.edges) - 1, np.int64)
    self.false_hist = np.zeros(len(self.edges) - 1, np.int64)
    self.num_samples = 0

  def accumulate(self, cam, mask, where='sample'):
    """Adds one raw cam (any 2-D size) and its (H, W) mask; `where` names it in errors."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
      raise UserError(f'{where}: a PxAP mask must be a non-empty 2-D array; '
                      f'got shape {mask.shape}.')
    bad = np.setdiff1d(np.unique(mask), [0, 1, 255])
    if bad.size:
      raise UserError(f'{where}: a PxAP mask holds {bad.tolist()[:5]}; allowed values are 0 '
                      '(background), 1 (object) and 255 (ignore).')
    cam = np.asarray(cam)
    if cam.dtype.kind == 'f' and not np.isfinite(cam).all():
      raise UserError(f'{where}: the cam holds NaN or infinite values: the model diverged.')
    scores = wsolevaluation.resize_and_normalize(cam, where, size=mask.shape)
    self.true_hist += np.histogram(scores[mask == 1], self.edges)[0]
    self.false_hist += np.histogram(scores[mask == 0], self.edges)[0]
    self.num_samples += 1

  def compute(self):
    return pxap_curve(self.true_hist, self.false_hist)


def wsol_pxap(cams, masks, cam_curve_interval=0.001):
  """PxAP over samples, exactly as clovaai/wsolevaluation's MaskEvaluator (see `PxAP`).

  Args:
    cams: raw 2-D maps of any size and range, one per sample.
    masks: (H, W) masks, 1 object, 0 background, 255 ignore; each cam is resized to its mask.
    cam_curve_interval: eps, the step of the thresholds np.arange(0, 1, eps).

  Returns:
    PxAP = sum_j precision_j * (recall_j - recall_{j-1}) over the pooled pixels (`pxap_curve`),
    a fraction in [0, 1].

  Raises:
    UserError: lengths differ, no sample, a bad cam or mask, or no object pixel at all.
  """
  cams, masks = list(cams), list(masks)
  if len(cams) != len(masks):
    raise UserError(f'wsol_pxap needs one mask per cam; got {len(cams)} cams and '
                    f'{len(masks)} masks.')
  if not cams:
    raise UserError('wsol_pxap needs at least one sample; it got none.')
  accumulator = PxAP(cam_curve_interval)
  for index, (cam, mask) in enumerate(zip(cams, masks)):
    accumulator.accumulate(cam, mask, where=f'sample {index}')
  return accumulator.compute()['pxap']
