r"""Methods x body-cue levels x seeds on the parts data set, with confidence intervals.

  python experiments/study.py --workdir=runs/study --methods=wildcat,excam,adl \
      --body_cue=0,0.25,0.5,1 --seeds=0,1,2
  python experiments/study.py --workdir=runs/study_quick --quick --seeds=0,1   # smoke test

One training per cell (method, body_cue, seed), each in its own process under
<workdir>/runs/<method>_cue<c>_seed<s>, then evaluated by the evaluator's exact protocol on the
validation split (non-difficult objects; see excam_jax/evaluation/evaluator.py). A row is
appended to <workdir>/study.csv as each cell finishes; a killed study resumes where it stopped
(finished cells are skipped, an unfinished training resumes from its checkpoint). After every
cell <workdir>/study.md (mean +- 95 % t-interval over seeds per method and cue, and each method's
paired difference from WILDCAT over the seeds both ran) and <workdir>/study.png (CorLoc and body
coverage against body_cue, one line per method with its interval band) are rewritten.

The seed sets both the training seed and the data set's seed, so the intervals cover both.
Methods: see METHODS; `body_only` and `part_only` are WILDCAT trained on the probes of the data
set (parts painted over, bodies left out): they certify what each cue carries at a level.
Settings: configs/synthetic.py with CELL (the full study) or QUICK (--quick: short runs for smoke
tests, not science) on top, both with BAND's pooling (kmax 0.05); --set=field=value,... adds
overrides to every cell (--set=model.kmax=0.3 gives the default run's pooling).
"""

import argparse
import csv
import io
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> config overrides (field -> value).
METHODS = {
    'cam': {'model.head': 'cam'},
    'wildcat': {'model.head': 'wildcat'},
    'excam': {'model.head': 'excam', 'model.self_drop': False},
    'excam_selfdrop': {'model.head': 'excam', 'model.self_drop': True},
    'adl': {'model.head': 'adl'},
    'acol': {'model.head': 'acol'},
    'acol_excam': {'model.head': 'acol', 'model.acol_head': 'excam', 'model.self_drop': False},
    'wildcat_erase': {'model.head': 'wildcat', 'eval.map_expansion': 'erase'},
    # WILDCAT's maps boxed by ACoL's relative rule (above half of each map's range).
    'wildcat_relative': {'model.head': 'wildcat', 'eval.map_expansion': 'relative'},
    # Adversarial climbing (AdvCAM) on WILDCAT's trainings, 8 steps; then the relative rule too.
    'wildcat_advcam': {'model.head': 'wildcat', 'eval.map_expansion': 'advcam',
                       'eval.map_expansion_steps': 8},
    'wildcat_advcam_relative': {'model.head': 'wildcat', 'eval.map_expansion': 'advcam+relative',
                                'eval.map_expansion_steps': 8},
    'excam_erase': {'model.head': 'excam', 'model.self_drop': False,
                    'eval.map_expansion': 'erase'},
    'body_only': {'model.head': 'wildcat', 'data.parts.probe': 'body_only'},
    'part_only': {'model.head': 'wildcat', 'data.parts.probe': 'part_only'},
}
BASELINE = 'wildcat'
# Methods that differ from another only at inference: they evaluate that method's training.
TRAINED_AS = {'wildcat_erase': 'wildcat', 'wildcat_relative': 'wildcat', 'wildcat_advcam': 'wildcat',
              'wildcat_advcam_relative': 'wildcat', 'excam_erase': 'excam'}
TIMING_FILE = 'train_seconds.json'  # In a cell's run folder: the training's wall time.
# Overrides of every cell of the full study, and of --quick.
# The test bed's pooling: k-max over the top 5 % of the cells (configs/synthetic.py has 0.3). There
# WILDCAT's maps cover under half of the body even where the body is evidence (body_cue 1), the
# band where expansion can be seen (experiments/results/study_band.md); at 0.3 they already
# cover most of it (study_all.md, made with --set=model.kmax=0.3).
BAND = {'model.kmax': 0.05}
CELL = {'data.parts.num_train': 2000, 'data.parts.num_eval': 300, 'train.num_epochs': 8,
        'optim.warmup_steps': 50, 'train.eval_every_steps': 10 ** 6,
        'train.checkpoint_every_steps': 100, **BAND}
QUICK = {'data.parts.num_train': 384, 'data.parts.num_eval': 96, 'train.num_epochs': 4,
         'optim.warmup_steps': 10, 'train.eval_every_steps': 10 ** 6,
         'train.checkpoint_every_steps': 24, 'train.log_every_steps': 12, **BAND}
