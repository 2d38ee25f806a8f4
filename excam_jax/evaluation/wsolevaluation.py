"""MaxBoxAcc and MaxBoxAccV2 computed exactly as clovaai/wsolevaluation computes them.

Reference: Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right"
(CVPR 2020), repository clovaai/wsolevaluation (commit 96f4b88, files inference.py,
evaluation.py, util.py, data_loaders.py). This module is an independent implementation of the
same rules; it shares no code with that repository. The rules, in the order they are applied to
each sample, with the place each comes from:

1. Cast (inference.py `t2n`): the raw CAM is cast to float64 before anything else.
2. Resize (inference.py `CAMComputer.compute_and_evaluate_cams`): the CAM is resized to
   224 x 224 with `cv2.resize(..., interpolation=cv2.INTER_CUBIC)`, whatever its input size
   (a 224 x 224 CAM is returned unchanged by OpenCV).
3. Normalise (inference.py `normalize_scoremap`): if the resized map holds any NaN, or is
   constant (min == max), it becomes all zeros; otherwise `(map - min) / max(map - min)`, so its
   maximum is exactly 1.0. The test is on the resized map: a constant input such as 0.7 picks
   up a 1-ulp ripple in the cubic resize and that ripple is stretched to [0, 1] (as in
   wsolevaluation), while 0, 1 or 5 stay exactly constant and are zeroed.
4. Quantise (evaluation.py `compute_bboxes_from_scoremaps`): `(map * 255).astype(uint8)`,
   i.e. truncation, so 0.5 becomes 127.
5. CAM thresholds (evaluation.py `evaluate_wsol` / inference.py `CAMComputer`):
   `np.arange(0, 1, cam_curve_interval)`; each threshold thr becomes the integer level
   `int(thr * max(quantised map))` (truncation; the max is 255, or 0 for an all-zero map).
6. Mask (evaluation.py `scoremap2bbox`, `cv2.threshold(..., THRESH_BINARY)`): pixels whose
   quantised value is strictly greater than that level.
7. Contours (same function): `cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)`;
   RETR_TREE also returns the borders of holes, and for MaxBoxAccV2 those are candidate boxes too.
8. Box rule: `multi_contour=False` (MaxBoxAcc, V1) keeps the single contour of largest
   `cv2.contourArea` (the first one in OpenCV's order on a tie, as Python's `max` does);
   `multi_contour=True` (`multi_contour_eval`, MaxBoxAccV2) keeps every contour.
9. Box of a contour (same function): `x, y, w, h = cv2.boundingRect(contour)` gives
   `(x, y, x + w, y + h)`; only x1 and y1 are clipped, to 223 (`min(x1, width - 1)`). The end
   x + w is one past the last pixel, so an unclipped predicted box is one pixel wider and taller
   than its region under rule 11's inclusive convention.
10. No contour (same function): the single box (0, 0, 0, 0), which rule 11 treats as the one
    pixel at the origin.
11. IoU (evaluation.py `calculate_multiple_iou`; util.py has `check_box_convention` only):
    inclusive pixel boxes, area = (x1 - x0 + 1) * (y1 - y0 + 1), intersection width
    max(0, min(x1) - max(x0) + 1); a denominator <= 0 gives IoU 0.
12. Ground truth (evaluation.py `resize_bbox`, `BoxEvaluator._load_resized_boxes`): each
    original-pixel box is rescaled to the 224 x 224 frame as `int(float(x) * 224.0 / W)` for
    x0, x1 and `int(float(y) * 224.0 / H)` for y0, y1 (multiply first, then divide, then
    truncate). Ground-truth boxes are not clipped.
13. Sample score (evaluation.py `BoxEvaluator.accumulate`): at each CAM threshold, the best
    IoU over all kept boxes and all ground-truth boxes of the sample; the sample is correct at
    that threshold when that IoU >= the IoU threshold (wsolevaluation takes integer percents and
    divides by 100; here the IoU thresholds are fractions, and k / 100 == the literal 0.k).
14. Result (evaluation.py `BoxEvaluator.compute`): per IoU threshold, the largest over CAM
    thresholds of the fraction of correct samples. wsolevaluation reports percents; this
    returns fractions in [0, 1]. MaxBoxAccV2 is the mean over IoU thresholds (0.3, 0.5, 0.7)
    with `multi_contour=True` (`evaluate_wsol`'s `multi_iou_eval`).

Input checks (wsolevaluation raises TypeError/ValueError/RuntimeError in
`check_scoremap_validity` / `check_box_convention`; here each raises `UserError`): a CAM that is
not a non-empty 2-D real array, a CAM with +-inf (wsolevaluation would crash or zero it
depending on where the resize spreads it), ground-truth boxes not (K, 4) with K >= 1, not
finite, negative, or with x1 < x0 or y1 < y0, an image size that is not (width, height) >= 1,
lengths that differ, no samples, IoU thresholds outside [0, 1], and a `cam_curve_interval`
outside (0, 1). A CAM holding NaN is not an error: it follows `normalize_scoremap` and scores as
the all-zero map (box (0, 0, 0, 0) at every threshold).

Speed: thresholds that give the same mask (the same number of quantised pixels above the
level; at most 256 distinct masks, fewer when the map uses fewer levels) share one
`findContours` call, and the IoUs are computed for all masks at once.
"""

