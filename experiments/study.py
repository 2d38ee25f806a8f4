r"""Methods x body-cue levels x seeds on the parts data set: tuned on one split, reported on another.

The protocol (SPEC.md section 8, after Choe et al., CVPR 2020, "Evaluating WSOL Right"):

  # 1. Tune: every setting of each method's search space (GRIDS) on the validation split with the
  #    tuning seeds; writes tuning.csv, tuning.md and choices.json ({method: {body_cue: {field:
  #    value}}}: the setting with the best mean PRIMARY endpoint per method and level).
  python experiments/study.py --tune --workdir=runs/tuned --methods=cam,wildcat,excam \
      --body_cue=0.5,1 --seeds=100,101
  # 2. Report: each method at its chosen setting, scored on the test split with fresh seeds.
  python experiments/study.py --workdir=runs/tuned --choices=runs/tuned/choices.json \
      --split=test --methods=cam,wildcat,excam --body_cue=0.5,1 --seeds=0,1,2,3,4,5,6,7
  # Smoke test (short runs, two methods, the first and the last level; not science):
  python experiments/study.py --workdir=runs/study_quick --quick --seeds=0,1
  # The WSOL benchmark (clovaai/wsolevaluation's protocol): choices on 'val', report on 'test',
  # primary endpoint MaxBoxAccV2 (PxAP on OpenImages); no body_cue levels there.
  python experiments/study.py --tune --config=configs/cub.py --workdir=runs/cub_tuned \
      --set='data.wsol.data_root="DATA",data.wsol.metadata_root="METADATA"' \
      --methods=cam,wildcat,excam --seeds=100
  python experiments/study.py --config=configs/cub.py --workdir=runs/cub_tuned \
      --choices=runs/cub_tuned/choices.json --split=test --methods=cam,wildcat,excam --seeds=200 \
      --set='data.wsol.data_root="DATA",data.wsol.metadata_root="METADATA"'

The primary endpoint, declared before any cell of the tuned study ran: PRIMARY = CorLoc (exact
scoring at the original image size, non-difficult objects; excam_jax/evaluation/evaluator.py).
Every other column is secondary. A report refuses seeds that tuned anything (tuning.csv beside
the choices file), and a method in INHERITS takes the choice of the method it controls (a control
differs from it in one factor only).

One training per cell (method, body_cue, seed, setting), each in its own process under
<workdir>/runs/<method>_cue<c>_seed<s>[_<setting>], then evaluated on the split. A row is written
to <workdir>/study.csv (tuning.csv when tuning) as each cell finishes; a killed study resumes where
it stopped (finished cells are skipped, an unfinished training resumes from its checkpoint). A cell
that fails writes no row: the others go on, and the study names the failed ones at its end (a rerun
retries them). After every cell the tables (study.md: mean +- 95 % t-interval per method and
level; paired differences from the best baseline at each level with the sign-flip p-value and
Benjamini-Hochberg q-values) and study.png are rewritten.

The seed sets both the training seed and the data set's seed, so the intervals cover both.
`body_only` and `part_only` are WILDCAT trained on the probes of the data set (parts painted over,
bodies left out): they certify what each cue carries at a level. Cells run configs/synthetic.py
with CELL (QUICK for --quick) on top; --set=field=value,... adds overrides to every cell (a field a
method tunes cannot be set this way).
"""

import argparse
import concurrent.futures
import csv
import importlib.util
import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time

from experiments import stats
# The catalogue (experiments/grids.py), under the names the study's users know.
from experiments.grids import (  # pylint: disable=unused-import
    BASELINE, BASELINES, GRIDS, INFERENCE_MODEL_FIELDS, INHERITS, KMAX_GRID, METHODS, TRAINED_AS)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Kept under their old names for the scripts that import them from here.
t_quantile, mean_ci, format_ci = stats.t_quantile, stats.mean_ci, stats.format_ci

PRIMARY = 'corloc'  # The primary endpoint: chooses every setting; claims are made on it.

TIMING_FILE = 'train_seconds.json'  # In a cell's run folder: the training's wall time.
# Overrides of every cell, and of --quick. The pooling is configs/synthetic.py's (kmax 0.3) unless
# a tuned setting or --set gives another.
CELL = {'data.parts.num_train': 2000, 'data.parts.num_eval': 300, 'train.num_epochs': 8,
        'optim.warmup_steps': 50, 'train.eval_every_steps': 10 ** 6,
        'train.checkpoint_every_steps': 100}
QUICK = {'data.parts.num_train': 384, 'data.parts.num_eval': 96, 'train.num_epochs': 4,
         'optim.warmup_steps': 10, 'train.eval_every_steps': 10 ** 6,
         'train.checkpoint_every_steps': 24, 'train.log_every_steps': 12}
