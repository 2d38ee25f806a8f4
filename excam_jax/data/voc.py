"""PASCAL VOC through TFDS: offline preparation from the genuine tars, and raw example streams.

The TFDS builder `voc/2007` or `voc/2012` prepares the data from the tars placed in the manual dir
(no network). Raw examples keep the image encoded, so that shuffling, skipping and splitting over
processes never decode an image that is not used. A TFDS spec module of data/tfds_pipeline.py
(STREAM, raw_split).
"""

import os

import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from excam_jax.data import voc_info
from excam_jax.errors import UserError

CLASS_NAMES, TARS, SPLITS, MAX_BOXES = (voc_info.CLASS_NAMES, voc_info.TARS, voc_info.SPLITS,
                                       voc_info.MAX_BOXES)
# preprocess.prepare_example's options for these streams (data/tfds_pipeline.py).
STREAM = {'num_classes': len(CLASS_NAMES), 'max_boxes': MAX_BOXES, 'encoded': True,
          'one_based_boxes': True}


def data_dir(config):
  """The TFDS data dir of the config ('' means the TFDS default, ~/tensorflow_datasets)."""
  return os.path.expanduser(config.data.data_dir) if config.data.data_dir else tfds.core.constants.DATA_DIR


def manual_dir(config):
  """Where the VOC tars must lie: config.data.manual_dir, else <data_dir>/downloads/manual."""
  if config.data.manual_dir:
    return os.path.expanduser(config.data.manual_dir)
  return os.path.join(data_dir(config), 'downloads', 'manual')


def tfds_split(name, split):
  """Maps a config split name ('trainval', 'test', ...) to the TFDS split of `name`."""
  if split not in SPLITS[name]:
    raise UserError(f'{name} has splits {sorted(SPLITS[name])}; set config.data.train_split / '
                    f'config.data.eval_split to one of them, not {split!r}.')
  return SPLITS[name][split]


def is_prepared(builder):
  """Whether the TFDS builder's prepared files exist (a seam for tests on mocked data)."""
  return builder.is_prepared()


def missing_tars(name, directory):
  """The tar names of `name` that are absent from `directory`."""
  return [t for t in TARS[name] if not os.path.isfile(os.path.join(directory, t))]


def missing_data_message(name, directory):
  """One sentence naming the exact tars to put in `directory` and the command to run."""
  tars = ' and '.join(TARS[name])
  return (f'{name} is not prepared: put {tars} (the original PASCAL VOC tars) in {directory}, '
          f'then run python -m excam_jax.data.prepare --dataset={name} --manual_dir={directory}.')


def check_tar_sizes(builder, name, directory):
  """Raises UserError naming a tar whose size differs from the genuine one (a quick checksum)."""
  sizes = {info.filename: int(info.size) for info in builder.url_infos.values()}
  for tar in TARS[name]:
    path = os.path.join(directory, tar)
    if os.path.getsize(path) != sizes[tar]:
      raise UserError(f'{path} is not the genuine {tar} ({os.path.getsize(path)} bytes, '
                      f'expected {sizes[tar]}): download it again.')


def check_tars(builder, directory):
  """Raises UserError when a tar of the builder's data set is missing or has the wrong size."""
  name = f'{builder.name}/{builder.builder_config.name}'
  if missing_tars(name, directory):
    raise UserError(missing_data_message(name, directory))
  check_tar_sizes(builder, name, directory)


def prepare(builder, directory):
  """Prepares the TFDS data from the tars in `directory`, offline, with TFDS progress bars.

  Raises:
    UserError: when a tar is missing, has the wrong size or the wrong checksum.
  """
  name = f'{builder.name}/{builder.builder_config.name}'
  check_tars(builder, directory)
  download_config = tfds.download.DownloadConfig(manual_dir=directory)
  try:
    builder.download_and_prepare(download_config=download_config)
  except NonMatchingChecksumError as error:
    bad = [t for t in TARS[name] if t in str(error)] or list(TARS[name])
    raise UserError(f'{os.path.join(directory, bad[0])} does not have the checksum of the genuine '
                    f'{bad[0]}: download it again.') from error


def load_builder(config):
  """The prepared TFDS builder of config.data.dataset; prepares it from local tars when needed.

  Raises:
    UserError: naming the tars and where to put them when the data is neither prepared nor
      available as tars.
  """
  builder = tfds.builder(config.data.dataset, data_dir=config.data.data_dir or None)
  if not is_prepared(builder):
    prepare(builder, manual_dir(config))
  return builder


def _to_raw(index, example):
  """Keeps what the pipeline needs, in the raw format of `excam_jax.data.preprocess`."""
  objects = example['objects']
  return {
      'image': example['image'],
      'boxes': tf.cast(objects['bbox'], tf.float32),
      'box_labels': tf.cast(objects['label'], tf.int32),
      'box_difficult': tf.cast(objects['is_difficult'], tf.bool),
      'image_id': tf.cast(index, tf.int32),
  }


def raw_dataset(builder, split):
  """Examples of a TFDS split in a fixed order, image still encoded, with their index as image_id.

  Returns:
    (dataset, num_examples).
  """
  from excam_jax.data import tfds_pipeline  # pylint: disable=g-import-not-at-top
  return tfds_pipeline.ordered_stream(builder, split, _to_raw)


def raw_split(config, split):
  """(raw examples, count) of the config split `split` of config.data.dataset (prepares VOC from
  local tars when needed)."""
  split = tfds_split(config.data.dataset, split)
  return raw_dataset(load_builder(config), split)
