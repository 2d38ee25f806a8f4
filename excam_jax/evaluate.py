r"""Restores a checkpoint and evaluates it: every metric, markdown tables and figures.

  python -m excam_jax.evaluate --workdir=runs/voc12 [--split=validation] [--step=N] [--output=DIR]
      [--maxboxacc=exact|wsolevaluation] [--box_grid=N] [--sweep_grid=N] [--sweep_step=S]
      [--threshold=T] [--pointwise_tolerance=P] [--acol_fusion=normalised|logits]

One pass over the split: the model runs once per batch, and the metrics, the parts measures and
the figures' examples all come from that pass. Boxes come from the one path of
excam_jax.evaluation.boxes (class map at the original image size, threshold, 8-connected
components), the same as `localize`. The protocol is the run's config.eval (defaults: boxes and
the MaxBoxAcc sweep at the original size, MaxBoxAcc 'exact'), overridden by the flags above, and
is written to metrics.json as "protocol" and named in tables.md. --acol_fusion scores an ACoL
run's fused map another way (models/acol.py) from the same checkpoint. The WSOL benchmark's sets
('wsol/...') are scored under wsolevaluation's protocol instead (evaluation/wsol_benchmark.py:
MaxBoxAccV2, GT-known and Top-1 Loc, or PxAP, and top-1 accuracy; config.eval's
cam_curve_interval, iou_threshold_list, multi_contour_eval), with no ap_bars.png.

Writes DIR/eval/<step>/ (DIR/eval/<step>/<split>/ for a split other than the config's eval_split;
--output=DIR instead, e.g. for a read-only run): metrics.json, tables.md, ap_bars.png (per-class
localization AP beside the thesis's, or beside --compare's run), boxes.png (ground truth red,
predictions green) and cams.png (class maps).
"""

import os

from absl import flags
import numpy as np

from excam_jax.runtime import cli
from excam_jax import config_schema
from excam_jax.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'The --workdir of a training run.')
_SPLIT = flags.DEFINE_string('split', None, "Split to evaluate; the config's eval_split if unset.")
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; the latest if unset.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder; <workdir>/eval/<step> if unset.')
_COMPARE = flags.DEFINE_string('compare', None,
                               "Another run's metrics.json, drawn beside ours in ap_bars.png.")
_FIGURES = flags.DEFINE_integer('figures', 8, 'Images drawn in boxes.png and cams.png (0: none).')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Processes for the MaxBoxAcc threshold sweep.')
_MAXBOXACC = flags.DEFINE_enum('maxboxacc', None, ['exact', 'wsolevaluation'],
                               "MaxBoxAcc protocol; the run's config.eval.maxboxacc if unset.")
_BOX_GRID = flags.DEFINE_integer('box_grid', None,
                                 'Find boxes on an N x N grid (0: the original size).')
_SWEEP_GRID = flags.DEFINE_integer('sweep_grid', None,
                                   "'exact' MaxBoxAcc sweep on an N x N grid (0: original size).")
_SWEEP_STEP = flags.DEFINE_float('sweep_step', None, "'exact' MaxBoxAcc threshold step.")
_THRESHOLD = flags.DEFINE_float('threshold', None, 'Box threshold on z (0 is sigma(z) > 0.5).')
_TOLERANCE = flags.DEFINE_integer('pointwise_tolerance', None, 'Pointwise AP tolerance (px).')
_MAP_EXPANSION = flags.DEFINE_enum(
    'map_expansion', None,
    list(config_schema.EXPANSIONS),
    "Test-time map transform (models/map_transforms.py); the config's eval.map_expansion if unset.")
_MAP_EXPANSION_STEPS = flags.DEFINE_integer('map_expansion_steps', None,
                                            "'erase': erasing passes; 'cluster': re-weighting "
                                            "steps; 'affinity': random-walk steps (>= 1).")
_MAP_EXPANSION_THRESHOLD = flags.DEFINE_float(
    'map_expansion_threshold', None,
    "In (0, 1): erase where a normalised map is >= this ('erase'); boxes keep the cells above "
    "this fraction of a map's range ('relative'); the region AdvCAM holds ('advcam').")
_MAP_EXPANSION_STEP_SIZE = flags.DEFINE_float('map_expansion_step_size', None,
                                              "'advcam': the climbing step (> 0).")
_MAP_EXPANSION_WEIGHT = flags.DEFINE_float('map_expansion_weight', None,
                                           "'advcam': the restriction's weight (>= 0).")
_MAP_EXPANSION_CLIMB_STEPS = flags.DEFINE_integer(
    'map_expansion_climb_steps', None,
    "'advcam': the maps summed, the image's and those of T - 1 climbed images (>= 1).")
_MAP_EXPANSION_CLIMB_CLASSES = flags.DEFINE_integer(
    'map_expansion_climb_classes', None, "'advcam': the most classes climbed per image (>= 1).")
_MAP_EXPANSION_TEMPERATURE = flags.DEFINE_float(
    'map_expansion_temperature', None,
    "'cluster': kappa, the scale of the features' cosine difference (> 0).")
