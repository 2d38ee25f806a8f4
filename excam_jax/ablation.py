"""Ablation grids: named variants as config overrides, and their results table.

The ablate command (excam_jax/ablate.py, installed as excam-ablate) trains one run per variant
and writes the table. This module defines no flags, so any process may import it.
"""

import json
import os

from excam_jax.evaluation import runner

GRIDS = {
    'methods': {
        'wildcat': {'model.head': 'wildcat'},
        'excam_selfdrop': {'model.head': 'excam', 'model.self_drop': True},
        'excam_noselfdrop': {'model.head': 'excam', 'model.self_drop': False},
        'excam_noselfdrop_hard': {'model.head': 'excam', 'model.self_drop': False,
                                  'model.straight_through': False},
        'adl': {'model.head': 'adl'},
        'cam': {'model.head': 'cam'},
    },
    'num_maps': {
        f'{head}_m{m}': {'model.head': head, 'model.self_drop': False, 'model.num_maps': m}
        for head in ('excam', 'wildcat') for m in (1, 2, 4, 8)
    },
    'threshold': {
        'delta0.3': {'model.head': 'excam', 'model.self_drop': False, 'model.drop_threshold': 0.3},
        'delta0.5': {'model.head': 'excam', 'model.self_drop': False, 'model.drop_threshold': 0.5},
        'delta0.7': {'model.head': 'excam', 'model.self_drop': False, 'model.drop_threshold': 0.7},
        'learned': {'model.head': 'excam', 'model.self_drop': False,
                    'model.learn_threshold': 'per_class'},
    },
}
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
  out_dir = runner.evaluate_checkpoint(workdir, figures=4)
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
