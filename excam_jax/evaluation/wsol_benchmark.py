"""The WSOL benchmark's scores, as clovaai/wsolevaluation computes them, on its data sets.

config.data.dataset 'wsol/cub' and 'wsol/ilsvrc' (boxes): MaxBoxAccV2, GT-known Loc, Top-1 Loc and
top-1 accuracy; 'wsol/openimages' (masks): PxAP and top-1 accuracy; 'caltech_birds2011' (CUB
through TFDS, boxes and masks): all of them. `Scorer` is an accumulator like evaluator.Evaluator
(add(batch, logits, class_maps), compute()), which evaluator.make_scorer picks for the data sets
data/sources.py marks `benchmark`. A batch is scored on its masks when it has object_mask and on
its boxes when it has no object_mask or has boxes (box_labels >= 0). As wsolevaluation
(inference.py CAMComputer), every image is scored with the class map of its ground-truth class
(batch['class_id']), whatever the model predicts:

  boxes: wsolevaluation.best_iou_per_threshold of that map (resized to 224 x 224 with cv2 cubic,
    min-max normalised, uint8, thresholds np.arange(0, 1, cam_curve_interval), the boxes of every
    contour with multi_contour_eval, of the largest without) against the image's boxes exactly as
    the metadata lists them (x0, y0, x1, y1, rescaled to 224 as their resize_bbox); an image is
    correct at IoU delta when its best IoU is >= delta. MaxBoxAcc(delta) = max over the
    thresholds of the fraction correct; 'maxboxaccv2' = its mean over iou_threshold_list (their
    BoxEvaluator.compute, multi_iou_eval); named 'maxboxacc' without multi_contour_eval (V1
    boxes: with iou_threshold_list (50,) the CVPR version's MaxBoxAcc).
  GT-known Loc = MaxBoxAcc(0.5) with the same boxes; Top-1 Loc = the fraction of images whose
    top-1 class is right and whose box has IoU >= 0.5 at GT-known Loc's best threshold.
    wsolevaluation reports neither: these are the literature's definitions, the threshold chosen
    as MaxBoxAcc chooses it.
  masks: metrics.PxAP of that map against batch['object_mask'] (their get_mask at the input size:
    1 object, 0 background, 255 ignore), the pixels of all images pooled (their MaskEvaluator).
  top-1 accuracy: the argmax of the logits (the first on ties) is the image's class (their
    Trainer._compute_accuracy).

Values are fractions (wsolevaluation prints percents). A best threshold is the first of the
largest accuracy, as np.argmax.
"""

from typing import NamedTuple

import numpy as np

from excam_jax import config_schema
from excam_jax.errors import UserError
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import metrics
from excam_jax.evaluation import wsolevaluation


class Protocol(NamedTuple):
  """wsolevaluation's flags that change a score (config.eval; config_schema.WSOL_EVAL_DEFAULTS)."""
  cam_curve_interval: float
  iou_threshold_list: tuple  # Percent, as their flag.
  multi_contour_eval: bool

  @classmethod
  def from_config(cls, eval_config=None):
    """The protocol of a config's `eval` section (absent fields: wsolevaluation's defaults)."""
    fields = {k: v if eval_config is None else eval_config.get(k, v)
              for k, v in config_schema.WSOL_EVAL_DEFAULTS.items()}
    return cls(float(fields['cam_curve_interval']),
               tuple(int(v) for v in fields['iou_threshold_list']),
               bool(fields['multi_contour_eval']))

  def describe(self):
    """The protocol as a JSON-ready mapping (metrics.json "protocol")."""
    return {'name': 'wsolevaluation (clovaai, Choe et al. CVPR 2020), commit 96f4b88',
            'cam': "the ground-truth class's map, resized to 224 x 224 (cv2 cubic), min-max "
                   'normalised',
            **self._asdict(),
            'boxes': ('every contour' if self.multi_contour_eval else 'the largest contour') +
                     ' at each threshold; ground truth as the metadata lists it, rescaled to 224',
            'top1_loc': "top-1 class right and IoU >= 0.5 at GT-known Loc's best threshold"}


def sample_ious(cams, truth, sizes, thresholds, multi_contour):
  """(P, T): the best IoU of each of P samples' boxes at each of the T CAM thresholds.

  cams: (P, h, w) raw maps; truth: P arrays (K, 4) of (x0, y0, x1, y1) original pixels; sizes:
  (P, 2) (width, height) of the original images.
  """
  return np.stack([wsolevaluation.best_iou_per_threshold(
      wsolevaluation.resize_and_normalize(cam, f'sample {i}'),
      wsolevaluation.resize_gt_boxes(boxes, size, f'sample {i}'), thresholds, multi_contour)
                   for i, (cam, boxes, size) in enumerate(zip(cams, truth, sizes))])


