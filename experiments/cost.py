r"""The CPU hours a study spent, from its CSVs.

  python experiments/cost.py experiments/results/tuned/probes.csv \
      experiments/results/tuned/tuning.csv experiments/results/tuned/study.csv

A training counts once: cells that evaluate one training (an inference-only method,
grids.TRAINED_AS, at the training's setting) all record its train_s, which only the first of them
adds; each cell's eval_s is its own. Each cell's seconds count once per core it ran on (the `cores`
column; 2 where a row lacks it, as every cell trained on both cores before the column existed).
Paused windows (PAUSES.md) are inside these times, so the figure is an upper bound.
"""

import math
import os
import sys

from experiments import study


def cpu_seconds(rows):
  """Core-seconds of the rows' own work (see the module's docstring)."""
  total, trained = 0.0, set()
  for row in rows:
    cores = row.get('cores', math.nan)
    cores = cores if math.isfinite(cores) else 2
    setting = row.get('setting')
    key = study.training_key((row['method'], row['body_cue'], row['seed'], None,
                              study.parse_setting(setting if isinstance(setting, str) else '')))
    own = [row['eval_s']] + ([] if key in trained else [row['train_s']])
    trained.add(key)
    total += sum(v for v in own if math.isfinite(v)) * cores  # An unrecorded time counts 0.
  return total


def main(paths):
  if not paths:
    sys.exit('usage: python experiments/cost.py STUDY_CSV [STUDY_CSV ...]')
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    sys.exit(f'error: {missing[0]} not found; pass the CSVs that experiments/study.py wrote.')
  total = 0.0
  for path in paths:
    rows = study.read_rows(path)
    seconds = cpu_seconds(rows)
    total += seconds
    print(f'{path}: {len(rows)} rows, {seconds / 3600:.1f} CPU hours')
  print(f'in all: {total / 3600:.1f} CPU hours')


if __name__ == '__main__':
  main(sys.argv[1:])
