"""VOC batches through tf.data (see excam_jax.data.pipeline for the order's rules).

Loaded only for a VOC run: it imports TensorFlow. The raw stream keeps images encoded, so
shuffling, skipping and splitting over processes never decode an image that is not used.
"""

import math
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from excam_jax.data import preprocess
from excam_jax.data import voc
from excam_jax.errors import UserError




class _Source(NamedTuple):
  raw: tf.data.Dataset  # Raw examples in a fixed order (see excam_jax.data.preprocess).
  num_examples: int
  num_classes: int
  encoded: bool  # Whether raw images are encoded bytes.
  max_boxes: int
  one_based_boxes: bool = False  # TFDS VOC: ymin/xmin are 1-based pixel indices over H / W.


def _source(config, split):
  """The raw example stream of one split of config.data.dataset."""
  if config.data.dataset in voc.TARS:
    split = voc.tfds_split(config.data.dataset, split)
    raw, num = voc.raw_dataset(voc.load_builder(config), split)
    return _Source(raw, num, len(voc.CLASS_NAMES), True, voc.MAX_BOXES, one_based_boxes=True)
  raise UserError(f"config.data.dataset must be 'voc/2007', 'voc/2012' or 'parts', "
                  f'not {config.data.dataset!r}.')


def split_sizes(config):
  """(train, eval) example counts of a VOC config (prepares VOC from local tars if needed)."""
  builder = voc.load_builder(config)
  return tuple(voc.raw_dataset(builder, voc.tfds_split(config.data.dataset, s))[1]
               for s in (config.data.train_split, config.data.eval_split))


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


def train_batches(config, local, *, start_step, process_index):
  """Infinite iterator of this process's training batches (`local` examples each)."""
  global_batch = config.train.batch_size
  source = _source(config, config.data.train_split)
  start = start_step * global_batch
  first_epoch, offset = divmod(start, source.num_examples)
  buffer = max(1, min(config.data.shuffle_buffer, source.num_examples))

  def epoch(e):
    return source.raw.shuffle(buffer, seed=_epoch_seed(config.train.seed, e),
                              reshuffle_each_iteration=False)

  def prepare(position, example):
    return preprocess.prepare_example(
        example, size=config.data.image_size, num_classes=source.num_classes,
        max_boxes=source.max_boxes, encoded=source.encoded,
        one_based_boxes=source.one_based_boxes,
        flip_seed=tf.stack([tf.cast(config.train.seed, tf.int64), position]))

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  ds = ds.skip(offset).enumerate(start)
  ds = ds.filter(lambda p, _: (p % global_batch) // local == process_index)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(2)
  return _numpy_batches(ds, f'{config.data.dataset} {config.data.train_split}')


def _padding_example(element_spec):
  """A mask-0 example matching element_spec: zeros, with box_labels and image_id -1."""
  pad = {k: tf.zeros(s.shape, s.dtype) for k, s in element_spec.items()}
  pad['box_labels'] = -tf.ones_like(pad['box_labels'])
  pad['image_id'] = -tf.ones_like(pad['image_id'])
  return pad


def eval_batches(config, split, local, *, process_index):
  """Every example of `split` once, padded with mask-0 examples to whole global batches."""
  global_batch = config.eval.batch_size
  source = _source(config, split)
  total = math.ceil(source.num_examples / global_batch) * global_batch

  def mine(p):
    return (p % global_batch) // local == process_index

  def prepare(_, example):
    return preprocess.prepare_example(
        example, size=config.data.image_size, num_classes=source.num_classes,
        max_boxes=source.max_boxes, encoded=source.encoded,
        one_based_boxes=source.one_based_boxes)

  real = source.raw.enumerate().filter(lambda p, _: mine(p))
  real = real.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  pad = _padding_example(real.element_spec)
  padding = tf.data.Dataset.range(source.num_examples, total).filter(mine).map(lambda _: pad)
  ds = real.concatenate(padding).batch(local).prefetch(2)
  return _numpy_batches(ds, f'{config.data.dataset} {split}')