class Scorer:
  """Accumulates the WSOL benchmark's scores over batches; `compute()` at the end.

  Args:
    class_names: the C class names.
    protocol: a Protocol.
    localization: also score the maps (False: top-1 accuracy only).
    pool: an optional concurrent.futures executor for the box sweeps.
  """

  def __init__(self, class_names, protocol, localization=True, pool=None):
    self.num_classes, self.protocol = len(class_names), protocol
    self.localization, self.pool = localization, pool
    self.thresholds = wsolevaluation.cam_threshold_list(protocol.cam_curve_interval)
    # The IoU thresholds counted, in percent: iou_threshold_list and 50 (GT-known, Top-1 Loc).
    self.percents = sorted(set(protocol.iou_threshold_list) | {50})
    self.deltas = np.array(self.percents) / 100.0
    self.images = np.zeros(self.num_classes, np.int64)  # Images per class.
    self.right = np.zeros(self.num_classes, np.int64)  # Top-1 right, per class.
    self.correct = np.zeros((len(self.deltas), len(self.thresholds)), np.int64)
    self.known = np.zeros((self.num_classes, len(self.thresholds)), np.int64)  # IoU >= 0.5.
    self.top1_known = np.zeros(len(self.thresholds), np.int64)
    self.pxap = [metrics.PxAP(protocol.cam_curve_interval) for _ in range(self.num_classes)]
    self.sweeps = []
    self.masks = False  # Some batch was scored on its masks (PxAP).
    self.boxes = False  # Some batch was scored on its boxes (MaxBoxAcc, GT-known, Top-1 Loc).

  def add(self, batch, logits, class_maps):
    """Adds one batch (rows with mask 0 are skipped) and the model's outputs on all its rows."""
    valid = np.asarray(batch['mask']) > 0
    logits = np.asarray(logits, np.float32)[valid]
    if logits.shape[-1] != self.num_classes:
      raise UserError(f'The model predicts {logits.shape[-1]} classes but the data set has '
                      f'{self.num_classes}: evaluate with the config the checkpoint was trained '
                      'with.')
    classes = np.asarray(batch['class_id'])[valid]
    right = logits.argmax(axis=1) == classes
    np.add.at(self.images, classes, 1)
    np.add.at(self.right, classes, right)
    if not self.localization or not len(classes):
      return
    cams = np.moveaxis(np.asarray(class_maps, np.float32)[valid], -1, 1)[
        np.arange(len(classes)), classes]  # (P, h, w): each image's ground-truth class.
    image_ids = np.asarray(batch['image_id'])[valid]
    if 'object_mask' in batch:
      self.masks = True
      for cam, mask, c, i in zip(cams, np.asarray(batch['object_mask'])[valid], classes, image_ids):
        self.pxap[c].accumulate(cam, mask, where=f'image {i} (line {i + 1} of image_ids.txt)')
      if 'box_labels' not in batch or not np.any(np.asarray(batch['box_labels'])[valid] >= 0):
        return  # Masks only (OpenImages).
    self.boxes = True
    size = np.asarray(batch['orig_size'])[valid]  # (height, width)
    labels = np.asarray(batch['box_labels'])[valid]
    pixels = boxlib.normalized_to_pixels(np.asarray(batch['boxes'])[valid], size[:, :1],
                                         size[:, 1:])
    args = (cams, [p[k >= 0] for p, k in zip(pixels, labels)], size[:, ::-1], self.thresholds,
            self.protocol.multi_contour_eval)
    result = sample_ious(*args) if self.pool is None else self.pool.submit(sample_ious, *args)
    self.sweeps.append((result, classes, right))

  def _sweep_counts(self):
    for result, classes, right in self.sweeps:
      best = result if isinstance(result, np.ndarray) else result.result()  # (P, T)
      self.correct += (best[None] >= self.deltas[:, None, None]).sum(axis=1)
      known = best >= 0.5
      self.top1_known += (known & right[:, None]).sum(axis=0)
      np.add.at(self.known, classes, known.astype(np.int64))
    self.sweeps = []

  def compute(self):
    """{'num_examples', 'top1_accuracy', the localization scores, 'per_class'} (module doc)."""
    count = int(self.images.sum())
    if not count:
      raise UserError('No examples were evaluated: check that the evaluation split is not empty.')
    with np.errstate(invalid='ignore', divide='ignore'):
      per_class = {'top1_accuracy': self.right / self.images}
    out = {'num_examples': count, 'top1_accuracy': float(self.right.sum() / count)}
    if self.localization and self.masks:
      scored = [a for a in self.pxap if a.num_samples]
      out['pxap'] = metrics.pxap_curve(sum(a.true_hist for a in scored),
                                       sum(a.false_hist for a in scored))['pxap']
      per_class['pxap'] = [a.compute()['pxap'] if a.true_hist.sum() else np.nan
                           for a in self.pxap]
    if self.localization and self.boxes:
      self._sweep_counts()
      accuracy = self.correct / count  # (deltas, thresholds)
      best = accuracy.argmax(axis=1)
      chosen = [self.percents.index(d) for d in self.protocol.iou_threshold_list]
      half = self.percents.index(50)
      tau = best[half]
      with np.errstate(invalid='ignore', divide='ignore'):
        per_class['gt_known_loc'] = self.known[:, tau] / self.images
      name = 'maxboxaccv2' if self.protocol.multi_contour_eval else 'maxboxacc'  # V2 or V1 boxes.
      out.update({name: float(np.mean(accuracy[chosen, best[chosen]])),
                  f'{name}_per_iou': [float(accuracy[i, best[i]]) for i in chosen],
                  f'{name}_thresholds': [float(self.thresholds[best[i]]) for i in chosen]})
      out.update(gt_known_loc=float(accuracy[half, tau]),
                 top1_loc=float(self.top1_known[tau] / count),
                 loc_threshold=float(self.thresholds[tau]))
    out['per_class'] = {k: [float(v) for v in values] for k, values in per_class.items()}
    return out
