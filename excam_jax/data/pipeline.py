"""Training and evaluation batches from config.dataset ('voc/2007', 'voc/2012' or 'parts').

Both sources give a raw example stream in a fixed order (image_id = index in the split); all the
randomness is keyed by the seed and by positions in that stream, which makes the batches
deterministic, exactly resumable and independent of how many processes share them:

  train: epoch e is the raw stream shuffled with a seed derived from (config.seed, e); the epochs
         are concatenated and position p of the result is example p % B of global step p // B.
         Process i of P keeps positions with (p % B) // (B / P) == i; the flip of position p is
         drawn statelessly from (config.seed, p). Resuming at step t skips t * B raw records,
         whole epochs arithmetically, and never decodes a skipped image.
  eval:  the raw stream in order, padded with mask-0 examples to a multiple of the global eval
         batch E; process i keeps the same slice of every global batch.
"""

import math
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from excam_jax.data import preprocess
from excam_jax.data import synthetic
from excam_jax.data import voc
from excam_jax.errors import UserError


def _configure_tensorflow():
  """Keeps TensorFlow off the accelerators (JAX owns them) and its thread pools small."""
  try:
    tf.config.set_visible_devices([], 'GPU')
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(1)
  except RuntimeError:  # TensorFlow was already initialised by the caller: keep its settings.
    pass


_configure_tensorflow()


class DatasetInfo(NamedTuple):
  """What the model and the metrics need to know about a data set."""
  name: str
  num_classes: int
  class_names: tuple
  num_train: int
  num_eval: int


class _Source(NamedTuple):
  raw: tf.data.Dataset  # Raw examples in a fixed order (see excam_jax.data.preprocess).
  num_examples: int
  num_classes: int
  encoded: bool  # Whether raw images are encoded bytes.
  max_boxes: int
  one_based_boxes: bool = False  # TFDS VOC: ymin/xmin are 1-based pixel indices over H / W.


def _parts_args(config):
  p = config.parts
  synthetic.validate(p.preset, p.num_classes, p.image_size)
  return p


def _source(config, split):
  """The raw example stream of one split of config.dataset."""
  if config.dataset == 'parts':
    p = _parts_args(config)
    if split not in synthetic.SPLITS:
      raise UserError(f'The parts data set has splits {sorted(synthetic.SPLITS)}; set '
                      f'config.train_split / config.eval_split to one of them, not {split!r}.')
    num = p.num_train if split == 'train' else p.num_eval
    arrays = synthetic.generate(p.seed, split, num, p.preset, p.num_classes, p.image_size)
    raw = tf.data.Dataset.from_tensor_slices(arrays)
    return _Source(raw, num, p.num_classes, False, synthetic.MAX_OBJECTS)
  if config.dataset in voc.TARS:
    split = voc.tfds_split(config.dataset, split)
    raw, num = voc.raw_dataset(voc.load_builder(config), split)
    return _Source(raw, num, len(voc.CLASS_NAMES), True, voc.MAX_BOXES, one_based_boxes=True)
  raise UserError(f"config.dataset must be 'voc/2007', 'voc/2012' or 'parts', "
                  f'not {config.dataset!r}.')


def dataset_info(config):
  """Name, classes and split sizes of config.dataset (prepares VOC from local tars if needed)."""
  if config.dataset == 'parts':
    p = _parts_args(config)
    return DatasetInfo('parts', p.num_classes, synthetic.class_names(p.num_classes),
                       p.num_train, p.num_eval)
  if config.dataset not in voc.TARS:
    raise UserError(f"config.dataset must be 'voc/2007', 'voc/2012' or 'parts', "
                    f'not {config.dataset!r}.')
  builder = voc.load_builder(config)
  sizes = [voc.raw_dataset(builder, voc.tfds_split(config.dataset, s))[1]
           for s in (config.train_split, config.eval_split)]
  return DatasetInfo(config.dataset, len(voc.CLASS_NAMES), voc.CLASS_NAMES, *sizes)


def _local_batch_size(global_size, field, process_index, process_count):
  if global_size < 1 or global_size % process_count:
    raise UserError(f'config.{field} ({global_size}) must be a positive multiple of the number '
                    f'of processes ({process_count}).')
  if not 0 <= process_index < process_count:
    raise UserError(f'The process index {process_index} must lie in [0, {process_count}).')
  return global_size // process_count


