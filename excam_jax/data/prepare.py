r"""Prepares the TFDS data sets, with progress bars: PASCAL VOC from the original tars, offline;
CUB-200-2011 (caltech_birds2011) by TFDS's download.

Commands:
  python -m excam_jax.data.prepare --dataset=voc/2007 --manual_dir=DIR [--data_dir=TFDS_DIR]
  python -m excam_jax.data.prepare --dataset=caltech_birds2011 [--data_dir=TFDS_DIR]

DIR must hold VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar (voc/2007), or
VOCtrainval_11-May-2012.tar and VOC2012test.tar (voc/2012). caltech_birds2011 downloads about
1.2 GB from data.caltech.edu (data/cub_tfds.py). The built-in 'parts' data set needs no
preparation: it is generated in memory when a run starts.
"""

import os

from absl import flags
import ml_collections

from excam_jax.runtime import cli
from excam_jax.runtime import native
from excam_jax.data import cub_tfds
from excam_jax.data import voc_info
from excam_jax.errors import UserError

_CHOICES = f"'voc/2007', 'voc/2012', '{cub_tfds.NAME}' or 'parts'"
_DATASET = flags.DEFINE_string('dataset', 'voc/2012', _CHOICES + '.')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', '', 'Folder holding the VOC tars; default <data_dir>/downloads/manual.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data dir; default ~/tensorflow_datasets.')


def _check_paths(data_dir, manual_dir):
  """The data dir must be writable (or creatable) and the manual dir a folder, if given."""
  if manual_dir and not os.path.isdir(manual_dir):
    raise UserError(f'--manual_dir={manual_dir} is not a folder; pass the folder that holds '
                    'the VOC tars.')
  if not data_dir:
    return
  existing = data_dir
  while existing and not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if existing and (not os.path.isdir(existing) or not os.access(existing, os.W_OK)):
    raise UserError(f'--data_dir={data_dir} cannot be written ({existing} is '
                    f'{"not a folder" if not os.path.isdir(existing) else "read-only"}); pass '
                    'a writable --data_dir.')


def prepare(dataset, data_dir='', manual_dir=''):
  """Prepares `dataset` into the TFDS data dir and prints where it went and the split sizes.

  Raises:
    UserError: for an unknown data set, a bad folder, missing tars or tars that are not the
      genuine ones.
  """
  if dataset == 'parts':
    print('parts is generated in memory when a run starts: nothing to prepare.')
    return
  if dataset not in voc_info.TARS and dataset != cub_tfds.NAME:
    raise UserError(f'--dataset must be {_CHOICES}, not {dataset!r}.')
  _check_paths(data_dir, manual_dir)
  cli.import_tensorflow()  # Quietly, before voc imports it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from excam_jax.data import voc  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(
      {'data': {'dataset': dataset, 'data_dir': data_dir, 'manual_dir': manual_dir}})
  with native.quiet_absl_warnings():  # TFDS's note on the empty folder it looked in.
    builder = tfds.builder(dataset, data_dir=data_dir or None)
    prepared = voc.is_prepared(builder)
  if prepared:
    print(f'{dataset} is already prepared in {builder.data_dir}.')
  elif dataset == cub_tfds.NAME:
    print(f'Downloading and preparing {dataset} (about 1.2 GB; extraction takes minutes).')
    tfds.enable_progress_bar()
    try:
      builder.download_and_prepare()
    except OSError as error:  # Also requests' connection errors.
      first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
      raise UserError(f'Downloading {dataset} failed ({first_line}); check the network '
                      'connection and rerun the command.') from error
    print(f'wrote {dataset} to {builder.data_dir}.')
  else:
    directory = voc.manual_dir(config)
    voc.check_tars(builder, directory)
    print(f'Preparing {dataset} from the tars in {directory} (extraction takes minutes).')
    tfds.enable_progress_bar()
    voc.prepare(builder, directory)
    print(f'wrote {dataset} to {builder.data_dir}.')
  for name, split in builder.info.splits.items():
    print(f'  {name}: {split.num_examples} images')


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --dataset and --manual_dir.')
  prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)


def run():
  """The excam-prepare console script."""
  cli.run(main, configure_jax=False)


if __name__ == '__main__':
  run()
