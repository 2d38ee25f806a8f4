r"""Input pipeline throughput: VOC-style decode + preprocess, and the synthetic parts data set.

Command (2 cores):
  python experiments/bench_input.py --threads=2

Prints three figures:
  1. decode + resize + flip + normalise of 500 x 375 JPEGs to 224 x 224 (the VOC training path,
     same preprocessing functions), in images/s with `--threads` tf.data threads;
  2. the time to generate the splits of configs/synthetic.py (4,000 train + 400 eval images);
  3. the training pipeline of configs/synthetic.py in images/s.
"""

import io
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
from PIL import Image
import tensorflow as tf

from configs import synthetic as synthetic_config
from excam_jax.data import pipeline
from excam_jax.data import preprocess
from excam_jax.data import synthetic

_THREADS = flags.DEFINE_integer('threads', 2, 'tf.data threads.')
_NUM_JPEGS = flags.DEFINE_integer('num_jpegs', 200, 'Distinct JPEGs generated (then repeated).')
_IMAGES = flags.DEFINE_integer('images', 3000, 'Images timed per measurement.')
_SIZE = flags.DEFINE_integer('size', 224, 'Output side S.')
_SKIP_PARTS = flags.DEFINE_bool('skip_parts', False, 'Only measure the JPEG path.')


def _voc_like_jpegs(count, seed=0):
  """JPEGs of 500 x 375 with smooth colour fields, edges and noise (about VOC's file sizes)."""
  rng = np.random.default_rng(seed)
  ys, xs = np.mgrid[0:375, 0:500] / 100.0
  out = []
  for _ in range(count):
    phase = rng.uniform(0, 6, (3, 2))
    image = np.stack([np.sin(ys * p[0] + xs * p[1]) for p in phase], -1) * 80 + 128
    y0, x0 = rng.integers(0, 250), rng.integers(0, 350)
    image[y0:y0 + 120, x0:x0 + 150] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, 'JPEG', quality=90)
    out.append(buffer.getvalue())
  return out


def _options(threads):
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  return options


def _rate(iterator, images, batch_size):
  """Images per second over `images` images after two warm-up batches."""
  for _ in range(2):
    next(iterator)
  start = time.perf_counter()
  for _ in range(images // batch_size):
    next(iterator)
  return (images // batch_size) * batch_size / (time.perf_counter() - start)


def bench_jpeg(threads, num_jpegs, images, size, batch_size=32):
  jpegs = _voc_like_jpegs(num_jpegs)
  print(f'{num_jpegs} JPEGs of 500x375, mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB')
  raw = tf.data.Dataset.from_tensor_slices({
      'image': jpegs, 'boxes': tf.zeros((num_jpegs, 1, 4)),
      'box_labels': tf.zeros((num_jpegs, 1), tf.int32),
      'box_difficult': tf.zeros((num_jpegs, 1), tf.bool), 'image_id': tf.range(num_jpegs)})

  def prepare(position, example):
    return preprocess.prepare_example(example, size=size, num_classes=20, max_boxes=64,
                                      encoded=True, flip_seed=tf.stack([0, position]))

  ds = raw.repeat().enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).prefetch(2).with_options(_options(threads))
  return _rate(ds.as_numpy_iterator(), images, batch_size)


def bench_parts(images):
  config = synthetic_config.get_config()
  p = config.data.parts
  start = time.perf_counter()
  synthetic.generate(p.seed, 'train', p.num_train, p.preset, p.num_classes, p.image_size)
  synthetic.generate(p.seed, 'validation', p.num_eval, p.preset, p.num_classes, p.image_size)
  generation = time.perf_counter() - start
  rate = _rate(pipeline.train_batches(config), images, config.train.batch_size)
  return generation, p.num_train + p.num_eval, rate, config


def main(argv):
  del argv
  rate = bench_jpeg(_THREADS.value, _NUM_JPEGS.value, _IMAGES.value, _SIZE.value)
  print(f'VOC-style decode + preprocess to {_SIZE.value}px, {_THREADS.value} threads: '
        f'{rate:.0f} images/s')
  if not _SKIP_PARTS.value:
    generation, count, rate, config = bench_parts(_IMAGES.value)
    print(f'parts generation: {count} images of {config.data.parts.image_size} px in '
          f'{generation:.1f} s ({1000 * generation / count:.1f} ms/image, one core)')
    print(f'parts training pipeline (configs/synthetic.py, batch {config.train.batch_size}, '
          f'{config.data.image_size} px): {rate:.0f} images/s')


if __name__ == '__main__':
  app.run(main)