QUICK_CUES = 2  # --quick runs the first and the last of the --body_cue levels.
METRICS = ('classification_map', 'corloc', 'maxboxacc', 'maxboxaccv2', 'localization_ap',
           'pointwise_ap', 'parts_body_coverage', 'parts_part_coverage',
           'parts_background_activation')
COLUMNS = ('method', 'body_cue', 'seed') + METRICS + ('train_s', 'eval_s', 'steps')
CSV_NAME, MD_NAME, PNG_NAME = 'study.csv', 'study.md', 'study.png'


# ------------------------------------------------------------------------------------------------
# Statistics (pure functions: tested on hand-computed values).

def t_quantile(level, dof):
  """The two-sided Student-t quantile t_{(1 + level) / 2, dof}."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf((1.0 + level) / 2.0, dof))


def mean_ci(values, level=0.95):
  """(mean, half-width of the t-interval, n) of the finite values; NaN half-width when n < 2."""
  values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
  n = len(values)
  if n == 0:
    return math.nan, math.nan, 0
  mean = sum(values) / n
  if n < 2:
    return mean, math.nan, n
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return mean, t_quantile(level, n - 1) * sd / math.sqrt(n), n


def paired_differences(rows, metric, method, baseline=BASELINE):
  """Per body_cue: the per-seed differences method - baseline, over the seeds both ran."""
  table = {(r['method'], float(r['body_cue']), int(r['seed'])): float(r[metric]) for r in rows}
  out = {}
  for (name, cue, seed), value in sorted(table.items()):
    if name == method and (baseline, cue, seed) in table:
      out.setdefault(cue, []).append(value - table[(baseline, cue, seed)])
  return out


def format_ci(mean, half):
  if not math.isfinite(mean):
    return '-'
  return f'{mean:.3f}' if not math.isfinite(half) else f'{mean:.3f} ± {half:.3f}'


def markdown(rows, level=0.95, metrics=('classification_map', 'corloc', 'maxboxaccv2',
                                          'localization_ap', 'parts_body_coverage',
                                          'parts_background_activation')):
  """The study's tables: mean ± interval per (method, cue); paired differences from WILDCAT."""
  methods = [m for m in METHODS if any(r['method'] == m for r in rows)]
  methods += sorted({r['method'] for r in rows} - set(methods))
  cues = sorted({float(r['body_cue']) for r in rows})
  pct = int(round(level * 100))
  lines = [f'Mean ± half-width of the {pct} % t-interval over seeds (n = seeds); exact scoring, '
           'validation split, non-difficult objects.', '',
           '| method | body_cue | n | ' + ' | '.join(metrics) + ' | train s | eval s |',
           '| --- | --- | --- | ' + ' | '.join('---' for _ in metrics) + ' | --- | --- |']
  for method in methods:
    for cue in cues:
      cell = [r for r in rows if r['method'] == method and float(r['body_cue']) == cue]
      if not cell:
        continue
      stats = [mean_ci([r[m] for r in cell], level) for m in metrics]
      train_s = mean_ci([r['train_s'] for r in cell], level)[0]
      eval_s = mean_ci([r.get('eval_s', math.nan) for r in cell], level)[0]
      lines.append(f'| {method} | {cue:g} | {len(cell)} | '
                   + ' | '.join(format_ci(s[0], s[1]) for s in stats)
                   + f' | {train_s:.0f} | {eval_s:.0f} |')
  others = [m for m in methods if m != BASELINE]
  if BASELINE in methods and others:
    lines += ['', f'Paired differences from {BASELINE} (method − {BASELINE}, same seed and '
              f'body_cue), mean ± {pct} % t-interval; an interval that excludes 0 is a '
              'difference the seeds resolve.', '',
              '| method | body_cue | n | ' + ' | '.join(f'Δ {m}' for m in metrics) + ' |',
              '| --- | --- | --- | ' + ' | '.join('---' for _ in metrics) + ' |']
    for method in others:
      diffs = {m: paired_differences(rows, m, method) for m in metrics}
      for cue in cues:
        if cue not in diffs[metrics[0]]:
          continue
        stats = [mean_ci(diffs[m].get(cue, []), level) for m in metrics]
        lines.append(f'| {method} | {cue:g} | {stats[0][2]} | '
                     + ' | '.join(format_ci(s[0], s[1]) for s in stats) + ' |')
  return '\n'.join(lines) + '\n'


