r"""Restores a checkpoint and evaluates it: every metric, markdown tables and figures.

  python -m excam_jax.evaluate --workdir=runs/voc12 [--split=validation] [--step=N] [--output=DIR]

Writes DIR/eval/<step>/ (DIR/eval/<step>/<split>/ for a split other than the config's eval_split;
--output=DIR instead, e.g. for a read-only run): metrics.json, tables.md, ap_bars.png (per-class
localization AP beside the thesis's, or beside --compare's run), boxes.png (ground truth red,
predictions green) and cams.png (class maps).
"""

import os

from absl import flags

from excam_jax import cli
from excam_jax.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'The --workdir of a training run.')
_SPLIT = flags.DEFINE_string('split', None, "Split to evaluate; the config's eval_split if unset.")
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; the latest if unset.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder; <workdir>/eval/<step> if unset.')
_COMPARE = flags.DEFINE_string('compare', None,
                               "Another run's metrics.json, drawn beside ours in ap_bars.png.")
_FIGURES = flags.DEFINE_integer('figures', 8, 'Images drawn in boxes.png and cams.png (0: none).')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Processes for the MaxBoxAcc threshold sweep.')


def check_flags():
  """Answers every flag mistake before JAX loads or a checkpoint is read."""
  if not _WORKDIR.value:
    raise UserError('--workdir=DIR (the directory of a training run) is required.')
  if not os.path.isdir(os.path.join(_WORKDIR.value, 'checkpoints')):
    raise UserError(f'no checkpoints in {_WORKDIR.value}; pass the --workdir of a training run.')
  for flag in (_STEP, _FIGURES, _WORKERS):
    if flag.value is not None and flag.value < 0:
      raise UserError(f'--{flag.name}={flag.value} is invalid: allowed an int >= 0.')
  if _COMPARE.value and not os.path.isfile(_COMPARE.value):
    raise UserError(f'--compare={_COMPARE.value} not found; pass the metrics.json that '
                    '`python -m excam_jax.evaluate` wrote for the other run.')
  if _OUTPUT.value and os.path.isfile(_OUTPUT.value):
    raise UserError(f'--output={_OUTPUT.value} is a file, not a directory; pass another one.')


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --workdir, --split and --step.')
  check_flags()
  from excam_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top  # JAX.
  out = evaluate.evaluate_checkpoint(
      _WORKDIR.value, split=_SPLIT.value, step=_STEP.value, compare=_COMPARE.value,
      figures=_FIGURES.value, workers=_WORKERS.value, output=_OUTPUT.value)
  print(f'wrote {out} (metrics.json, tables.md' + (', figures' if _FIGURES.value else '') + ')')


if __name__ == '__main__':
  cli.run(main)
