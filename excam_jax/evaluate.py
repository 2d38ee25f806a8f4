r"""Restores a checkpoint and evaluates it: every metric, markdown tables and figures.

  python -m excam_jax.evaluate --workdir=runs/voc12 [--split=validation] [--step=N]

Writes DIR/eval/<step>/ (DIR/eval/<step>/<split>/ for a split other than the config's eval_split):
metrics.json, tables.md, ap_bars.png (per-class localization AP beside the thesis's, or beside
--compare's run), boxes.png (ground truth red, predictions green) and cams.png (class maps).
"""

import sys

from absl import app
from absl import flags

from excam_jax.errors import UserError, exit_with

_WORKDIR = flags.DEFINE_string('workdir', None, 'The --workdir of a training run.')
_SPLIT = flags.DEFINE_string('split', None, "Split to evaluate; the config's eval_split if unset.")
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; the latest if unset.')
_COMPARE = flags.DEFINE_string('compare', None,
                               "Another run's metrics.json, drawn beside ours in ap_bars.png.")
_FIGURES = flags.DEFINE_integer('figures', 8, 'Images drawn in boxes.png and cams.png.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Processes for the MaxBoxAcc threshold sweep.')


def main(argv):
  if len(argv) > 1:
    exit_with(UserError(f'unexpected arguments {argv[1:]}; use --workdir, --split and --step.'))
  if not _WORKDIR.value:
    exit_with(UserError('--workdir=DIR (the directory of a training run) is required.'))
  try:
    # Imported here so that --help and flag errors stay fast.
    from excam_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
    out = evaluate.evaluate_checkpoint(
        _WORKDIR.value, split=_SPLIT.value, step=_STEP.value, compare=_COMPARE.value,
        figures=_FIGURES.value, workers=_WORKERS.value)
  except UserError as err:
    exit_with(err)
  print(f'wrote {out}')


if __name__ == '__main__':
  app.run(main, argv=sys.argv)
