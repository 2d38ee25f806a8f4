r"""CAM overlays of several trained runs on the same images of a split (parts data set).

  python experiments/compare_maps.py --out=maps.png --images=0,1,2,3,4,5 [--split=test] \
      --runs=WILDCAT=runs/study/runs/wildcat_cue0.5_seed0,ex-CAM=runs/study/runs/excam_cue0.5_seed0,erase=runs/study/runs/wildcat_cue0.5_seed0@erase

One row per image, one column per run (NAME=WORKDIR, with @erase for test-time erasing or
@relative for the relative box rule, config.eval.map_expansion of models/map_transforms.py): the
first ground-truth class's map as a heat map on its own scale (visualize.heat_fn: blue 0, red 1;
sigmoid(z) for logits, the normalised map for ACoL and the relative rule), the ground-truth box in
red and the CorLoc box (largest z > 0 component) in green. The runs must share the data set.
"""

import argparse

import numpy as np

from excam_jax import inference
from excam_jax import visualize
from excam_jax.data import image_ops
from excam_jax.data import synthetic
from excam_jax.evaluation import boxes as boxlib
from excam_jax.training import checkpoints


def class_maps(workdir, transform, images):
  """(heat, maps (N, h, w, C)) of a run on native images (N, S, S, 3) in [0, 1].

  `transform`: a config.eval.map_expansion kind ('erase', 'relative'), or None (the config's).
  `heat`: z -> heat in [0, 1], the maps on their own scale (inference.Predictor.heat).
  """
  predictor = inference.load(workdir, transform={'map_expansion': transform or None})
  size = predictor.image_size
  _, maps = predictor(image_ops.normalize(image_ops.resize_bilinear(images, size, size)))
  return predictor.heat, maps


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--runs', required=True, help='NAME=WORKDIR[@erase|@relative],...')
  parser.add_argument('--images', default='0,1,2,3,4,5', help="indices in --split's images")
  parser.add_argument('--split', default='validation', choices=sorted(synthetic.SPLITS),
                      help="the parts data set's split the images come from (its seed is the "
                           "first run's)")
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  runs = [item.split('=', 1) for item in args.runs.split(',') if item]
  indices = [int(i) for i in args.images.split(',') if i.strip()]
  first = checkpoints.restore(runs[0][1].split('@')[0])[0].data.parts
  examples = [synthetic.render(first.seed, args.split, i, **synthetic.options(first))
              for i in indices]
  images = np.stack([e['image'] for e in examples]).astype(np.float32) / np.float32(255.0)
  columns = []
  for name, spec in runs:
    workdir, _, mode = spec.partition('@')
    heat, maps = class_maps(workdir, mode or None, images)
    columns.append((name, maps, heat))
  panels, titles = [], []
  names = synthetic.class_names(first.num_classes)
  for row, ex in enumerate(examples):
    size = ex['image'].shape[0]
    c = int(ex['labels'][0])
    truth = boxlib.normalized_to_pixels(ex['boxes'][ex['labels'] == c], size, size)
    for name, maps, heat in columns:
      z = boxlib.upsample(maps[row][..., c][None], size, size)[0]
      panel = visualize.overlay_cam(images[row], heat(z))
      found = boxlib.map_to_boxes(maps[row][..., c], size, size)
      panels.append(visualize.overlay_boxes(panel, truth, found[:1]))
      titles.append(f'{name}: {names[c]}')
  visualize.save_panels(args.out, panels, titles, columns=len(columns))
  print(f'wrote {args.out}')


if __name__ == '__main__':
  from excam_jax.runtime import xla  # pylint: disable=g-import-not-at-top
  xla.configure()  # What the package's commands do: the measured CPU flags, the cache.
  main()