def plot(rows, path, level=0.95):
  """CorLoc and body coverage against body_cue, one line per method with its interval band."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  methods = [m for m in METHODS if any(r['method'] == m for r in rows)]
  methods += sorted({r['method'] for r in rows} - set(methods))
  for ax, metric, title in zip(axes, ('corloc', 'parts_body_coverage'),
                               ('CorLoc', 'body coverage (z > 0)')):
    for method in methods:
      cues = sorted({float(r['body_cue']) for r in rows if r['method'] == method})
      stats = [mean_ci([r[metric] for r in rows if r['method'] == method
                        and float(r['body_cue']) == c], level) for c in cues]
      means = [s[0] for s in stats]
      halves = [0.0 if not math.isfinite(s[1]) else s[1] for s in stats]
      line, = ax.plot(cues, means, marker='o', label=method)
      ax.fill_between(cues, [m - h for m, h in zip(means, halves)],
                      [m + h for m, h in zip(means, halves)], color=line.get_color(), alpha=0.2)
    ax.set_xlabel('body_cue')
    ax.set_title(f'{title}, mean ± {int(round(level * 100))} % CI')
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Results file.

def read_rows(path):
  """The rows of study.csv (numbers as floats, seed as int); [] when there is none."""
  if not os.path.exists(path):
    return []
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    for key in COLUMNS[1:]:
      if key in row:
        row[key] = float(row[key]) if row[key] not in ('', 'nan') else math.nan
    row['seed'] = int(row['seed'])
  return rows


def write_rows(path, rows):
  """Rewrites study.csv atomically (a killed study never leaves half a line)."""
  sys.path.insert(0, REPO)
  from excam_jax import files  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction='ignore', lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow(row)
  files.write_text(path, out.getvalue())


def cell_name(method, cue, seed):
  return f'{method}_cue{cue:g}_seed{seed}'


def write_summary(workdir, rows, command):
  sys.path.insert(0, REPO)
  from excam_jax import files  # pylint: disable=g-import-not-at-top
  files.write_text(os.path.join(workdir, MD_NAME),
                   f'# Study\n\nCommand: `{command}`\n\n' + markdown(rows))
  plot(rows, os.path.join(workdir, PNG_NAME))


# ------------------------------------------------------------------------------------------------
# One cell (run in its own process).

def cell_config(method, cue, seed, quick, extra=()):
  """configs/synthetic.py with the cell's overrides."""
  sys.path.insert(0, REPO)
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  config = synthetic.get_config()
  overrides = dict(QUICK if quick else CELL)
  overrides.update(METHODS[method])
  overrides.update({'data.parts.body_cue': float(cue), 'train.seed': int(seed),
                    'data.parts.seed': int(seed)})
  overrides.update(dict(extra))
  for field, value in overrides.items():
    section, _, name = field.rpartition('.')
    node = config
    for part in section.split('.'):
      node = node[part]
    node[name] = value
  return config


def config_checks_validate(config):
  """The package's config check (imported late: the harness runs without JAX loaded)."""
  from excam_jax import config_checks  # pylint: disable=g-import-not-at-top
  config_checks.validate(config)


def train_cell(method, cue, seed, workdir, quick, extra):
  """Trains (or resumes, or finds finished) one cell's model: (run folder, steps, train s).

  The training time is that of the process that trained it (kept in the run folder), so a
  method that evaluates another's training (TRAINED_AS) reports the same cost.
  """
  config = cell_config(method, cue, seed, quick, extra)
  config_checks_validate(config)
  from excam_jax import files  # pylint: disable=g-import-not-at-top
  from excam_jax import train  # pylint: disable=g-import-not-at-top
  run_dir = os.path.join(workdir, 'runs', cell_name(method, cue, seed))
  timing = os.path.join(run_dir, TIMING_FILE)
  start = time.perf_counter()
  result = train.train_and_evaluate(config, run_dir)
  train_s = time.perf_counter() - start
  if os.path.isfile(timing):
    with open(timing, encoding='utf-8') as f:
      train_s = json.load(f)['train_s']
  else:
    files.write_text(timing, json.dumps({'train_s': train_s}))
  return run_dir, result['final_step'], train_s


def run_cell(method, cue, seed, workdir, quick, extra):
  """Trains (or resumes) and evaluates one cell; returns its row."""
  base = TRAINED_AS.get(method, method)
  run_dir, steps, train_s = train_cell(base, cue, seed, workdir, quick, extra)
  from excam_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
  eval_fields = {k.split('.', 1)[1]: v for k, v in METHODS[method].items()
                 if k.startswith('eval.')}
  own_dir = os.path.join(workdir, 'runs', cell_name(method, cue, seed))
  start = time.perf_counter()
  out_dir = runner.evaluate_checkpoint(run_dir, figures=0, output=os.path.join(own_dir, 'eval'),
                                       expansion=eval_fields)
  eval_s = time.perf_counter() - start
  with open(os.path.join(out_dir, 'metrics.json'), encoding='utf-8') as f:
    metrics = json.load(f)
  row = {'method': method, 'body_cue': float(cue), 'seed': int(seed),
         'train_s': train_s, 'eval_s': eval_s, 'steps': steps}
  for key in METRICS:
    value = metrics.get(key)
    row[key] = math.nan if value is None else float(value)
  return row


