r"""Prepares PASCAL VOC for TFDS from the original tars, offline, with progress bars.

Command:
  python -m excam_jax.data.prepare --dataset=voc/2007 --manual_dir=DIR [--data_dir=TFDS_DIR]

DIR must hold VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar (voc/2007), or
VOCtrainval_11-May-2012.tar and VOC2012test.tar (voc/2012). The built-in 'parts' data set needs
no preparation: it is generated in memory when a run starts.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TensorFlow loads: no C++ banners.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import ml_collections
import tensorflow_datasets as tfds

from excam_jax.data import voc
from excam_jax.errors import UserError, exit_with

_DATASET = flags.DEFINE_string('dataset', 'voc/2012', "'voc/2007', 'voc/2012' or 'parts'.")
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', '', 'Folder holding the VOC tars; default <data_dir>/downloads/manual.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data dir; default ~/tensorflow_datasets.')


def prepare(dataset, data_dir='', manual_dir=''):
  """Prepares `dataset` into the TFDS data dir and prints where it went and the split sizes.

  Raises:
    UserError: for an unknown data set, missing tars or tars that are not the genuine ones.
  """
  if dataset == 'parts':
    print('parts is generated in memory when a run starts: nothing to prepare.')
    return
  if dataset not in voc.TARS:
    raise UserError(f"--dataset must be 'voc/2007', 'voc/2012' or 'parts', not {dataset!r}.")
  config = ml_collections.ConfigDict(
      {'dataset': dataset, 'data_dir': data_dir, 'manual_dir': manual_dir})
  builder = tfds.builder(dataset, data_dir=data_dir or None)
  if voc.is_prepared(builder):
    print(f'{dataset} is already prepared in {builder.data_dir}.')
  else:
    directory = voc.manual_dir(config)
    voc.check_tars(builder, directory)
    print(f'Preparing {dataset} from the tars in {directory} (extraction takes minutes).')
    tfds.enable_progress_bar()
    voc.prepare(builder, directory)
    print(f'{dataset} is prepared in {builder.data_dir}.')
  for name, split in builder.info.splits.items():
    print(f'  {name}: {split.num_examples} images')


def main(argv):
  if len(argv) > 1:
    exit_with(UserError(f'Unexpected arguments {argv[1:]}: use --dataset and --manual_dir.'))
  logging.set_verbosity(logging.ERROR)  # TFDS warnings would bury the one-line error.
  try:
    prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)
  except UserError as error:
    exit_with(error)


if __name__ == '__main__':
  app.run(main)
