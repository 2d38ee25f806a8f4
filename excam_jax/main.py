r"""Trains and evaluates a weakly supervised localization model.

  python -m excam_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
  python -m excam_jax.main --config=configs/voc12.py --workdir=runs/voc12 \
      --config.model.pretrained=/path/to/resnet101_tv_in1k.safetensors

Any config field can be overridden with --config.<field>=<value> (e.g. --config.model.num_maps=4).
The same command resumes a stopped run. Ctrl-C or SIGTERM saves a checkpoint of the current step
and exits with status 130 or 143. --verbosity=0 shows the libraries' INFO logs.
"""

import sys

from absl import flags
from ml_collections import config_flags

from excam_jax.runtime import cli
from excam_jax import config_schema
from excam_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Configuration file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard logs.')
_ALLOW_SCHEDULE_CHANGE = flags.DEFINE_bool(
    'allow_schedule_change', False,
    'Resume even though num_epochs, the learning rates, the schedule or the warm-up differ from '
    "the checkpoint's config (the change is logged).")


def parse_flags(argv):
  """Parses the command line; a bad config file, flag or field becomes a one-line UserError."""
  return cli.parse_config_flags(argv)


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --config and --workdir.')
  if _CONFIG.value is None or not _WORKDIR.value:
    raise UserError('both --config=configs/<name>.py and --workdir=DIR are required.')
  config_schema.validate(_CONFIG.value)  # Before JAX or TensorFlow load.
  # Imported here: evaluation worker processes re-import this module and need none of it.
  from excam_jax import train  # pylint: disable=g-import-not-at-top
  result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                    allow_schedule_change=_ALLOW_SCHEDULE_CHANGE.value)
  cli.LOGGER.info('wrote %s (checkpoint at step %d, logs and config.json).',
                  train.checkpoint_dir(_WORKDIR.value), result['final_step'])


def run():
  """The excam-train console script."""
  cli.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