# ------------------------------------------------------------------------------------------------

def _parse_list(text, kind):
  return [kind(x) for x in text.split(',') if x.strip()]


def _parse_extra(text):
  pairs = []
  for item in _parse_list(text, str):
    field, _, value = item.partition('=')
    pairs.append((field.strip(), json.loads(value)))
  return pairs


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--methods', default=','.join(METHODS),
                      help=f'comma list of {", ".join(METHODS)}')
  parser.add_argument('--body_cue', default='0,0.25,0.5,1', help='comma list of levels in [0, 1]')
  parser.add_argument('--seeds', default='0,1,2', help='comma list of seeds')
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--quick', action='store_true',
                      help=f'short runs at the first and last cue level ({QUICK})')
  parser.add_argument('--set', default='', help='extra overrides: field=json_value,...')
  parser.add_argument('--cell', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  try:
    methods = _parse_list(args.methods, str)
    cues = _parse_list(args.body_cue, float)
    seeds = _parse_list(args.seeds, int)
    extra = _parse_extra(args.set)
  except ValueError as err:
    parser.error(f'cannot read a list ({err}); give comma lists like --seeds=0,1,2')
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    parser.error(f'unknown methods {unknown}; choose from {list(METHODS)}')
  if not cues or any(not 0.0 <= c <= 1.0 for c in cues) or not seeds:
    parser.error('give --body_cue levels in [0, 1] and at least one seed')
  workdir = os.path.abspath(args.workdir)
  if args.cell:
    method, cue, seed = args.cell.split(',')
    row = run_cell(method, float(cue), int(seed), workdir, args.quick, extra)
    print('ROW ' + json.dumps(row), flush=True)
    return
  if args.quick:
    cues = sorted({cues[0], cues[-1]})[:QUICK_CUES]
  cells = [(m, c, s) for s in seeds for c in cues for m in methods]
  command = 'python experiments/study.py ' + ' '.join(sys.argv[1:])
  launch = lambda method, cue, seed: launch_cell(method, cue, seed, workdir, args.quick, args.set)
  try:
    rows = run_study(workdir, cells, command, launch)
  except CellFailed as err:
    sys.exit(f'error: {err} Rerun the same command to resume.')
  print(f'{len(rows)} rows in {os.path.join(workdir, CSV_NAME)}; tables in '
        f'{os.path.join(workdir, MD_NAME)}')


class CellFailed(Exception):
  """A cell's process failed; the message names its log."""


def launch_cell(method, cue, seed, workdir, quick, extra_text):
  """Runs one cell in its own process (stderr to its log); returns its row."""
  cmd = [sys.executable, os.path.abspath(__file__), f'--cell={method},{cue},{seed}',
         f'--workdir={workdir}', f'--set={extra_text}'] + (['--quick'] if quick else [])
  log_path = os.path.join(workdir, 'runs', cell_name(method, cue, seed) + '.log')
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, 'a', encoding='utf-8') as log:
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), check=False)
  found = [line[4:] for line in proc.stdout.splitlines() if line.startswith('ROW ')]
  if proc.returncode or not found:
    raise CellFailed(f'cell {cell_name(method, cue, seed)} failed (exit {proc.returncode}); '
                     f'see {log_path}.')
  return json.loads(found[-1])


def run_study(workdir, cells, command, launch):
  """Runs the cells not in <workdir>/study.csv yet, appending each row as it comes.

  Args:
    workdir: the study's folder.
    cells: (method, body_cue, seed) triples, in order.
    command: the command line, for study.md.
    launch: (method, body_cue, seed) -> row dict (`launch_cell`, or a fake in tests).

  Returns:
    All rows of study.csv.
  """
  os.makedirs(workdir, exist_ok=True)
  csv_path = os.path.join(workdir, CSV_NAME)
  rows = read_rows(csv_path)
  done = {(r['method'], float(r['body_cue']), int(r['seed'])) for r in rows}
  for method, cue, seed in cells:
    if (method, float(cue), int(seed)) in done:
      continue
    started = time.perf_counter()
    rows.append(launch(method, cue, seed))
    write_rows(csv_path, rows)
    write_summary(workdir, rows, command)
    print(f'{cell_name(method, cue, seed)}: corloc {rows[-1]["corloc"]:.3f}, body coverage '
          f'{rows[-1]["parts_body_coverage"]:.3f} ({time.perf_counter() - started:.0f} s)',
          flush=True)
  if rows:
    write_summary(workdir, rows, command)
  return rows


if __name__ == '__main__':
  main()
