r"""Where a trained run's class maps lie, and why its CorLoc boxes fail (parts data set).

  python experiments/diagnose_maps.py --workdir=runs/synthetic [--images=150]

Prints the mean z of the class map of each image's classes on the part, the rest of the body,
the background within 10 px of an object and the farther background (and of the absent classes
on objects and background), then sorts the CorLoc samples (the largest z > 0 component's box
against the class's boxes) into hits (IoU >= 0.5), too large (area > 1.5x), too small
(< 0.67x), misplaced, and no box. Validation split; every sample, difficult objects included.
"""

import argparse

import numpy as np
from scipy import ndimage


from excam_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
from excam_jax.data import synthetic
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import metrics
from experiments import compare_maps


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--images', type=int, default=150)
  args = parser.parse_args()
  p = checkpoints.restore(args.workdir)[0].data.parts
  examples = [synthetic.render(p.seed, 'validation', i, **synthetic.options(p))
              for i in range(args.images)]
  images = np.stack([e['image'] for e in examples]).astype(np.float32) / np.float32(255.0)
  _, maps = compare_maps.class_maps(args.workdir, None, images)
  z = {k: [] for k in ('part', 'body', 'near', 'far', 'absent_on_objects', 'absent_background')}
  kinds = dict.fromkeys(('hit', 'too_large', 'too_small', 'misplaced', 'no_box'), 0)
  for ex, class_maps in zip(examples, maps):
    height, width = ex['image'].shape[:2]
    up = boxlib.upsample(np.moveaxis(class_maps, -1, 0), height, width)
    occupied = ex['body_masks'].any(0) | ex['part_masks'].any(0)
    near = ndimage.binary_dilation(occupied, iterations=10) & ~occupied
    truth = boxlib.normalized_to_pixels(ex['boxes'], height, width)
    for c in np.unique(ex['labels']):
      mine = ex['labels'] == c
      part = ex['part_masks'][mine].any(0)
      body = ex['body_masks'][mine].any(0) & ~part
      for key, where in (('part', part), ('body', body), ('near', near),
                         ('far', ~occupied & ~near)):
        z[key].append(up[c][where].mean() if where.any() else np.nan)
      found = boxlib.map_to_boxes(class_maps[..., c], height, width)
      if len(found) == 0:
        kinds['no_box'] += 1
        continue
      ratio = metrics.box_area(found[:1])[0] / metrics.box_area(truth[mine]).max()
      if metrics.box_iou(found[:1], truth[mine]).max() >= 0.5:
        kinds['hit'] += 1
      else:
        kinds['too_large' if ratio > 1.5 else 'too_small' if ratio < 0.67 else 'misplaced'] += 1
    for c in sorted(set(range(p.num_classes)) - set(ex['labels'].tolist())):
      z['absent_on_objects'].append(up[c][occupied].mean())
      z['absent_background'].append(up[c][~occupied].mean())
  print('mean z:', ', '.join(f'{k} {np.nanmean(v):.2f}' for k, v in z.items()))
  print('CorLoc samples:', ', '.join(f'{k} {v}' for k, v in kinds.items()))


if __name__ == '__main__':
  from excam_jax.runtime import xla  # pylint: disable=g-import-not-at-top
  xla.configure()  # What the package's commands do: the measured CPU flags, the cache.
  main()
