r"""CAM overlays of several trained runs on the same images of a split (parts data set).

  python experiments/compare_maps.py --out=maps.png --images=0,1,2,3,4,5 [--split=test] \
      --runs=WILDCAT=runs/study/runs/wildcat_cue0.5_seed0,ex-CAM=runs/study/runs/excam_cue0.5_seed0,erase=runs/study/runs/wildcat_cue0.5_seed0@erase

One row per image, one column per run (NAME=WORKDIR, with @erase for test-time erasing or
@relative for the relative box rule, config.eval.map_expansion of models/map_transforms.py): the
first ground-truth class's map as a heat map on its own scale (visualize.heat_fn: blue 0, red 1;
sigmoid(z) for logits, the normalised map for ACoL and the relative rule), the ground-truth box in
red and the CorLoc box (largest z > 0 component) in green. The runs must share the data set.

A study's methods at their tuned settings (the overlays of a report: the same images, one seed's
trainings, each method's chosen setting and inference fields from the choices file):

  python experiments/compare_maps.py --out=maps.png --split=test --study=runs/tuned \
      --choices=runs/tuned/choices.json --methods=acol,wildcat_bas --body_cue=0.75 --seed=200
"""

import argparse
import os

import numpy as np

from excam_jax import inference
from excam_jax import visualize
from excam_jax.data import image_ops
from excam_jax.data import synthetic
from excam_jax.evaluation import boxes as boxlib
from excam_jax.training import checkpoints


def class_maps(workdir, transform, images, model_overrides=None):
  """(heat, maps (N, h, w, C)) of a run on native images (N, S, S, 3) in [0, 1].

  `transform`: a config.eval.map_expansion kind ('erase', 'relative'), or None (the config's),
  or a dict of config.eval's map-transform fields. `model_overrides`: inference-only model fields.
  `heat`: z -> heat in [0, 1], the maps on their own scale (inference.Predictor.heat).
  """
  if not isinstance(transform, dict):
    transform = {'map_expansion': transform or None}
  predictor = inference.load(workdir, transform=transform, model_overrides=model_overrides)
  size = predictor.image_size
  _, maps = predictor(image_ops.normalize(image_ops.resize_bilinear(images, size, size)))
  return predictor.heat, maps


def study_runs(workdir, choices, methods, cue, seed):
  """[(method, run folder, eval fields, inference model fields)] of a study's cells: each method's
  chosen setting at `cue` (study.read_choices), the training it evaluates (grids.TRAINED_AS) and
  the inference fields of the method and its setting."""
  from experiments import study  # pylint: disable=g-import-not-at-top
  chosen = study.read_choices(choices, methods, [cue])
  out = []
  for method in methods:
    setting = chosen[(method, cue)]
    trained = study.TRAINED_AS.get(method, method)
    run_dir = os.path.join(workdir, 'runs', study.cell_name(trained, cue, seed,
                                                            study.training_part(setting)))
    out.append((method, run_dir, *study.inference_fields(method, setting)))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--runs', default='', help='NAME=WORKDIR[@erase|@relative],...')
  parser.add_argument('--study', default='', help="a study's --workdir (instead of --runs)")
  parser.add_argument('--choices', default='', help="with --study: the tuning's choices.json")
  parser.add_argument('--methods', default='', help='with --study: the methods, in columns')
  parser.add_argument('--body_cue', type=float, default=0.75, help='with --study: the level')
  parser.add_argument('--seed', type=int, default=200, help="with --study: the trainings' seed")
  parser.add_argument('--images', default='0,1,2,3,4,5', help="indices in --split's images")
  parser.add_argument('--split', default='validation', choices=sorted(synthetic.SPLITS),
                      help="the parts data set's split the images come from (its seed is the "
                           "first run's)")
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  if args.study:
    methods = [m for m in args.methods.split(',') if m]
    runs = study_runs(args.study, args.choices, methods, args.body_cue, args.seed)
  else:
    runs = []
    for name, spec in (item.split('=', 1) for item in args.runs.split(',') if item):
      workdir, _, mode = spec.partition('@')
      runs.append((name, workdir, mode or None, None))
  if not runs:
    parser.error('pass --runs, or --study with --choices and --methods')
  indices = [int(i) for i in args.images.split(',') if i.strip()]
  first = checkpoints.restore(runs[0][1])[0].data.parts
  examples = [synthetic.render(first.seed, args.split, i, **synthetic.options(first))
              for i in indices]
  images = np.stack([e['image'] for e in examples]).astype(np.float32) / np.float32(255.0)
  columns = []
  for name, workdir, transform, model in runs:
    heat, maps = class_maps(workdir, transform, images, model or None)
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