QUICK_CUES = 2  # --quick runs the first and the last of the --body_cue levels.
QUICK_METHODS = ('wildcat', 'excam')  # --quick's methods unless --methods names others.
SPLITS = ('validation', 'test')  # Roles: 'validation' is the data set's selection split (SELECTION).
DEFAULT_CONFIG = 'configs/synthetic.py'
BASE = DEFAULT_CONFIG  # This study's --config (set by main, passed on to each cell's process).
# The selection split of a data set whose split names differ from the parts data set's.
SELECTION = {'wsol/cub': 'val', 'wsol/ilsvrc': 'val', 'wsol/openimages': 'val',
             'caltech_birds2011': 'val'}
# The primary endpoint of a study on another data set (wsolevaluation's: MaxBoxAccV2 with boxes,
# PxAP with masks); the parts data set's is PRIMARY, declared above.
PRIMARY_OF = {'wsol/cub': 'maxboxaccv2', 'wsol/ilsvrc': 'maxboxaccv2', 'wsol/openimages': 'pxap',
              'caltech_birds2011': 'maxboxaccv2'}
METRICS = ('classification_map', 'corloc', 'maxboxacc', 'maxboxaccv2', 'localization_ap',
           'pointwise_ap', 'pxap', 'parts_body_coverage', 'parts_part_coverage',
           'parts_background_activation', 'parts_argmax_in', 'parts_argmax_body',
           'parts_argmax_outside', 'top1_loc', 'gt_known_loc', 'top1_accuracy')
TEXT_COLUMNS = ('method', 'split', 'setting')
INT_COLUMNS = ('steps', 'cores')  # Read back as ints, so that a rewrite keeps '1008', not '1008.0'.
# cores: the CPU cores of the process that trained the cell (XLA's thread pool: one and two
# threads round differently, so a cell's numbers depend on it as on the machine; NaN in rows
# written before it was recorded, which trained on 2).
COLUMNS = ('method', 'body_cue', 'seed', 'split', 'setting') + METRICS + ('train_s', 'eval_s',
                                                                         'steps', 'cores')
CSV_NAME, MD_NAME, PNG_NAME = 'study.csv', 'study.md', 'study.png'
TUNING_CSV, TUNING_MD, CHOICES_NAME = 'tuning.csv', 'tuning.md', 'choices.json'
TABLE_METRICS = ('classification_map', 'corloc', 'maxboxaccv2', 'pxap', 'parts_body_coverage',
                 'parts_background_activation')


# ------------------------------------------------------------------------------------------------
# Settings: a dict field -> value, written in rows as 'field=json;field=json' (sorted).

def settings_of(grid):
  """Every combination of a search space {field: values}, in grid order; [{}] for an empty one."""
  fields = list(grid)
  return [dict(zip(fields, values)) for values in itertools.product(*(grid[f] for f in fields))]


def setting_text(setting):
  return ';'.join(f'{f}={json.dumps(v)}' for f, v in sorted(setting.items()))


def parse_setting(text):
  out = {}
  for item in filter(None, (text or '').split(';')):
    field, _, value = item.partition('=')
    out[field] = json.loads(value)
  return out


def setting_tag(setting):
  """A folder-name suffix for the setting ('' for none), e.g. 'kmax0.05_acol_threshold0.5'."""
  return '_'.join(f'{f.rpartition(".")[2]}{v}' for f, v in sorted(setting.items()))


def training_part(setting):
  """The fields of a setting that change the training (not eval.* nor inference model fields)."""
  return {f: v for f, v in setting.items()
          if not f.startswith('eval.') and f not in INFERENCE_MODEL_FIELDS}


# ------------------------------------------------------------------------------------------------
# Tables.

def _key(row):
  return (row['method'], float(row['body_cue']), int(row['seed']),
          row.get('split') or 'validation', row.get('setting') or '')


def _methods_in(rows):
  methods = [m for m in METHODS if any(r['method'] == m for r in rows)]
  return methods + sorted({r['method'] for r in rows} - set(methods))


def _cells(rows):
  """(method, body_cue, its rows) for every pair that has rows, methods in METHODS order."""
  for method in _methods_in(rows):
    for cue in sorted({float(r['body_cue']) for r in rows if r['method'] == method}):
      yield method, cue, [r for r in rows if r['method'] == method and float(r['body_cue']) == cue]


def _table_head(columns):
  """A markdown table's header and rule lines."""
  return '| ' + ' | '.join(columns) + ' |', '|' + ' --- |' * len(columns)


