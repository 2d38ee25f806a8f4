r"""The ablate command: trains one model per variant, writes a table of their final evaluations.

  excam-ablate --config=configs/synthetic.py --workdir=runs/ablation --grid=methods
  excam-ablate --config=configs/voc12.py --workdir=runs/voc12_ablation \
      --grid=num_maps --config.model.pretrained=/path/to/resnet101_tv_in1k.safetensors

Grids (each variant is a set of config overrides on top of --config):
  methods   WILDCAT, ex-CAM with self_drop True and False, ex-CAM with hard masks, ADL, CAM.
  num_maps  ex-CAM (self_drop=False) and WILDCAT at M = 1, 2, 4, 8.
  threshold ex-CAM (self_drop=False) at delta = 0.3, 0.5, 0.7 and with a learned threshold.

Each variant trains in <workdir>/<variant> (an existing run resumes or is reused as is), its last
checkpoint is evaluated (report and figures in <workdir>/<variant>/eval/), and the metrics of
every variant are written to <workdir>/results.md and results.json. On the
synthetic data set one variant takes about 9 minutes on 2 CPU cores.

Also run as `python -m excam_jax.ablate` or `python experiments/ablate.py` (the same flags).
The grids are experiments/grids.py ABLATIONS, built from the study's method catalogue, so an
ablation variant and a study method with the same overrides are the same model. This module
defines --config and --workdir, as excam_jax.main does, so it is imported by no other module.
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from excam_jax import config_schema
from excam_jax.errors import UserError
from excam_jax.runtime import cli
from excam_jax.runtime import files
from experiments import grids

GRIDS = grids.ABLATIONS
# Columns of the results table, in order; absent metrics show as '-'.
COLUMNS = ('classification_map', 'localization_ap', 'localization_ap_07', 'pointwise_ap',
           'corloc', 'maxboxacc', 'maxboxaccv2', 'expansion', 'parts_body_coverage',
           'parts_part_coverage', 'parts_background_activation', 'parts_map_precision')


def variant_config(base, overrides):
  """A copy of `base` with dotted-name overrides applied."""
  config = base.copy_and_resolve_references()
  for name, value in overrides.items():
    *path, leaf = name.split('.')
    node = config
    for key in path:
      node = node[key]
    node[leaf] = value
  return config


def final_metrics(workdir):
  """Evaluates the run's last checkpoint (report and figures in its eval/ folder)."""
  from excam_jax import checkpoint_eval  # pylint: disable=g-import-not-at-top  # JAX.
  out_dir = checkpoint_eval.evaluate_checkpoint(workdir, figures=4)
  with open(os.path.join(out_dir, 'metrics.json')) as f:
    metrics = json.load(f)
  return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def results_table(results, grid):
  """Markdown table: one row per variant, one column per metric."""
  columns = [c for c in COLUMNS if any(c in r for r in results.values())]
  lines = [f'# Ablation: {grid}', '',
           'Final evaluation of each variant (metrics and protocols as in the evaluation '
           'tables; maps thresholded at sigma(z) > 0.5 unless the metric sweeps).', '',
           '| variant | overrides | ' + ' | '.join(columns) + ' |',
           '| --- | --- | ' + ' | '.join('---' for _ in columns) + ' |']
  for name, metrics in results.items():
    overrides = ', '.join(f'{k}={v}' for k, v in GRIDS[grid][name].items())
    cells = [f'{metrics[c]:.3f}' if c in metrics else '-' for c in columns]
    lines.append(f'| {name} | {overrides} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


_FLAGS = {}  # Defined by `run`, so that importing this module defines no flags.


def _define_flags():
  _FLAGS.update(
      config=config_flags.DEFINE_config_file('config', None, 'Base configuration file.'),
      workdir=flags.DEFINE_string('workdir', None, 'Directory holding one run per variant.'),
      grid=flags.DEFINE_enum('grid', 'methods', list(GRIDS), 'Variants.'),
      only=flags.DEFINE_list('only', [], 'Run only these variant names.'))


def main(argv):
  config, workdir, grid, only = (_FLAGS[k].value for k in ('config', 'workdir', 'grid', 'only'))
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --config, --workdir and --grid.')
  if config is None or not workdir:
    raise UserError('both --config=configs/<name>.py and --workdir=DIR are required.')
  variants = GRIDS[grid]
  unknown = set(only) - set(variants)
  if unknown:
    raise UserError(f'unknown variants {sorted(unknown)}; choose from {sorted(variants)}.')
  chosen = {name: overrides for name, overrides in variants.items()
            if not only or name in only}
  configs = {name: variant_config(config, overrides)
             for name, overrides in chosen.items()}
  for variant in configs.values():  # Every variant checked before the first one trains.
    config_schema.validate(variant)
  from excam_jax import train  # pylint: disable=g-import-not-at-top  # JAX.
  results = {}
  for name, variant in configs.items():
    cli.LOGGER.info('== %s: %s', name, chosen[name])
    run_dir = os.path.join(workdir, name)
    train.train_and_evaluate(variant, run_dir)  # Resumes, or does nothing, if trained.
    results[name] = final_metrics(run_dir)
  files.write_text(os.path.join(workdir, 'results.json'), json.dumps(results, indent=1))
  table = results_table(results, grid)
  files.write_text(os.path.join(workdir, 'results.md'), table)
  print(table)
  print(f'wrote {os.path.join(workdir, "results.md")} and results.json')


def run():
  """The excam-ablate console script."""
  _define_flags()
  cli.run(main, flags_parser=cli.parse_config_flags)


if __name__ == '__main__':
  run()
