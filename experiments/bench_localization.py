r"""Times the localization evaluation on precomputed class maps (VOC 2012 val scale).

Command:
  JAX_PLATFORMS=cpu python experiments/bench_localization.py [--images=5823] [--map=14]

Synthesises 5,823 images of VOC-like sizes with 1-3 ground-truth classes (1-2 boxes each) and
20 class maps of 14 x 14 (Gaussian blobs on the boxes plus noise), then times
`excam_jax.evaluation.evaluator.score` with every metric: boxes, detection AP (07 and all-point),
pointwise AP, CorLoc, MaxBoxAcc/V2 and expansion. Prints the wall time and the metrics.
--protocol picks the scoring: 'grid' (the in-training working grids, 128 for boxes and 32 for the
sweep), 'exact' (each image's original size, the default of the evaluate command) or
'wsolevaluation'. --compare_exact=N also scores the first N images at the original size and on
the grids, to show what the grids change.
"""

import argparse
import os
import resource
import time

import numpy as np

from excam_jax.evaluation import evaluator

PROTOCOLS = {'grid': evaluator.Protocol(box_grid=128, sweep_grid=32),
             'exact': evaluator.Protocol(),
             'wsolevaluation': evaluator.Protocol(maxboxacc='wsolevaluation')}

SIZES = np.array([[375, 500], [500, 375], [333, 500], [500, 333], [281, 500], [480, 640]])


def synthesize(num_images, map_size, num_classes=20, max_boxes=6, seed=0):
  """Returns per-image arrays: logits, class maps and the ground-truth fields of a batch."""
  rng = np.random.default_rng(seed)
  sizes = SIZES[rng.integers(0, len(SIZES), num_images)]
  boxes = np.zeros((num_images, max_boxes, 4), np.float32)
  labels = np.full((num_images, max_boxes), -1, np.int32)
  difficult = rng.random((num_images, max_boxes)) < 0.1
  maps = rng.normal(-3.0, 0.5, (num_images, map_size, map_size, num_classes)).astype(np.float32)
  grid = (np.arange(map_size) + 0.5) / map_size
  for i in range(num_images):
    classes = rng.choice(num_classes, rng.integers(1, 4), replace=False)
    slot = 0
    for c in classes:
      for _ in range(rng.integers(1, 3)):
        lo = rng.uniform(0, 0.6, 2)
        hi = np.minimum(lo + rng.uniform(0.15, 0.6, 2), 1.0)
        boxes[i, slot] = [lo[0], lo[1], hi[0], hi[1]]
        labels[i, slot] = c
        centre, half = (lo + hi) / 2, (hi - lo) / 2
        blob = np.exp(-((grid[:, None] - centre[0]) ** 2 / (2 * half[0] ** 2)
                        + (grid[None, :] - centre[1]) ** 2 / (2 * half[1] ** 2)))
        maps[i, :, :, c] += 5.0 * blob
        slot += 1
  label = np.zeros((num_images, num_classes), np.float32)
  for i in range(num_images):
    label[i, labels[i][labels[i] >= 0]] = 1
  logits = maps.max(axis=(1, 2)) + rng.normal(0, 0.5, (num_images, num_classes))
  return dict(logits=logits.astype(np.float32), maps=maps, boxes=boxes, box_labels=labels,
              box_difficult=difficult & (labels >= 0), orig_size=sizes.astype(np.int32),
              label=label, ignore=np.zeros_like(label, bool))


def _cpu_seconds():
  """User + system CPU time of this process and of its finished child processes."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def batches(data, batch_size):
  """Yields eval batches whose 'image' field holds the example indices."""
  num = len(data['logits'])
  for start in range(0, num, batch_size):
    index = np.arange(start, min(start + batch_size, num))
    batch = {k: data[k][index] for k in ('boxes', 'box_labels', 'box_difficult', 'orig_size',
                                         'label', 'ignore')}
    batch.update(image=index, image_id=index.astype(np.int32), mask=np.ones(len(index), np.float32))
    yield batch


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', type=int, default=5823)
  parser.add_argument('--map', type=int, default=14)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--protocol', choices=sorted(PROTOCOLS), default='grid')
  parser.add_argument('--compare_exact', type=int, default=0,
                      help='Also score the first N images at original size (slow) and on the '
                           'default working grids, and print both.')
  args = parser.parse_args()
  data = synthesize(args.images, args.map)
  predict = lambda index: (data['logits'][index], data['maps'][index])
  names = [f'class{c}' for c in range(20)]
  start, cpu_start = time.perf_counter(), _cpu_seconds()
  result = evaluator.score(predict, batches(data, args.batch), names, PROTOCOLS[args.protocol],
                           workers=args.workers)
  seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
  pairs = int((data['label'] > 0).sum())
  print(f'localization evaluation: {args.images} images x 20 classes, {args.map}x{args.map} maps, '
        f'{pairs} (image, class) samples, protocol {args.protocol}, workers={args.workers}: {seconds:.1f} s wall, '
        f'{cpu:.1f} s CPU (this process and its workers), load average '
        f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
  for key, value in result.items():
    if key != 'per_class':
      print(f'  {key}: {value}')
  if args.compare_exact:
    subset = {k: v[:args.compare_exact] for k, v in data.items()}
    grid = evaluator.score(predict, batches(subset, args.batch), names, PROTOCOLS['grid'],
                           workers=args.workers)
    start = time.perf_counter()
    exact = evaluator.score(predict, batches(subset, args.batch), names, PROTOCOLS['exact'],
                            workers=args.workers)
    seconds = time.perf_counter() - start
    print(f'first {args.compare_exact} images, working grids vs original size '
          f'(original size took {seconds:.1f} s):')
    for key in ('localization_ap', 'localization_ap_07', 'pointwise_ap', 'corloc', 'expansion',
                'maxboxacc', 'maxboxaccv2'):
      print(f'  {key}: grid {grid[key]:.4f}  original size {exact[key]:.4f}')


if __name__ == '__main__':
  main()
