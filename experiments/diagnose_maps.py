r"""Where trained runs' class maps lie, and why their CorLoc boxes fail (parts data set).

One run (its own config's maps, the validation split by default):

  python experiments/diagnose_maps.py --workdir=runs/synthetic [--images=150]

A study's methods at their tuned settings, over several seeds' trainings (a markdown table; each
method's chosen setting and inference fields from the choices file, as compare_maps.py's):

  python experiments/diagnose_maps.py --study=runs/tuned --choices=runs/tuned/choices.json \
      --methods=acol,excam --body_cue=0.75 --seeds=200,201 --split=test [--images=150]

For each image's classes it reads the mean z of the class map (on the method's own scale: the
logits, or the normalised map of ACoL and of the relative rule, boxed at z > 0 as the evaluator
boxes them) on the class's part, the rest of its body, the background within 10 px of any object
and the farther background (and, for the absent classes, on objects and background). Then it sorts
the CorLoc samples (the largest z > 0 component's box against the class's boxes) into hits
(IoU >= 0.5), too large (area > 1.5x the largest box of the class), too small (< 0.67x),
misplaced (neither), and no box. Every sample counts, difficult objects included.
"""

import argparse
import os
import sys

import numpy as np
from scipy import ndimage

from excam_jax.data import synthetic
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import metrics
from excam_jax.training import checkpoints
from experiments import compare_maps

KINDS = ('hit', 'too_large', 'too_small', 'misplaced', 'no_box')
REGIONS = ('part', 'body', 'near', 'far', 'absent_on_objects', 'absent_background')
NEAR_PX = 10  # The background band around the objects, in pixels.


def sample_kind(found, truth):
  """The kind (one of KINDS) of a CorLoc sample: `found` the map's boxes (K, 4), largest first;
  `truth` the class's ground-truth boxes (T, 4); inclusive pixel boxes (x1, y1, x2, y2)."""
  if len(found) == 0:
    return 'no_box'
  if metrics.box_iou(found[:1], truth).max() >= 0.5:
    return 'hit'
  ratio = metrics.box_area(found[:1])[0] / metrics.box_area(truth).max()
  return 'too_large' if ratio > 1.5 else 'too_small' if ratio < 0.67 else 'misplaced'


def diagnose(examples, maps, num_classes):
  """({region: [mean z per sample]}, {kind: count}) of rendered examples and their class maps.

  `examples`: synthetic.render dicts; `maps`: per example (h, w, C) class maps.
  """
  z = {k: [] for k in REGIONS}
  kinds = dict.fromkeys(KINDS, 0)
  for ex, class_maps in zip(examples, maps):
    height, width = ex['image'].shape[:2]
    up = boxlib.upsample(np.moveaxis(np.asarray(class_maps), -1, 0), height, width)
    occupied = ex['body_masks'].any(0) | ex['part_masks'].any(0)
    near = ndimage.binary_dilation(occupied, iterations=NEAR_PX) & ~occupied
    truth = boxlib.normalized_to_pixels(ex['boxes'], height, width)
    for c in np.unique(ex['labels']):
      mine = ex['labels'] == c
      part = ex['part_masks'][mine].any(0)
      body = ex['body_masks'][mine].any(0) & ~part
      for key, where in (('part', part), ('body', body), ('near', near),
                         ('far', ~occupied & ~near)):
        z[key].append(up[c][where].mean() if where.any() else np.nan)
      found = boxlib.map_to_boxes(np.asarray(class_maps)[..., c], height, width)
      kinds[sample_kind(found, truth[mine])] += 1
    for c in sorted(set(range(num_classes)) - set(ex['labels'].tolist())):
      z['absent_on_objects'].append(up[c][occupied].mean() if occupied.any() else np.nan)
      z['absent_background'].append(up[c][~occupied].mean())
  return z, kinds