import cv2
import numpy as np

from excam_jax.errors import UserError

RESIZE_LENGTH = 224


def wsol_max_box_acc(cams, gt_boxes, image_sizes, iou_thresholds=(0.5,), multi_contour=False,
                     cam_curve_interval=0.001):
  """MaxBoxAcc (V1) or the MaxBoxAccV2 box rule, as clovaai/wsolevaluation computes them.

  Args:
    cams: a sequence of raw 2-D class activation maps (any size, any value range), one per
      sample.
    gt_boxes: per sample a (K, 4) array of ground-truth boxes (x0, y0, x1, y1) in original
      image pixels, K >= 1.
    image_sizes: per sample the (width, height) of the original image.
    iou_thresholds: IoU thresholds as fractions in [0, 1].
    multi_contour: False keeps the largest contour (MaxBoxAcc); True keeps every contour and
      takes the best IoU (MaxBoxAccV2).
    cam_curve_interval: step of the CAM thresholds np.arange(0, 1, cam_curve_interval).

  Returns:
    A float64 numpy array with one accuracy in [0, 1] per IoU threshold, each at its best CAM
    threshold. The mean of it with iou_thresholds=(0.3, 0.5, 0.7) and multi_contour=True is
    MaxBoxAccV2.

  Raises:
    UserError: for the invalid inputs listed in the module docstring.
  """
  cam_thresholds = cam_threshold_list(cam_curve_interval)
  ious_needed = _check_iou_thresholds(iou_thresholds)
  cams, gt_boxes, image_sizes = list(cams), list(gt_boxes), list(image_sizes)
  if not len(cams) == len(gt_boxes) == len(image_sizes):
    raise UserError(f'wsol_max_box_acc needs one gt_boxes and one image_sizes entry per cam; '
                    f'got {len(cams)} cams, {len(gt_boxes)} gt_boxes and '
                    f'{len(image_sizes)} image_sizes.')
  if not cams:
    raise UserError('wsol_max_box_acc needs at least one sample; it got none.')
  num_correct = np.zeros((len(ious_needed), len(cam_thresholds)), dtype=np.int64)
  for index, (cam, boxes, size) in enumerate(zip(cams, gt_boxes, image_sizes)):
    gt = resize_gt_boxes(boxes, size, where=f'sample {index}')
    scoremap = resize_and_normalize(cam, where=f'sample {index}')
    best = best_iou_per_threshold(scoremap, gt, cam_thresholds, multi_contour)
    num_correct += best[None, :] >= ious_needed[:, None]
  return num_correct.max(axis=1) / float(len(cams))


def cam_threshold_list(cam_curve_interval):
  """The CAM thresholds np.arange(0, 1, cam_curve_interval); the interval must lie in (0, 1)."""
  try:
    interval = float(cam_curve_interval)
  except (TypeError, ValueError):
    interval = float('nan')
  if not 0.0 < interval < 1.0:
    raise UserError(f'cam_curve_interval={cam_curve_interval!r} is invalid: it must lie in (0, 1).')
  return np.arange(0, 1, interval)


def _check_iou_thresholds(iou_thresholds):
  try:
    values = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
  except (TypeError, ValueError):
    values = np.array([np.nan])
  if values.size == 0 or not np.all((values >= 0.0) & (values <= 1.0)):
    raise UserError(f'iou_thresholds={iou_thresholds!r} is invalid: give one or more fractions '
                    f'in [0, 1] (0.5, not 50).')
  return values


def resize_and_normalize(cam, where='cam', size=(RESIZE_LENGTH, RESIZE_LENGTH)):
  """Rules 1-3: float64, cv2 INTER_CUBIC resize to `size` (height, width; 224 x 224 for
  MaxBoxAcc, the mask's size for PxAP), then `normalize_scoremap`."""
  try:
    array = np.asarray(cam)
  except (TypeError, ValueError):
    array = np.zeros((0,))
  if array.ndim != 2 or array.size == 0 or array.dtype.kind not in 'biuf':
    raise UserError(f'{where}: a cam must be a non-empty 2-D array of real numbers; '
                    f'got shape {array.shape} of {array.dtype}.')
  array = np.ascontiguousarray(array, dtype=np.float64)
  if np.isinf(array).any():
    raise UserError(f'{where}: the cam holds infinite values; fix the model output '
                    f'(NaN maps are scored as all-zero maps, infinite ones are refused).')
  height, width = size
  resized = cv2.resize(array, (width, height), interpolation=cv2.INTER_CUBIC)  # dsize: (w, h).
  if np.isnan(resized).any():
    return np.zeros_like(resized)
  if np.isinf(resized).any():
    raise UserError(f'{where}: the cam overflows to infinity when resized; scale it down.')
  low, high = resized.min(), resized.max()
  if low == high:
    return np.zeros_like(resized)
  shifted = resized - low
  return shifted / shifted.max()


