r"""Trains and evaluates a weakly supervised localization model.

  python -m excam_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
  python -m excam_jax.main --config=configs/voc12.py --workdir=runs/voc12 \
      --config.pretrained=/path/to/resnet101_tv_in1k.safetensors

Any config field can be overridden with --config.<field>=<value> (e.g. --config.model.num_maps=4).
"""

import logging as python_logging
import re
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from excam_jax.errors import UserError, exit_with

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Configuration file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard logs.')


def _override_named(argv, key):
  """The --config.* argument that names `key` (for the error message), or the key itself."""
  for arg in argv:
    if arg.startswith('--config.') and key in arg.split('=')[0].split('.'):
      return arg
  return key


def _config_load_error():
  """The reason the --config file failed to load, or None when it loaded."""
  value = flags.FLAGS['config'].value
  if value is None or isinstance(value, ml_collections.ConfigDict):
    return None
  try:
    value['dataset']  # config_flags defers a load failure to the first access.
  except OSError as err:
    return ' '.join(str(err).split())
  return None


def parse_flags(argv):
  """Parses the command line; a bad flag or config field becomes a one-line UserError."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as err:
    exit_with(UserError(f'{err}; the fields and their allowed values are in configs/voc12.py.'))
  except (AttributeError, KeyError) as err:  # config_flags: an override of an unknown field.
    names = re.findall(r'[A-Za-z_]\w*', str(err))
    key = names[0] if names else str(err)
    hint = re.search(r'Did you mean "(\w+)"', str(err))
    hint = f' (did you mean {hint.group(1)!r}?)' if hint else ''
    exit_with(UserError(f'unknown config field {key!r} in {_override_named(argv, key)}{hint}; '
                        'the fields are listed in configs/voc12.py.'))
  problem = _config_load_error()
  if problem:
    exit_with(UserError(f'{problem}; pass --config=configs/<name>.py.'))
  return remaining


def _quiet_checkpoint_logs(record):
  """Keeps Orbax's per-save INFO lines out of the training log; its warnings still show."""
  return record.levelno >= python_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  logging.get_absl_handler().python_handler.addFilter(_quiet_checkpoint_logs)
  if len(argv) > 1:
    exit_with(UserError(f'unexpected arguments {argv[1:]}; use --config and --workdir.'))
  if _CONFIG.value is None or not _WORKDIR.value:
    exit_with(UserError('both --config=configs/<name>.py and --workdir=DIR are required.'))
  # Imported here: evaluation worker processes re-import this module and need none of it.
  from excam_jax import train  # pylint: disable=g-import-not-at-top
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as err:
    exit_with(err)


if __name__ == '__main__':
  app.run(main, argv=sys.argv, flags_parser=parse_flags)