def paired_differences(rows, metric, method, baseline=BASELINE):
  """Per body_cue: the per-seed differences method - baseline, over the seeds both ran (rows of
  one split and one setting per method)."""
  table = {(r['method'], float(r['body_cue']), int(r['seed'])): float(r.get(metric, math.nan))
           for r in rows}
  out = {}
  for (name, cue, seed), value in sorted(table.items()):
    if name == method and (baseline, cue, seed) in table:
      out.setdefault(cue, []).append(value - table[(baseline, cue, seed)])
  return out


def best_baseline(rows, cue, metric=None):
  """The baseline (BASELINES) with the highest mean `metric` at `cue` among the rows, or
  BASELINE when none of them ran there (then possibly absent too).

  Taking the best on the reported rows themselves can only favour the baseline: a claim against
  it is conservative. `metric`: PRIMARY if None.
  """
  metric = metric or PRIMARY
  means = {m: stats.mean_ci([r[metric] for r in rows if r['method'] == m
                             and float(r['body_cue']) == cue])[0] for m in BASELINES}
  means = {m: v for m, v in means.items() if math.isfinite(v)}
  return max(means, key=lambda m: (means[m], -BASELINES.index(m))) if means else BASELINE


def comparisons(rows, metrics=TABLE_METRICS, level=0.95):
  """Paired differences of every method from the best baseline at each level.

  Returns:
    One dict per (method, body_cue) with 'baseline', 'n' and per metric a dict of mean, half,
    p (exact sign-flip) and q (Benjamini-Hochberg over every p of the returned list).
  """
  out = []
  for cue in sorted({float(r['body_cue']) for r in rows}):
    baseline = best_baseline(rows, cue)
    for method in _methods_in(rows):
      if method == baseline:
        continue
      entry = {'method': method, 'body_cue': cue, 'baseline': baseline, 'n': 0}
      for metric in metrics:
        diffs = paired_differences(rows, metric, method, baseline).get(cue, [])
        mean, half, n = stats.mean_ci(diffs, level)
        entry['n'] = max(entry['n'], n)
        entry[metric] = {'mean': mean, 'half': half, 'p': stats.sign_flip_p(diffs)}
      if entry['n']:
        out.append(entry)
  cells = [e[m] for e in out for m in metrics]
  for cell, q in zip(cells, stats.bh_qvalues([c['p'] for c in cells])):
    cell['q'] = q
  return out


def markdown(rows, level=0.95, metrics=TABLE_METRICS):
  """The study's tables per split: mean ± interval per (method, cue); paired differences from the
  best baseline at each level with p- and q-values."""
  pct = int(round(level * 100))
  lines = []
  for split in sorted({r.get('split') or 'validation' for r in rows}):
    mine = [r for r in rows if (r.get('split') or 'validation') == split]
    lines += [f'## {split} split', '',
              f'Mean ± half-width of the {pct} % t-interval over seeds (n = seeds); exact scoring, '
              f'non-difficult objects. Primary endpoint: {PRIMARY}; the rest is secondary.', '',
              *_table_head(('method', 'body_cue', 'setting', 'n') + tuple(metrics)
                           + ('train s', 'eval s'))]
    for method, cue, cell in _cells(mine):
      setting = ', '.join(sorted({r.get('setting') or '-' for r in cell}))
      cis = [stats.mean_ci([r.get(m, math.nan) for r in cell], level) for m in metrics]
      train_s = stats.mean_ci([r['train_s'] for r in cell])[0]
      eval_s = stats.mean_ci([r.get('eval_s', math.nan) for r in cell])[0]
      lines.append(f'| {method} | {cue:g} | {setting} | {len(cell)} | '
                   + ' | '.join(stats.format_ci(c[0], c[1]) for c in cis)
                   + f' | {train_s:.0f} | {eval_s:.0f} |')
    found = comparisons(mine, metrics, level)
    if found:
      lines += ['', f'Paired differences from the best baseline at each level (the baseline with '
                f'the highest mean {PRIMARY} among {", ".join(BASELINES)} that ran; method − '
                f'baseline, same seed), mean ± {pct} % t-interval, then the exact sign-flip '
                'p-value and the Benjamini-Hochberg q-value over every comparison of this table.',
                '', *_table_head(('method', 'body_cue', 'baseline', 'n')
                                 + tuple(f'Δ {m} (p, q)' for m in metrics))]
      for e in found:
        lines.append(f"| {e['method']} | {e['body_cue']:g} | {e['baseline']} | {e['n']} | "
                     + ' | '.join(f"{stats.format_difference(e[m]['mean'], e[m]['half'])} "
                                  f"({stats.format_p(e[m]['p'])}, {stats.format_p(e[m]['q'])})"
                                  for m in metrics) + ' |')
    lines.append('')
  return '\n'.join(lines)