def _options():
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = max(1, len(os.sched_getaffinity(0)))
  options.threading.max_intra_op_parallelism = 1  # Parallelism comes from map, not within ops.
  return options


def _numpy_batches(ds, description):
  """Iterates a tf.data pipeline as numpy dicts; a corrupt image becomes a UserError."""
  iterator = ds.with_options(_options()).as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.InvalidArgumentError as error:
      first_line = str(error).strip().splitlines()[0]
      raise UserError(f'Reading {description} failed ({first_line}); prepare the data again, '
                      'e.g. by deleting its TFDS folder and rerunning excam_jax.data.prepare.'
                      ) from error
    yield batch


def _epoch_seed(seed, epoch):
  """A distinct int64 shuffle seed per (seed, epoch)."""
  return tf.cast(seed, tf.int64) * 1_000_003 + epoch


def train_batches(config, *, start_step=0, process_index=0, process_count=1):
  """Infinite iterator of this process's training batches (numpy dicts, batch format of the package).

  Args:
    config: the experiment config (dataset, train_split, image_size, batch_size, shuffle_buffer,
      seed, and data_dir/manual_dir or parts).
    start_step: the first step to yield; batches equal those of a fresh iterator from that step.
    process_index: this process's index.
    process_count: number of processes; each gets config.batch_size // process_count examples.

  Yields:
    Dicts with image, label, ignore, boxes, box_labels, box_difficult, orig_size, image_id, mask.
  """
  global_batch = config.batch_size
  local = _local_batch_size(global_batch, 'batch_size', process_index, process_count)
  if start_step < 0:
    raise UserError(f'start_step must be non-negative, not {start_step}.')
  source = _source(config, config.train_split)
  start = start_step * global_batch
  first_epoch, offset = divmod(start, source.num_examples)
  buffer = max(1, min(config.shuffle_buffer, source.num_examples))

  def epoch(e):
    return source.raw.shuffle(buffer, seed=_epoch_seed(config.seed, e),
                              reshuffle_each_iteration=False)

  def prepare(position, example):
    return preprocess.prepare_example(
        example, size=config.image_size, num_classes=source.num_classes,
        max_boxes=source.max_boxes, encoded=source.encoded,
        one_based_boxes=source.one_based_boxes,
        flip_seed=tf.stack([tf.cast(config.seed, tf.int64), position]))

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  ds = ds.skip(offset).enumerate(start)
  ds = ds.filter(lambda p, _: (p % global_batch) // local == process_index)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(2)
  return _numpy_batches(ds, f'{config.dataset} {config.train_split}')


def _padding_example(element_spec):
  """A mask-0 example matching element_spec: zeros, with box_labels and image_id -1."""
  pad = {k: tf.zeros(s.shape, s.dtype) for k, s in element_spec.items()}
  pad['box_labels'] = -tf.ones_like(pad['box_labels'])
  pad['image_id'] = -tf.ones_like(pad['image_id'])
  return pad


def eval_batches(config, split=None, *, process_index=0, process_count=1):
  """Finite iterator over an evaluation split: every example once, the last batch padded.

  Args:
    config: the experiment config.
    split: split name; config.eval_split when None.
    process_index: this process's index.
    process_count: number of processes; each gets its slice of every global batch of
      config.eval_batch_size examples.

  Yields:
    ceil(N / eval_batch_size) batches per process, as in the package docstring; padded examples
    have mask 0, box_labels -1 and image_id -1.
  """
  split = config.eval_split if split is None else split
  global_batch = config.eval_batch_size
  local = _local_batch_size(global_batch, 'eval_batch_size', process_index, process_count)
  source = _source(config, split)
  total = math.ceil(source.num_examples / global_batch) * global_batch

  def mine(p):
    return (p % global_batch) // local == process_index

  def prepare(_, example):
    return preprocess.prepare_example(
        example, size=config.image_size, num_classes=source.num_classes,
        max_boxes=source.max_boxes, encoded=source.encoded,
        one_based_boxes=source.one_based_boxes)

  real = source.raw.enumerate().filter(lambda p, _: mine(p))
  real = real.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  pad = _padding_example(real.element_spec)
  padding = tf.data.Dataset.range(source.num_examples, total).filter(mine).map(lambda _: pad)
  ds = real.concatenate(padding).batch(local).prefetch(2)
  return _numpy_batches(ds, f'{config.dataset} {split}')
