"""Batches of the TFDS data sets through tf.data: VOC (data/voc.py) and CUB-200-2011
(data/cub_tfds.py). See excam_jax.data.pipeline for the order's rules.

Loaded only for these data sets: it imports TensorFlow. The raw stream keeps images encoded, so
shuffling, skipping and splitting over processes never decode an image that is not used.

A TFDS spec module gives:
  STREAM                    preprocess.prepare_example's options for its examples (num_classes,
                            max_boxes, encoded and the box conventions);
  raw_split(config, split)  (raw examples in a fixed order, as excam_jax.data.preprocess takes
                            them, image_id their index; their count) of a config split name; a
                            split that is not there or data that is not prepared: UserError.
A raw stream with a segmentation_mask field gets object_mask in its evaluation batches (padding
rows all 0) and class_id passes through (padding rows -1). `Batches(spec)` is the interface
data/sources.py asks of a data set (train_batches, eval_batches) plus split_sizes.
"""

import math
import os
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from excam_jax.data import preprocess
from excam_jax.errors import UserError



def ordered_stream(builder, split, to_raw, encoded=('image',)):
  """(raw examples, count) of a TFDS split in a fixed order, the `encoded` features left
  undecoded, mapped by to_raw(index, example): the stream every TFDS spec module gives."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={k: tfds.decode.SkipDecoding() for k in encoded})
  num = int(ds.cardinality())
  if num < 0:  # Unknown cardinality: count records, which reads but never decodes images.
    num = int(ds.reduce(0, lambda n, _: n + 1))
  return ds.enumerate().map(to_raw), num

class _Source(NamedTuple):
  raw: tf.data.Dataset  # Raw examples in a fixed order (see excam_jax.data.preprocess).
  num_examples: int
  options: dict  # preprocess.prepare_example's options (the spec's STREAM).


def _source(spec, config, split):
  """The raw example stream of one split of config.data.dataset."""
  raw, num = spec.raw_split(config, split)
  return _Source(raw, num, dict(spec.STREAM))


def split_sizes(spec, config):
  """(train, eval) example counts of a config (prepares VOC from local tars if needed)."""
  return tuple(spec.raw_split(config, s)[1]
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


def train_batches(spec, config, local, *, start_step, process_index):
  """Infinite iterator of this process's training batches (`local` examples each)."""
  global_batch = config.train.batch_size
  source = _source(spec, config, config.data.train_split)
  start = start_step * global_batch
  first_epoch, offset = divmod(start, source.num_examples)
  buffer = max(1, min(config.data.shuffle_buffer, source.num_examples))

  def epoch(e):
    return source.raw.shuffle(buffer, seed=_epoch_seed(config.train.seed, e),
                              reshuffle_each_iteration=False)

  def prepare(position, example):
    return preprocess.prepare_example(
        example, size=config.data.image_size,
        flip_seed=tf.stack([tf.cast(config.train.seed, tf.int64), position]), **source.options)

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  ds = ds.skip(offset).enumerate(start)
  ds = ds.filter(lambda p, _: (p % global_batch) // local == process_index)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(2)
  return _numpy_batches(ds, f'{config.data.dataset} {config.data.train_split}')


def _padding_example(element_spec):
  """A mask-0 example matching element_spec: zeros (object_mask too), with box_labels, image_id
  and class_id -1."""
  pad = {k: tf.zeros(s.shape, s.dtype) for k, s in element_spec.items()}
  for key in ('box_labels', 'image_id', 'class_id'):
    if key in pad:
      pad[key] = -tf.ones_like(pad[key])
  return pad


def eval_batches(spec, config, split, local, *, process_index):
  """Every example of `split` once, padded with mask-0 examples to whole global batches."""
  global_batch = config.eval.batch_size
  source = _source(spec, config, split)
  total = math.ceil(source.num_examples / global_batch) * global_batch

  def mine(p):
    return (p % global_batch) // local == process_index

  masks = 'segmentation_mask' in source.raw.element_spec

  def prepare(_, example):
    return preprocess.prepare_example(example, size=config.data.image_size,
                                      object_masks=masks, **source.options)

  real = source.raw.enumerate().filter(lambda p, _: mine(p))
  real = real.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  pad = _padding_example(real.element_spec)
  padding = tf.data.Dataset.range(source.num_examples, total).filter(mine).map(lambda _: pad)
  ds = real.concatenate(padding).batch(local).prefetch(2)
  return _numpy_batches(ds, f'{config.data.dataset} {split}')


class Batches(NamedTuple):
  """The batches of one TFDS spec module: what data/sources.py asks of a data set."""
  spec: Any

  def train_batches(self, config, local, *, start_step, process_index):
    return train_batches(self.spec, config, local, start_step=start_step,
                         process_index=process_index)

  def eval_batches(self, config, split, local, *, process_index):
    return eval_batches(self.spec, config, split, local, process_index=process_index)

  def split_sizes(self, config):
    return split_sizes(self.spec, config)