def choose(rows, metric=None):
  """The tuned choices: {method: {body_cue text: setting}} maximising the mean `metric` over the
  seeds of each setting (a NaN counts as 0: a failed run is no better); among settings that ran
  on fewer seeds than the method's most, none is chosen; ties go to the earlier grid entry.
  `metric`: PRIMARY if None."""
  metric = metric or PRIMARY
  out = {}
  for method in _methods_in(rows):
    for cue in sorted({float(r['body_cue']) for r in rows if r['method'] == method}):
      cell = [r for r in rows if r['method'] == method and float(r['body_cue']) == cue]
      seeds = {}
      for r in cell:
        value = float(r[metric])
        seeds.setdefault(r.get('setting') or '', []).append(value if math.isfinite(value) else 0.0)
      most = max(len(v) for v in seeds.values())
      order = [setting_text(s) for s in settings_of(GRIDS.get(method, {}))]
      rank = lambda text: order.index(text) if text in order else len(order)
      complete = [t for t, v in seeds.items() if len(v) == most]
      best = max(complete, key=lambda t: (sum(seeds[t]) / most, -rank(t)))
      out.setdefault(method, {})[f'{cue:g}'] = parse_setting(best)
  return out


def tuning_markdown(rows, chosen, level=0.95):
  """Every setting's mean ± interval of the primary endpoint per method and level; the chosen one
  in bold."""
  lines = [f'Tuning on the validation split: mean ± {int(round(level * 100))} % t-interval over '
           f'the tuning seeds of {PRIMARY} (primary; chooses) and of the secondary endpoints.', '',
           *_table_head(('method', 'body_cue', 'setting', 'n') + TABLE_METRICS)]
  for method, cue, cell in _cells(rows):
    for text in sorted({r.get('setting') or '' for r in cell}, key=lambda t: sorted(parse_setting(t).items())):
      mine = [r for r in cell if (r.get('setting') or '') == text]
      cis = [stats.mean_ci([r.get(m, math.nan) for r in mine], level) for m in TABLE_METRICS]
      picked = chosen.get(method, {}).get(f'{cue:g}') == parse_setting(text)
      shown = text or '-'
      lines.append(f"| {method} | {cue:g} | {f'**{shown}**' if picked else shown} | {len(mine)} | "
                   + ' | '.join(stats.format_ci(c[0], c[1]) for c in cis) + ' |')
  return '\n'.join(lines) + '\n'


def plot(rows, path, level=0.95):
  """CorLoc and body coverage against body_cue, one line per method with its interval band."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, metric, title in zip(axes, (PRIMARY, 'parts_body_coverage'),
                               ('CorLoc', 'body coverage (z > 0)')):
    for method in _methods_in(rows):
      cues = sorted({float(r['body_cue']) for r in rows if r['method'] == method})
      cis = [stats.mean_ci([r[metric] for r in rows if r['method'] == method
                            and float(r['body_cue']) == c], level) for c in cues]
      means = [c[0] for c in cis]
      halves = [0.0 if not math.isfinite(c[1]) else c[1] for c in cis]
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
# Results files.

def read_rows(path):
  """The rows of a study's CSV (numbers as floats; seed, steps and cores as ints; rows of older
  studies, which lack the split and setting columns, are validation rows at no setting); [] when
  there is none."""
  if not os.path.exists(path):
    return []
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    for key in COLUMNS:
      if key in TEXT_COLUMNS:
        continue
      value = row.get(key)  # A column an older study did not have is NaN.
      row[key] = float(value) if value not in (None, '', 'nan') else math.nan
      if key in INT_COLUMNS and math.isfinite(row[key]) and row[key] == int(row[key]):
        row[key] = int(row[key])
    row['seed'] = int(row['seed'])
    row['split'] = row.get('split') or 'validation'
    row['setting'] = row.get('setting') or ''
  return rows


def write_rows(path, rows):
  """Rewrites a study's CSV atomically (a killed study never leaves half a line)."""
  from excam_jax.runtime import files  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction='ignore', lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow(row)
  files.write_text(path, out.getvalue())


def cell_name(method, cue, seed, setting=None):
  tag = setting_tag(setting or {})
  return f'{method}_cue{cue:g}_seed{seed}' + (f'_{tag}' if tag else '')


def write_summary(workdir, rows, command, tuning=False):
  """study.md and study.png; when tuning, tuning.md and choices.json instead."""
  from excam_jax.runtime import files  # pylint: disable=g-import-not-at-top
  if tuning:
    chosen = choose(rows)
    files.write_text(os.path.join(workdir, CHOICES_NAME), json.dumps(chosen, indent=2) + '\n')
    files.write_text(os.path.join(workdir, TUNING_MD), f'# Tuning\n\nCommand: `{command}`\n\n'
                     + tuning_markdown(rows, chosen))
    return
  files.write_text(os.path.join(workdir, MD_NAME),
                   f'# Study\n\nCommand: `{command}`\n\n' + markdown(rows))
  plot(rows, os.path.join(workdir, PNG_NAME))


