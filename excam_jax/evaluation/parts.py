"""Measures only the parts data set allows: where the class maps lie on body, part, background.

Each evaluated example is regenerated with its body and part masks (excam_jax.data.synthetic
.render); for every (image, ground-truth class with a non-difficult object) the class map,
upsampled to the native image size, is scored by metrics.mask_measures at z > 0, and the raw
map (native h x w; PxAP resizes it with cv2 INTER_CUBIC as wsolevaluation does) feeds PxAP
against the exact mask: 1 on the body and part of the class's non-difficult objects, 255 on
its difficult ones, 0 elsewhere. An accumulator like evaluator.Evaluator, fed in the same pass
over the data.
"""

import numpy as np

from excam_jax.data import synthetic
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import metrics
from excam_jax.evaluation.evaluator import nanmean

MEASURES = ('body_coverage', 'part_coverage', 'background_activation', 'map_precision')


class PartsMeasures:
  """Body/part coverage, background activation and map precision over batches.

  Args:
    parts_config: the config's `parts` section (seed, preset, num_classes, image_size).
    split: the split the batches come from.
  """

  def __init__(self, parts_config, split):
    self.p, self.split = parts_config, split
    self.samples = []
    self.pxap = [metrics.PxAP() for _ in range(parts_config.num_classes)]

  def add(self, batch, class_maps):
    """Adds the real rows of one batch and the model's class maps (B, h, w, C) on all rows."""
    p = self.p
    keep = np.flatnonzero(np.asarray(batch['mask']) > 0)
    for i, image_id in zip(keep, np.asarray(batch['image_id'])[keep]):
      ex = synthetic.render(p.seed, self.split, int(image_id), **synthetic.options(p))
      size = ex['image'].shape[:2]
      maps = boxlib.upsample(np.moveaxis(np.asarray(class_maps[i]), -1, 0), *size)
      objects = ex['body_masks'] | ex['part_masks']
      occupied = objects.any(axis=0)
      for c in np.unique(ex['labels'][~ex['difficult']]):  # Difficult-only classes skipped.
        mine = ex['labels'] == c
        self.samples.append(metrics.mask_measures(maps[c], ex['body_masks'][mine].any(axis=0),
                                                  ex['part_masks'][mine].any(axis=0),
                                                  ~occupied))
        mask = np.where(objects[mine & ex['difficult']].any(axis=0), 255, 0).astype(np.uint8)
        mask[objects[mine & ~ex['difficult']].any(axis=0)] = 1
        self.pxap[c].accumulate(np.asarray(class_maps[i])[..., c], mask,
                                where=f'{self.split} example {image_id}, class {c}')

  def compute(self):
    """'parts_<measure>' means over samples (NaN ones left out), 'parts_argmax_in'
    (fractions of samples whose argmax falls on the part, body or outside), and PxAP:
    'pxap' over the pixels of all samples pooled (metrics.pxap_curve of the summed histograms;
    NaN without samples), 'per_class_pxap' over each class's samples (NaN for a class without
    samples) and 'mean_class_pxap', their mean over the classes with samples."""
    out = {f'parts_{key}': nanmean([s[key] for s in self.samples]) for key in MEASURES}
    where = [s['argmax_in'] for s in self.samples]
    out['parts_argmax_in'] = {k: where.count(k) / max(len(where), 1)
                              for k in ('part', 'body', 'outside')}
    per_class = [a.compute()['pxap'] if a.num_samples else float('nan') for a in self.pxap]
    pooled = [sum(a.true_hist for a in self.pxap), sum(a.false_hist for a in self.pxap)]
    out['pxap'] = metrics.pxap_curve(*pooled)['pxap'] if self.samples else float('nan')
    out['per_class_pxap'] = per_class
    out['mean_class_pxap'] = nanmean(per_class)
    return out