def resize_gt_boxes(boxes, image_size, where='sample'):
  """Rule 12: original-pixel boxes (K, 4) -> int boxes in the 224 x 224 frame, (K, 4) int64."""
  try:
    width, height = (float(v) for v in image_size)
  except (TypeError, ValueError):
    raise UserError(f'{where}: an image size must be (width, height); got {image_size!r}.'
                    ) from None
  if not (np.isfinite(width) and np.isfinite(height) and width >= 1 and height >= 1):
    raise UserError(f'{where}: image size (width, height)={image_size!r} must be at least 1 x 1.')
  try:
    array = np.asarray(boxes, dtype=np.float64)
  except (TypeError, ValueError):
    array = np.zeros((0,))
  if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] != 4:
    raise UserError(f'{where}: gt_boxes must be a (K, 4) array of (x0, y0, x1, y1) with K >= 1; '
                    f'got shape {array.shape}.')
  if not np.isfinite(array).all() or (array < 0).any():
    raise UserError(f'{where}: gt_boxes must be finite and non-negative; got {array.tolist()}.')
  if (array[:, 2] < array[:, 0]).any() or (array[:, 3] < array[:, 1]).any():
    raise UserError(f'{where}: gt_boxes must have x1 >= x0 and y1 >= y0; got {array.tolist()}.')
  scale = np.array([width, height, width, height])
  resized = array * float(RESIZE_LENGTH) / scale
  return np.trunc(resized).astype(np.int64)


def _level_of_thresholds(quantised, cam_thresholds):
  """Rule 5: the integer level int(thr * max(quantised)) of each CAM threshold."""
  peak = float(quantised.max())
  return (np.asarray(cam_thresholds, dtype=np.float64) * peak).astype(np.int64)


def _boxes_of_mask(mask, multi_contour):
  """Rules 7-10 for one binary mask: an (N, 4) int64 array of boxes, N >= 1."""
  contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
  if len(contours) == 0:
    return np.zeros((1, 4), dtype=np.int64)
  if not multi_contour:
    areas = [cv2.contourArea(contour) for contour in contours]
    contours = [contours[int(np.argmax(areas))]]  # argmax: first of the largest, as max().
  height, width = mask.shape
  rects = np.array([cv2.boundingRect(contour) for contour in contours], dtype=np.int64)
  x0, y0 = rects[:, 0], rects[:, 1]
  x1 = np.minimum(x0 + rects[:, 2], width - 1)
  y1 = np.minimum(y0 + rects[:, 3], height - 1)
  return np.stack([x0, y0, x1, y1], axis=1)


def boxes_at_thresholds(scoremap, cam_thresholds, multi_contour=False):
  """Rules 4-10 on a normalised map: the boxes at each CAM threshold.

  Returns:
    (boxes, mask_index): boxes is a list of (N_m, 4) int64 arrays, one per distinct mask m;
    mask_index is an int array giving the mask of each CAM threshold.
  """
  quantised = (np.asarray(scoremap, dtype=np.float64) * 255).astype(np.uint8)
  levels = _level_of_thresholds(quantised, cam_thresholds)
  counts = np.bincount(quantised.reshape(-1), minlength=256)
  above = counts[::-1].cumsum()[::-1]  # above[v] = number of pixels with value >= v.
  pixels_above = np.append(above, 0)[levels + 1]  # pixels with value > level.
  _, first, mask_index = np.unique(pixels_above, return_index=True, return_inverse=True)
  boxes = [_boxes_of_mask((quantised > levels[i]).astype(np.uint8), multi_contour) for i in first]
  return boxes, mask_index.reshape(-1)


def multiple_iou(boxes_a, boxes_b):
  """Rule 11: (A, 4) x (B, 4) inclusive int boxes -> (A, B) IoU, 0 where the union is <= 0."""
  a = np.asarray(boxes_a, dtype=np.int64)[:, None, :]
  b = np.asarray(boxes_b, dtype=np.int64)[None, :, :]
  inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
  inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
  inter = inter_w * inter_h
  area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
  area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
  union = area_a + area_b - inter
  degenerate = union <= 0
  return np.where(degenerate, 0.0, inter / np.where(degenerate, 1, union))


def best_iou_per_threshold(scoremap, gt_boxes_224, cam_thresholds, multi_contour=False):
  """Rule 13's IoU: per CAM threshold, the best IoU of any kept box with any ground-truth box."""
  boxes, mask_index = boxes_at_thresholds(scoremap, cam_thresholds, multi_contour)
  sizes = np.array([len(b) for b in boxes])
  ious = multiple_iou(np.concatenate(boxes, axis=0), gt_boxes_224).max(axis=1)
  best_per_mask = np.maximum.reduceat(ious, np.concatenate([[0], np.cumsum(sizes)[:-1]]))
  return best_per_mask[mask_index]