def read_choices(path, methods, cues):
  """{(method, cue): setting} from a choices.json for every method and level asked (a method in
  INHERITS takes its controlled method's); exits with one line when one is missing."""
  try:
    with open(path, encoding='utf-8') as f:
      chosen = json.load(f)
  except (OSError, ValueError) as err:
    sys.exit(f'error: cannot read the choices {path} ({err}); pass the choices.json that '
             '`study.py --tune` wrote.')
  out = {}
  for method in methods:
    source = INHERITS.get(method, method)
    for cue in cues:
      setting = chosen.get(source, {}).get(f'{cue:g}')
      if not isinstance(setting, dict):
        sys.exit(f'error: {path} has no choice for {source} at body_cue {cue:g}; tune it first '
                 f'(study.py --tune --methods={source} --body_cue={cue:g}).')
      out[(method, cue)] = setting
  return out


def tuning_seeds(choices_path):
  """The seeds of the tuning.csv beside a choices file (empty when there is none)."""
  rows = read_rows(os.path.join(os.path.dirname(os.path.abspath(choices_path)), TUNING_CSV))
  return {int(r['seed']) for r in rows}


# ------------------------------------------------------------------------------------------------
# One cell (run in its own process).

def load_config(path=DEFAULT_CONFIG):
  """get_config() of a config file (a path from the repository or the working directory)."""
  full = path if os.path.isabs(path) or os.path.exists(path) else os.path.join(REPO, path)
  spec = importlib.util.spec_from_file_location('_study_base_config', full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def on_parts(config):
  """Whether a base config trains on the parts data set (levels, CELL and QUICK apply)."""
  return config.data.dataset == 'parts'


def set_primary(dataset):
  """The study's primary endpoint for `dataset`: PRIMARY (CorLoc) on parts and VOC, PRIMARY_OF's
  on the WSOL benchmark's sets."""
  global PRIMARY  # pylint: disable=global-statement
  PRIMARY = PRIMARY_OF.get(dataset, 'corloc')
  return PRIMARY


def cell_config(method, cue, seed, quick, extra=(), setting=None, base=None):
  """The base config (configs/synthetic.py unless --config) with the cell's overrides: on the
  parts data set CELL or QUICK, the level and the data seed; then the method's, the training
  seed, --set's and the setting's. `base`: the --config of this study (BASE) if None."""
  config = load_config(base or BASE)
  parts = on_parts(config)
  overrides = dict(QUICK if quick else CELL) if parts else {}
  overrides.update(METHODS[method])
  overrides['train.seed'] = int(seed)
  if parts:
    overrides.update({'data.parts.body_cue': float(cue), 'data.parts.seed': int(seed)})
  overrides.update(dict(extra))
  overrides.update(setting or {})
  for field, value in overrides.items():
    section, _, name = field.rpartition('.')
    node = config
    for part in section.split('.'):
      node = node[part]
    node[name] = value
  return config


def config_checks_validate(config):
  """The package's config check (imported late: the harness runs without JAX loaded)."""
  from excam_jax import config_schema  # pylint: disable=g-import-not-at-top
  config_schema.validate(config)


def train_cell(method, cue, seed, workdir, quick, extra, setting=None):
  """Trains (or resumes, or finds finished) one cell's model: (run folder, steps, train s,
  cores).

  The training time and cores are those of the process that trained it (kept in the run
  folder), so a method that evaluates another's training (TRAINED_AS) reports the same cost.
  """
  config = cell_config(method, cue, seed, quick, extra, setting)
  config_checks_validate(config)
  from excam_jax.runtime import files  # pylint: disable=g-import-not-at-top
  from excam_jax import train  # pylint: disable=g-import-not-at-top
  run_dir = os.path.join(workdir, 'runs', cell_name(method, cue, seed, setting))
  timing = os.path.join(run_dir, TIMING_FILE)
  start = time.perf_counter()
  result = train.train_and_evaluate(config, run_dir)
  train_s, cores = time.perf_counter() - start, len(os.sched_getaffinity(0))
  if os.path.isfile(timing):
    with open(timing, encoding='utf-8') as f:
      kept = json.load(f)
    train_s, cores = kept['train_s'], kept.get('cores', math.nan)
  else:
    files.write_text(timing, json.dumps({'train_s': train_s, 'cores': cores}))
  return run_dir, result['final_step'], train_s, cores


def metrics_row(metrics):
  """The METRICS of a metrics.json (parts_argmax_in's dict becomes three fractions)."""
  where = metrics.get('parts_argmax_in')
  flat = dict(metrics)
  if isinstance(where, dict):
    flat.update(parts_argmax_in=where.get('part'), parts_argmax_body=where.get('body'),
                parts_argmax_outside=where.get('outside'))
  return {k: math.nan if flat.get(k) is None else float(flat[k]) for k in METRICS}


def inference_fields(method, setting):
  """(config.eval fields, inference-only config.model fields) of a method at a setting: what
  scoring its training applies."""
  fields = dict(METHODS[method], **setting)
  expansion = {k.split('.', 1)[1]: v for k, v in fields.items() if k.startswith('eval.')}
  model = {k.split('.', 1)[1]: v for k, v in fields.items() if k in INFERENCE_MODEL_FIELDS}
  return expansion, model


def run_cell(method, cue, seed, workdir, quick, extra, split='validation', setting=None):
  """Trains (or resumes) and evaluates one cell on `split`; returns its row."""
  setting = dict(setting or {})
  from excam_jax.runtime import xla  # pylint: disable=g-import-not-at-top
  xla.configure()  # What the commands do: the measured CPU flags, the compilation cache.
  base = TRAINED_AS.get(method, method)
  run_dir, steps, train_s, cores = train_cell(base, cue, seed, workdir, quick, extra,
                                       training_part(setting))
  from excam_jax import checkpoint_eval  # pylint: disable=g-import-not-at-top
  dataset = load_config(BASE).data.dataset
  scored = SELECTION.get(dataset, split) if split == 'validation' else split
  expansion, model = inference_fields(method, setting)
  own_dir = os.path.join(workdir, 'runs', cell_name(method, cue, seed, setting))
  start = time.perf_counter()
  out_dir = checkpoint_eval.evaluate_checkpoint(
      run_dir, split=scored, figures=0, expansion=expansion, model_overrides=model or None,
      output=os.path.join(own_dir, 'eval' if split == 'validation' else f'eval_{split}'),
      # AdvCAM and AdvCAM + the relative rule climb once per training.
      outputs_cache=(os.path.join(run_dir, 'outputs')
                     if 'advcam' in expansion.get('map_expansion', '') else None))
  eval_s = time.perf_counter() - start
  with open(os.path.join(out_dir, 'metrics.json'), encoding='utf-8') as f:
    metrics = json.load(f)
  row = {'method': method, 'body_cue': float(cue), 'seed': int(seed), 'split': split,
         'setting': setting_text(setting), 'train_s': train_s, 'eval_s': eval_s, 'steps': steps,
         'cores': cores}
  row.update(metrics_row(metrics))
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


def plan(args, parser):
  """The cells to run: (method, body_cue, seed, split, setting) in order, from the flags."""
  try:
    explicit = args.methods is not None
    methods = _parse_list(args.methods, str) if explicit else (
        list(QUICK_METHODS) if args.quick else list(METHODS))
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
  if args.split not in SPLITS:
    parser.error(f'--split is one of {SPLITS}')
  if args.tune and (args.choices or args.split != 'validation'):
    parser.error('--tune chooses on the validation split; it takes neither --choices nor --split')
  if args.quick:
    cues = sorted({cues[0], cues[-1]})[:QUICK_CUES]
  settings = {}
  if args.tune:
    methods = [m for m in methods if m not in INHERITS]
    for m in methods:
      settings[m] = [settings_of(GRIDS.get(m, {}))] * len(cues)
  elif args.choices:
    used = tuning_seeds(args.choices) & set(seeds)
    if used:
      parser.error(f'seeds {sorted(used)} tuned the choices (tuning.csv beside '
                   f'{args.choices}); report with seeds never used for a choice')
    chosen = read_choices(args.choices, methods, cues)
    for m in methods:
      settings[m] = [[chosen[(m, c)]] for c in cues]
  else:
    for m in methods:
      settings[m] = [[{}]] * len(cues)
  tuned = {f for m in methods for per_cue in settings[m] for s in per_cue for f in s}
  clash = sorted(tuned & {f for f, _ in extra})
  if clash:
    parser.error(f'--set gives {clash}, which the settings choose; leave them out of --set')
  if args.tune:  # A level, then a method, is finished before the next: choices come early.
    return [(m, c, s, args.split, setting) for i, c in enumerate(cues) for m in methods
            for setting in settings[m][i] for s in seeds]
  # Seed by seed: whatever has run holds every method for the seeds done (paired differences).
  return [(m, c, s, args.split, setting) for s in seeds for i, c in enumerate(cues)
          for m in methods for setting in settings[m][i]]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--methods', default=None,
                      help=f'comma list of {", ".join(METHODS)} (default: all; with --quick: '
                      f'{",".join(QUICK_METHODS)})')
  parser.add_argument('--body_cue', default='0,0.25,0.5,1', help='comma list of levels in [0, 1]')
  parser.add_argument('--seeds', default='0,1,2', help='comma list of seeds')
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--config', default=DEFAULT_CONFIG,
                      help='the base config of every cell (default: the parts data set). On the '
                      "WSOL benchmark's sets (configs/cub.py, ...) there are no levels (--body_cue "
                      "is ignored), tuning scores their 'val' split and the primary endpoint is "
                      'MaxBoxAccV2 (PxAP on OpenImages)')
  parser.add_argument('--tune', action='store_true',
                      help='run every setting of each method\'s search space (GRIDS) on the '
                      'validation split; writes tuning.csv, tuning.md and choices.json')
  parser.add_argument('--choices', default='', help='choices.json: run each method at its choice')
  parser.add_argument('--split', default='validation', help=f'the split scored: one of {SPLITS}')
  parser.add_argument('--jobs', type=int, default=1,
                      help='cells run at once, each on its own share of the CPU cores (a cell '
                      'whose training another running cell makes waits for it)')
  parser.add_argument('--quick', action='store_true',
                      help=f'short runs at the first and last cue level ({QUICK})')
  parser.add_argument('--set', default='', help='extra overrides: field=json_value,...')
  parser.add_argument('--cell', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  workdir = os.path.abspath(args.workdir)
  extra = _parse_extra(args.set)
  global BASE  # pylint: disable=global-statement
  BASE = args.config
  try:
    base = load_config(BASE)
  except (OSError, AttributeError, SyntaxError, ImportError) as err:
    parser.error(f'cannot read --config={args.config} ({err}); pass a config file such as '
                 'configs/cub.py')
  set_primary(base.data.dataset)
  train_split = dict(extra).get('data.train_split', base.data.train_split)
  if base.data.dataset == 'caltech_birds2011' and args.tune and train_split != 'train_rest':
    parser.error("caltech_birds2011's val split is train[:1000]: tune with "
                 "--set='data.train_split=\"train_rest\"' so that no choice is made on "
                 'training images')
  if not on_parts(base):
    args.body_cue = '0'  # No levels off the parts data set: one column, body_cue 0.
  if args.cell:
    cell = json.loads(args.cell)
    row = run_cell(cell['method'], float(cell['cue']), int(cell['seed']), workdir, args.quick,
                   extra, cell['split'], cell['setting'])
    print('ROW ' + json.dumps(row), flush=True)
    return
  cells = plan(args, parser)
  stop_cells_on_sigterm()
  command = 'python experiments/study.py ' + ' '.join(sys.argv[1:])
  if not 1 <= args.jobs <= len(os.sched_getaffinity(0)):
    parser.error(f'--jobs is between 1 and the {len(os.sched_getaffinity(0))} cores')
  launch = lambda *cell, cpus=None: launch_cell(*cell, workdir, args.quick, args.set, cpus)
  try:
    rows = run_study(workdir, cells, command, launch, tuning=args.tune, jobs=args.jobs)
  except CellFailed as err:
    sys.exit(f'error: {err} Rerun the same command to resume.')
  print(f'{len(rows)} rows in {os.path.join(workdir, TUNING_CSV if args.tune else CSV_NAME)}; '
        f'tables in {os.path.join(workdir, TUNING_MD if args.tune else MD_NAME)}')


def stop_cells_on_sigterm():
  """SIGTERM unwinds the study like Ctrl-C, so that `launch_cell` stops the running cell too
  (with SIGTERM: it saves its checkpoint) instead of leaving it running alone."""
  signal.signal(signal.SIGTERM, lambda *_: sys.exit('stopped: SIGTERM; rerun the same command '
                                                    'to resume.'))


class CellFailed(Exception):
  """A cell's process failed; the message names its log."""


_RUNNING = set()  # The cells' processes now running (stopped with the study).


def launch_cell(method, cue, seed, split, setting, workdir, quick, extra_text, cpus=None):
  """Runs one cell in its own process (stderr to its log), on the cores `cpus` (a set; all if
  None: XLA sizes its thread pool to them); returns its row."""
  cell = json.dumps({'method': method, 'cue': cue, 'seed': seed, 'split': split,
                     'setting': setting})
  cmd = [sys.executable, os.path.abspath(__file__), f'--cell={cell}', f'--workdir={workdir}',
         f'--set={extra_text}', f'--config={BASE}'] + (['--quick'] if quick else [])
  log_path = os.path.join(workdir, 'runs', cell_name(method, cue, seed, setting) + '.log')
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, 'a', encoding='utf-8') as log:
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO), preexec_fn=pin)
    _RUNNING.add(proc)
    try:
      stdout, _ = proc.communicate()
    finally:  # Stopped (Ctrl-C, SIGTERM): the cell stops too, saving its checkpoint.
      _RUNNING.discard(proc)
      if proc.poll() is None:
        proc.terminate()
        proc.wait()
  found = [line[4:] for line in stdout.splitlines() if line.startswith('ROW ')]
  if proc.returncode or not found:
    raise CellFailed(f'cell {cell_name(method, cue, seed, setting)} ({split}) failed (exit '
                     f'{proc.returncode}); see {log_path}.')
  return json.loads(found[-1])