_MAP_EXPANSION_RADIUS = flags.DEFINE_integer(
    'map_expansion_radius', None, "'guided': the guided filter's window radius in pixels (>= 1).")
_MAP_EXPANSION_EPS = flags.DEFINE_float(
    'map_expansion_eps', None, "'guided': the guided filter's ridge on the image's colours (> 0).")
_MAP_EXPANSION_AFFINITY_POWER = flags.DEFINE_float(
    'map_expansion_affinity_power', None,
    "'affinity': beta, the power of the features' cosine affinities (> 0).")
_MAP_EXPANSION_NUMBERS = (_MAP_EXPANSION_STEPS, _MAP_EXPANSION_THRESHOLD, _MAP_EXPANSION_STEP_SIZE,
                          _MAP_EXPANSION_WEIGHT, _MAP_EXPANSION_CLIMB_STEPS,
                          _MAP_EXPANSION_CLIMB_CLASSES, _MAP_EXPANSION_TEMPERATURE,
                          _MAP_EXPANSION_AFFINITY_POWER, _MAP_EXPANSION_RADIUS,
                          _MAP_EXPANSION_EPS)
_ACOL_FUSION = flags.DEFINE_enum(
    'acol_fusion', None, list(config_schema.ACOL_FUSIONS),
    "ACoL runs' test-time map (models/acol.py); the run's config.model.acol_fusion if unset.")


def check_flags():
  """Answers every flag mistake before JAX loads or a checkpoint is read."""
  if not _WORKDIR.value:
    raise UserError('--workdir=DIR (the directory of a training run) is required.')
  if not os.path.isdir(os.path.join(_WORKDIR.value, 'checkpoints')):
    raise UserError(f'no checkpoints in {_WORKDIR.value}; pass the --workdir of a training run.')
  for flag in (_STEP, _FIGURES, _WORKERS, _BOX_GRID, _SWEEP_GRID, _TOLERANCE):
    if flag.value is not None and flag.value < 0:
      raise UserError(f'--{flag.name}={flag.value} is invalid: allowed an int >= 0.')
  for flag in (_BOX_GRID, _SWEEP_GRID):
    if flag.value is not None and 0 < flag.value < 8:
      raise UserError(f'--{flag.name}={flag.value} is invalid: allowed 0 (the original size) or '
                      'an int >= 8.')
  if _SWEEP_STEP.value is not None and not 0 < _SWEEP_STEP.value < 1:
    raise UserError(f'--sweep_step={_SWEEP_STEP.value} is invalid: allowed a float in (0, 1).')
  if _THRESHOLD.value is not None and not np.isfinite(_THRESHOLD.value):
    raise UserError(f'--threshold={_THRESHOLD.value} is invalid: allowed a finite float.')
  for flag in _MAP_EXPANSION_NUMBERS:  # The config's own checks, answered as flags.
    ok, allowed = config_schema.MAP_EXPANSION_CHECKS[flag.name]
    if flag.value is not None and not ok(flag.value):
      raise UserError(f'--{flag.name}={flag.value} is invalid: allowed {allowed}.')
  if _COMPARE.value and not os.path.isfile(_COMPARE.value):
    raise UserError(f'--compare={_COMPARE.value} not found; pass the metrics.json that '
                    '`python -m excam_jax.evaluate` wrote for the other run.')
  if _OUTPUT.value and os.path.isfile(_OUTPUT.value):
    raise UserError(f'--output={_OUTPUT.value} is a file, not a directory; pass another one.')


def _protocol_flags():
  """The protocol overrides given on the command line (0 grids mean the original size)."""
  grid = lambda flag: None if flag.value is None else (flag.value or 'original')
  overrides = {'maxboxacc': _MAXBOXACC.value, 'box_grid': grid(_BOX_GRID),
               'sweep_grid': grid(_SWEEP_GRID), 'sweep_step': _SWEEP_STEP.value,
               'threshold': _THRESHOLD.value, 'pointwise_tolerance': _TOLERANCE.value}
  return {k: v for k, v in overrides.items() if v is not None}


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --workdir, --split and --step.')
  check_flags()
  from excam_jax import checkpoint_eval  # pylint: disable=g-import-not-at-top  # JAX.
  out = checkpoint_eval.evaluate_checkpoint(
      _WORKDIR.value, split=_SPLIT.value, step=_STEP.value, compare=_COMPARE.value,
      figures=_FIGURES.value, workers=_WORKERS.value, output=_OUTPUT.value,
      protocol=_protocol_flags(),
      expansion={flag.name: flag.value for flag in (_MAP_EXPANSION,) + _MAP_EXPANSION_NUMBERS},
      model_overrides={'acol_fusion': _ACOL_FUSION.value})
  print(f'wrote {out} (metrics.json, tables.md' + (', figures' if _FIGURES.value else '') + ')')


def run():
  """The excam-evaluate console script."""
  cli.run(main)


if __name__ == '__main__':
  run()