def _examples(workdir, split, count):
  """The first `count` examples of `split` of the data set a run trained on, and their images."""
  p = checkpoints.restore(workdir)[0].data.parts
  examples = [synthetic.render(p.seed, split, i, **synthetic.options(p)) for i in range(count)]
  images = np.stack([e['image'] for e in examples]).astype(np.float32) / np.float32(255.0)
  return examples, images, p.num_classes


def run_diagnosis(workdir, split, count, transform=None, model=None):
  """diagnose() of one run's maps (under an optional map transform) on `count` images."""
  examples, images, num_classes = _examples(workdir, split, count)
  _, maps = compare_maps.class_maps(workdir, transform, images, model or None)
  return diagnose(examples, maps, num_classes)


def table(results):
  """Markdown rows of {method: (seeds, z, kinds)}: mean z per region, each kind's fraction."""
  head = (['method', 'seeds', 'samples'] + [f'z {r}' for r in REGIONS[:4]] +
          [k.replace('_', ' ') for k in KINDS])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for method, (seeds, z, kinds) in results.items():
    total = sum(kinds.values())
    cells = [method, str(seeds), str(total)]
    cells += [f'{np.nanmean(z[r]):.2f}' if np.isfinite(z[r]).any() else '-' for r in REGIONS[:4]]
    cells += [f'{kinds[k] / total:.2f}' if total else '-' for k in KINDS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--workdir', default='', help='one run folder (its own maps)')
  parser.add_argument('--study', default='', help="a study's --workdir (instead of --workdir)")
  parser.add_argument('--choices', default='', help="with --study: the tuning's choices.json")
  parser.add_argument('--methods', default='', help='with --study: the methods')
  parser.add_argument('--body_cue', type=float, default=0.75, help='with --study: the level')
  parser.add_argument('--seeds', default='200', help="with --study: the trainings' seeds")
  parser.add_argument('--split', default='validation', choices=sorted(synthetic.SPLITS))
  parser.add_argument('--images', type=int, default=150, help='images of --split per run')
  args = parser.parse_args()
  if args.images < 1:
    parser.error('--images is at least 1')
  if args.study:
    methods = [m for m in args.methods.split(',') if m]
    try:
      seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    except ValueError:
      parser.error('--seeds is a comma list of integers, like --seeds=200,201')
    if not methods or not seeds or not args.choices:
      parser.error('--study needs --choices, --methods and --seeds')
    results = {}
    for seed in seeds:
      for method, run_dir, transform, model in compare_maps.study_runs(
          args.study, args.choices, methods, args.body_cue, seed):
        if not os.path.isdir(run_dir):
          sys.exit(f'{method} has no training at body_cue {args.body_cue} seed {seed} '
                   f'({run_dir}); run the study for it first')
        z, kinds = run_diagnosis(run_dir, args.split, args.images, transform, model)
        done, all_z, all_kinds = results.setdefault(
            method, (0, {r: [] for r in REGIONS}, dict.fromkeys(KINDS, 0)))
        for r in REGIONS:
          all_z[r].extend(z[r])
        results[method] = (done + 1, all_z, {k: all_kinds[k] + kinds[k] for k in KINDS})
    print(f'Body_cue {args.body_cue}, {args.split} split, seeds {args.seeds}, the first '
          f'{args.images} images of each; z on each method\'s own scale (boxed at z > 0); the '
          'kinds as fractions of the CorLoc samples.\n')
    print(table(results))
    return
  if not args.workdir:
    parser.error('pass --workdir, or --study with --choices, --methods and --seeds')
  z, kinds = run_diagnosis(args.workdir, args.split, args.images)
  print('mean z:', ', '.join(f'{k} {np.nanmean(v):.2f}' for k, v in z.items()))
  print('CorLoc samples:', ', '.join(f'{k} {v}' for k, v in kinds.items()))


if __name__ == '__main__':
  from excam_jax.runtime import xla  # pylint: disable=g-import-not-at-top
  xla.configure()  # What the package's commands do: the measured CPU flags, the cache.
  main()