def run_study(workdir, cells, command, launch, tuning=False, jobs=1):
  """Runs the cells not in the study's CSV yet, writing each row as it comes.

  Args:
    workdir: the study's folder.
    cells: (method, body_cue, seed[, split, setting]) tuples, in order.
    command: the command line, for the tables.
    launch: (the cell's tuple, cpus=set or None) -> row dict (`launch_cell`, or a fake in tests).
    tuning: rows go to tuning.csv, tables to tuning.md and choices.json.
    jobs: cells run at once (started in order), each on its own share of the cores; a cell
      whose training another running cell makes (an inference variant, TRAINED_AS) waits for it.
      Rows are written in the order the cells finish.

  Returns:
    All rows of the CSV.

  Raises:
    CellFailed: after every other cell ran, naming each cell that failed (it wrote no row; a
      rerun of the same command retries it).
  """
  os.makedirs(workdir, exist_ok=True)
  csv_path = os.path.join(workdir, TUNING_CSV if tuning else CSV_NAME)
  rows = read_rows(csv_path)
  done = {_key(r) for r in rows}
  todo = []
  for cell in cells:
    method, cue, seed = cell[:3]
    split, setting = (cell[3], cell[4]) if len(cell) > 3 else ('validation', {})
    if (method, float(cue), int(seed), split, setting_text(setting)) not in done:
      todo.append((cell, split, setting))

  def finished(cell, split, setting, row, seconds):
    method, cue, seed = cell[:3]
    row.update(split=split, setting=setting_text(setting))
    rows.append(row)
    write_rows(csv_path, rows)
    write_summary(workdir, rows, command, tuning)
    print(f'{cell_name(method, cue, seed, setting)} ({split}): {PRIMARY} {row[PRIMARY]:.3f}, '
          f'body coverage {row["parts_body_coverage"]:.3f} ({seconds:.0f} s)', flush=True)

  failures = []

  def failed(err):  # The other cells go on; the study names it at its end.
    failures.append(str(err))
    print(f'error: {err}', flush=True)

  if jobs == 1:
    for cell, split, setting in todo:
      started = time.perf_counter()
      try:
        row = launch(*cell)
      except CellFailed as err:
        failed(err)
        continue
      finished(cell, split, setting, row, time.perf_counter() - started)
  else:
    _run_parallel(todo, launch, jobs, finished, failed)
  if rows:
    write_summary(workdir, rows, command, tuning)
  if failures:
    raise CellFailed(f'{len(failures)} cell(s) failed and wrote no row: ' + ' '.join(failures))
  return rows


def core_shares(jobs, cores=None):
  """The cores split into `jobs` disjoint sets of (nearly) equal size."""
  cores = sorted(os.sched_getaffinity(0) if cores is None else cores)
  return [set(cores[i::jobs]) for i in range(jobs)]


def training_key(cell):
  """What a cell trains: cells with one key share a run folder (and AdvCAM's outputs cache)."""
  method, cue, seed = cell[:3]
  setting = cell[4] if len(cell) > 4 else {}
  return (TRAINED_AS.get(method, method), float(cue), int(seed),
          setting_text(training_part(setting)))


def _run_parallel(todo, launch, jobs, finished, failed):
  """`jobs` cells at once, started in order, each on a free share of the cores; a cell that
  fails goes to `failed` (its CellFailed) and the others go on."""
  free, running = core_shares(jobs), {}
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    try:
      while todo or running:
        busy = {training_key(item[0]) for item in running.values()}
        ready = next((i for i, item in enumerate(todo) if training_key(item[0]) not in busy
                      and not any(training_key(other[0]) == training_key(item[0])
                                  for other in todo[:i])), None)
        if free and ready is not None:
          item = todo.pop(ready)
          cpus = free.pop()
          future = pool.submit(launch, *item[0], cpus=cpus)
          running[future] = (*item, cpus, time.perf_counter())
          continue
        done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          cell, split, setting, cpus, started = running.pop(future)
          free.append(cpus)
          try:
            row = future.result()
          except CellFailed as err:
            failed(err)
            continue
          finished(cell, split, setting, row, time.perf_counter() - started)
    finally:  # A stop (Ctrl-C, SIGTERM): the running cells stop too (saving checkpoints).
      for proc in list(_RUNNING):
        if proc.poll() is None:
          proc.terminate()


if __name__ == '__main__':
  main()
