"""Tests of the study harness (experiments/study.py) and the claim (experiments/claim.py)."""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from experiments import study


def test_mean_ci_by_hand():
  # Values 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302653: half-width 4.302653 / sqrt(3).
  mean, half, n = study.mean_ci([1.0, 2.0, 3.0])
  assert (mean, n) == (2.0, 3)
  assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
  mean, half, n = study.mean_ci([0.5, float('nan')])
  assert (mean, n) == (0.5, 1) and math.isnan(half)
  assert study.mean_ci([])[2] == 0


def _row(method, cue, seed, corloc, body=0.5, split='validation', setting=''):
  row = {m: 0.5 for m in study.METRICS}
  row.update(method=method, body_cue=cue, seed=seed, corloc=corloc, parts_body_coverage=body,
             train_s=10.0, eval_s=1.0, steps=100, split=split, setting=setting)
  return row


def test_paired_differences_use_common_seeds():
  rows = [_row('wildcat', 0.5, 0, 0.2), _row('wildcat', 0.5, 1, 0.3), _row('excam', 0.5, 0, 0.5),
          _row('excam', 0.5, 1, 0.4), _row('excam', 0.5, 2, 0.9), _row('excam', 1.0, 0, 0.1)]
  diffs = study.paired_differences(rows, 'corloc', 'excam')
  assert diffs.keys() == {0.5}  # No WILDCAT run at cue 1; seed 2 has no partner.
  assert diffs[0.5] == pytest.approx([0.3, 0.1])
  text = study.markdown(rows)
  # Paired mean 0.2, sd 0.141421, t_{0.975, 1} = 12.7062: half-width 12.7062 * 0.1 = 1.271;
  # 2 pairs, both positive: sign-flip p = 2 / 4.
  assert '| excam | 0.5 | wildcat | 2 | +0.000, not resolved (±0.000) (1.000, 1.000) | ' in text
  assert '| +0.200, not resolved (±1.271) (0.500, 1.000) |' in text  # q = min(1, 0.5 * 6 / 1).
  assert '| wildcat | 0.5 | - | 2 | 0.500 ± 0.000 | 0.250 ± 0.635 |' in text
  assert 'ties' not in text


def test_best_baseline_and_comparisons_by_hand():
  rows = []
  for seed, (wildcat, acol, excam) in enumerate([(0.2, 0.6, 0.7), (0.3, 0.5, 0.9),
                                                  (0.1, 0.7, 0.8)]):
    rows += [_row('wildcat', 0.5, seed, wildcat), _row('acol', 0.5, seed, acol),
             _row('excam', 0.5, seed, excam)]
  # ACoL's mean 0.6 beats WILDCAT's 0.2: it is the baseline at 0.5.
  assert study.best_baseline(rows, 0.5) == 'acol'
  assert study.best_baseline([_row('excam', 1.0, 0, 0.5)], 1.0) == 'wildcat'
  found = {e['method']: e for e in study.comparisons(rows, metrics=('corloc',))}
  assert set(found) == {'wildcat', 'excam'} and found['excam']['baseline'] == 'acol'
  # excam - acol = 0.1, 0.4, 0.1: all positive, p = 2 / 8; wildcat - acol = -0.4, -0.2, -0.6:
  # p = 2 / 8. Both q = 0.25 (m = 2: 0.25 * 2 / 2).
  assert found['excam']['corloc']['mean'] == pytest.approx(0.2)
  assert found['excam']['corloc']['p'] == pytest.approx(0.25)
  assert found['wildcat']['corloc']['q'] == pytest.approx(0.25)


def test_settings_roundtrip_and_grid():
  grid = {'model.kmax': (0.05, 0.3), 'model.adl_gamma': (0.9,)}
  assert study.settings_of(grid) == [{'model.kmax': 0.05, 'model.adl_gamma': 0.9},
                                     {'model.kmax': 0.3, 'model.adl_gamma': 0.9}]
  assert study.settings_of({}) == [{}]
  setting = {'model.kmax': 0.05, 'eval.map_expansion': 'relative'}
  text = study.setting_text(setting)
  assert text == 'eval.map_expansion="relative";model.kmax=0.05'
  assert study.parse_setting(text) == setting and study.parse_setting('') == {}
  assert study.setting_tag(setting) == 'map_expansionrelative_kmax0.05'
  assert study.training_part(dict(setting, **{'model.acol_fusion': 'logits'})) == {
      'model.kmax': 0.05}
  assert study.cell_name('acol', 0.5, 3, {'model.kmax': 0.1}) == 'acol_cue0.5_seed3_kmax0.1'
  assert study.cell_name('acol', 0.5, 3) == 'acol_cue0.5_seed3'
  for method in study.METHODS:  # Every method tunes, inherits, or has an empty space.
    assert method in study.GRIDS or method in study.INHERITS, method
  for control, source in study.INHERITS.items():
    assert control not in study.GRIDS and source in study.GRIDS


def test_choose_by_hand():
  k = lambda v: study.setting_text({'model.kmax': v})
  rows = [_row('wildcat', 0.5, 0, 0.4, setting=k(0.05)), _row('wildcat', 0.5, 1, 0.6, setting=k(0.05)),
          _row('wildcat', 0.5, 0, 0.7, setting=k(0.3)), _row('wildcat', 0.5, 1, 0.2, setting=k(0.3)),
          _row('wildcat', 0.5, 0, 0.99, setting=k(0.1)),  # One seed of two: not chosen.
          # A tie (means 0.5) goes to the earlier grid entry (0.015); a NaN counts as 0.
          _row('excam', 1.0, 0, 0.5, setting=k(0.2)), _row('excam', 1.0, 0, 0.5, setting=k(0.015)),
          _row('excam', 1.0, 0, float('nan'), setting=k(0.3)), _row('cam', 1.0, 0, 0.3)]
  assert study.choose(rows) == {'wildcat': {'0.5': {'model.kmax': 0.05}},
                                'excam': {'1': {'model.kmax': 0.015}}, 'cam': {'1': {}}}
  text = study.tuning_markdown(rows, study.choose(rows))
  assert '| wildcat | 0.5 | **model.kmax=0.05** | 2 | ' in text
  assert '| wildcat | 0.5 | model.kmax=0.3 | 2 | ' in text


def _args(**kw):
  base = dict(methods=None, body_cue='0.5,1', seeds='0,1', quick=False, set='', tune=False,
              choices='', split='validation')
  base.update(kw)
  return argparse.Namespace(**base)


class _Parser:

  def error(self, message):
    raise SystemExit(message)


def test_plan_tune_choices_and_refusals(tmp_path):
  cells = study.plan(_args(methods='wildcat,excam_hard,cam', tune=True, seeds='100'), _Parser())
  # The control inherits: not tuned. WILDCAT runs its 5 pooling settings per level, CAM one.
  assert {c[0] for c in cells} == {'wildcat', 'cam'}
  assert len(cells) == 2 * (len(study.KMAX_GRID) + 1)
  assert all(c[3] == 'validation' for c in cells)
  chosen = {'wildcat': {'0.5': {'model.kmax': 0.1}, '1': {'model.kmax': 0.3}},
            'excam': {'0.5': {'model.kmax': 0.05}, '1': {'model.kmax': 0.2}}}
  (tmp_path / 'choices.json').write_text(json.dumps(chosen))
  study.write_rows(str(tmp_path / study.TUNING_CSV), [_row('wildcat', 0.5, 100, 0.5)])
  path = str(tmp_path / 'choices.json')
  cells = study.plan(_args(methods='wildcat,excam_m4', choices=path, split='test'), _Parser())
  assert ('excam_m4', 1.0, 0, 'test', {'model.kmax': 0.2}) in cells  # excam's choice.
  assert ('wildcat', 0.5, 1, 'test', {'model.kmax': 0.1}) in cells and len(cells) == 8
  with pytest.raises(SystemExit, match=r'seeds \[100\] tuned'):
    study.plan(_args(methods='wildcat', choices=path, split='test', seeds='3,100'), _Parser())
  with pytest.raises(SystemExit, match='no choice for cam'):
    study.plan(_args(methods='cam', choices=path, split='test'), _Parser())
  with pytest.raises(SystemExit, match='model.kmax'):
    study.plan(_args(methods='wildcat', tune=True, set='model.kmax=0.3'), _Parser())
  with pytest.raises(SystemExit, match='validation'):
    study.plan(_args(methods='wildcat', tune=True, split='test'), _Parser())
  quick = study.plan(_args(quick=True, body_cue='0,0.5,1'), _Parser())
  assert {c[0] for c in quick} == set(study.QUICK_METHODS) and {c[1] for c in quick} == {0.0, 1.0}


def test_study_appends_rows_and_resumes(tmp_path, capsys):
  cells = [('wildcat', 0.0, 0), ('excam', 0.0, 0), ('wildcat', 1.0, 0), ('excam', 1.0, 0)]
  launched = []

  def launch(method, cue, seed):
    launched.append((method, cue, seed))
    if len(launched) == 3:
      raise study.CellFailed('killed')
    return _row(method, cue, seed, corloc=0.1 * len(launched))

  # The failed cell writes no row; the cell after it still runs, and the study then names it.
  with pytest.raises(study.CellFailed, match=r'1 cell\(s\) failed and wrote no row: killed'):
    study.run_study(str(tmp_path), cells, 'cmd', launch)
  assert len(launched) == 4
  assert [(r['method'], r['body_cue'], r['seed'])
          for r in study.read_rows(str(tmp_path / study.CSV_NAME))] == [cells[i] for i in (0, 1, 3)]
  launched.clear()
  rows = study.run_study(str(tmp_path), cells, 'cmd',
                         lambda *c: launched.append(c) or _row(*c, corloc=0.7))
  assert launched == [cells[2]]  # Only the failed cell reruns.
  assert [(r['method'], r['body_cue'], r['seed']) for r in rows] == [cells[i] for i in (0, 1, 3, 2)]
  assert [r['corloc'] for r in rows] == pytest.approx([0.1, 0.2, 0.4, 0.7])
  assert (tmp_path / study.MD_NAME).read_text().startswith('# Study\n\nCommand: `cmd`')
  assert (tmp_path / study.PNG_NAME).stat().st_size > 1000
  capsys.readouterr()


def test_tuning_writes_choices_and_resumes_per_setting(tmp_path, capsys):
  s = lambda v: {'model.kmax': v}
  cells = [('wildcat', 0.5, 7, 'validation', s(v)) for v in (0.05, 0.3)]
  corloc = {0.05: 0.4, 0.3: 0.6}
  rows = study.run_study(str(tmp_path), cells, 'cmd',
                         lambda m, c, seed, split, setting: _row(m, c, seed, corloc[setting['model.kmax']]),
                         tuning=True)
  assert [r['setting'] for r in rows] == ['model.kmax=0.05', 'model.kmax=0.3']
  assert json.loads((tmp_path / study.CHOICES_NAME).read_text()) == {
      'wildcat': {'0.5': {'model.kmax': 0.3}}}
  again = study.run_study(str(tmp_path), cells, 'cmd', lambda *c: pytest.fail('reran'), tuning=True)
  assert len(again) == 2 and (tmp_path / study.TUNING_MD).exists()
  assert not (tmp_path / study.CSV_NAME).exists()
  capsys.readouterr()


def test_metrics_row_flattens_argmax_and_fills_nan():
  row = study.metrics_row({'corloc': 0.5, 'parts_argmax_in': {'part': 0.25, 'body': 0.5,
                                                               'outside': 0.25}})
  assert row['corloc'] == 0.5 and row['parts_argmax_in'] == 0.25
  assert row['parts_argmax_body'] == 0.5 and math.isnan(row['pxap'])


def test_read_rows_of_an_older_study(tmp_path):
  path = tmp_path / 'old.csv'
  path.write_text('method,body_cue,seed,corloc,train_s\nwildcat,0.5,1,0.25,9\n')
  [row] = study.read_rows(str(path))
  assert row['split'] == 'validation' and row['setting'] == '' and row['corloc'] == 0.25
  assert math.isnan(row['pxap'])  # A column the older study lacked.
  # Its rows and new ones (with the column) make one table, and dicts without it pair too.
  new = _row('excam', 0.5, 1, 0.5)
  text = study.markdown([row, new, {k: v for k, v in _row('wildcat', 1.0, 1, 0.2).items()
                                    if k != 'pxap'}, _row('excam', 1.0, 1, 0.4)])
  assert '| excam | 0.5 | wildcat | 1 | ' in text


def test_rewriting_rows_keeps_their_text(tmp_path):
  # A resumed study rewrites the rows it read: integer columns stay integers, NaN stays NaN.
  path = str(tmp_path / study.CSV_NAME)
  study.write_rows(path, [dict(_row('wildcat', 0.75, 200, 0.25), steps=1008, cores=1),
                          dict(_row('excam', 0.75, 200, 0.5), steps=1008, cores=math.nan)])
  text = open(path, encoding='utf-8').read()
  rows = study.read_rows(path)
  assert rows[0]['steps'] == 1008 and isinstance(rows[0]['cores'], int)
  assert math.isnan(rows[1]['cores'])
  study.write_rows(path, rows)
  assert open(path, encoding='utf-8').read() == text
  assert ',1008,1\n' in text


def test_cell_config_sets_method_cue_and_seed():
  config = study.cell_config('excam', 0.25, 3, quick=True, extra=[('model.num_maps', 4)])
  assert config.model.head == 'excam' and config.model.self_drop is False
  assert config.data.parts.body_cue == 0.25
  assert config.train.seed == 3 and config.data.parts.seed == 3
  assert config.data.parts.num_train == study.QUICK['data.parts.num_train']
  assert config.model.num_maps == 4
  assert config.model.kmax == 0.3  # configs/synthetic.py's pooling unless a setting gives one.
  tuned = study.cell_config('wildcat', 1.0, 0, quick=False, setting={'model.kmax': 0.05})
  assert tuned.model.kmax == 0.05
  probe = study.cell_config('body_only', 0.5, 0, quick=False)
  assert probe.data.parts.probe == 'body_only' and probe.model.head == 'wildcat'
  assert study.cell_config('excam_d07', 0.5, 0, quick=True).model.drop_threshold == 0.7


def test_inference_only_methods_share_their_base_training():
  for method, base in study.TRAINED_AS.items():
    mine, theirs = study.cell_config(method, 0.5, 1, quick=True), study.cell_config(base, 0.5, 1,
                                                                                     quick=True)
    for field in [f for f in mine.eval if f.startswith('map_expansion')]:
      mine.eval[field] = theirs.eval[field]
    for field in study.INFERENCE_MODEL_FIELDS:
      section, _, name = field.partition('.')
      mine[section][name] = theirs[section][name]
    assert mine.to_dict() == theirs.to_dict(), method  # Only inference differs.
  for method in study.METHODS:  # Every method's config passes the config check.
    study.config_checks_validate(study.cell_config(method, 0.5, 0, quick=True))


def _claim_rows(gains, base=0.5, base_map=0.98, mine_map=0.98, method='excam', full=(0.80, 0.78)):
  """Test rows at body_cue 0.5 (the method gains `gains` over WILDCAT's `base`) and, unless `full`
  is None, at body_cue 1 (the method's and WILDCAT's CorLoc there, the same on every seed)."""
  rows = []
  for seed, gain in enumerate(gains):
    rows.append(dict(_row('wildcat', 0.5, seed, base, split='test'), classification_map=base_map))
    rows.append(dict(_row(method, 0.5, seed, base + gain, split='test'),
                     classification_map=mine_map, train_s=20.0))
    if full is not None:
      rows.append(_row(method, 1.0, seed, full[0], split='test'))
      rows.append(_row('wildcat', 1.0, seed, full[1], split='test'))
  return rows


def test_claim_criteria_by_hand():
  from experiments import claim  # pylint: disable=g-import-not-at-top
  gains = [0.1, 0.2, 0.15, 0.1, 0.2, 0.15, 0.1, 0.2]  # Mean 0.15, all positive: p = 2 / 256.
  rows = _claim_rows(gains) + [_row('wildcat', 0.5, 0, 0.1)]  # A validation row: left out.
  found = claim.claims(rows)[0]
  assert found['baseline'] == 'wildcat' and found['seeds'] == 8 and found['wins'] == 8
  assert found['corloc'][0] == pytest.approx(0.65) and found['gain'][0] == pytest.approx(0.15)
  assert found['p'] == pytest.approx(2 / 256) and found['train_ratio'] == pytest.approx(2.0)
  # At body_cue 1 the method itself is the best (WILDCAT 0.02 below it): gap 0, one training.
  assert found['full_cue_best'] == 'excam' and found['full_cue_gap'] == pytest.approx(0.0)
  assert found['trainings'] == 1
  assert found['met'] and claim.best([found])['method'] == 'excam'
  # Each criterion alone breaks it: 7 seeds; a mean gain under 0.10; CorLoc under 0.55; a seed
  # losing twice (6 of 8 gaining); a mAP cost above 0.02.
  assert not claim.claims(_claim_rows(gains[:7]))[0]['met']
  assert not claim.claims(_claim_rows([g - 0.07 for g in gains]))[0]['met']
  assert not claim.claims(_claim_rows(gains, base=0.35))[0]['met']
  assert not claim.claims(_claim_rows([0.3, 0.3, 0.3, 0.3, 0.3, 0.3, -0.01, -0.01]))[0]['met']
  assert not claim.claims(_claim_rows(gains, mine_map=0.95))[0]['met']
  # At body_cue 1: WILDCAT 0.04 above the method breaks it, 0.02 above does not; no rows there
  # break it; a method training two networks (ACoL's heads) breaks it.
  behind = claim.claims(_claim_rows(gains, full=(0.74, 0.78)))[0]
  assert behind['full_cue_best'] == 'wildcat' and behind['full_cue_gap'] == pytest.approx(0.04)
  assert not behind['met']
  assert claim.claims(_claim_rows(gains, full=(0.76, 0.78)))[0]['met']
  absent = claim.claims(_claim_rows(gains, full=None))[0]
  assert absent['full_cue_best'] is None and not absent['met']
  assert 'no body_cue 1 rows' in claim.markdown([absent])
  # A missing background activation is no evidence of "no worse"; a seed whose CorLoc is
  # missing is no seed (7 left).
  no_bg = [dict(r, parts_background_activation=math.nan) for r in _claim_rows(gains)]
  assert not claim.claims(no_bg)[0]['met']
  holed = _claim_rows(gains)
  holed[1] = dict(holed[1], corloc=math.nan)  # The method's row at body_cue 0.5, seed 0.
  assert claim.claims(holed)[0]['seeds'] == 7 and not claim.claims(holed)[0]['met']
  two = claim.claims(_claim_rows(gains, method='acol_excam'))[0]
  assert two['trainings'] == 2 and not two['met']
  assert claim.trainings('acol_zero') == 2 and claim.trainings('wildcat_relative') == 1
  # A better baseline present at that level is the one compared with.
  acol = [dict(_row('acol', 0.5, s, 0.7, split='test')) for s in range(8)]
  vs_acol = claim.claims(_claim_rows(gains) + acol)[0]
  assert vs_acol['baseline'] == 'acol' and not vs_acol['met']
  assert '| excam | 0.5 | wildcat | 8 | 0.650 ± ' in claim.markdown([found])
  assert '| +0.000 (excam) | 1 | 2.00 |' in claim.markdown([found])


def test_a_stopped_study_stops_its_running_cell(tmp_path):
  # A stand-in cell that writes its pid and sleeps; the study process launches it as a cell.
  cell = tmp_path / 'cell.py'
  cell.write_text(
      'import os, signal, sys, time\n'
      f'signal.signal(signal.SIGTERM, lambda *_: (open({str(tmp_path / "term")!r}, "w").close(), '
      'sys.exit(143)))\n'
      f'open({str(tmp_path / "pid")!r}, "w").write(str(os.getpid()))\n'
      'time.sleep(60)\n')
  driver = tmp_path / 'driver.py'
  driver.write_text(
      'from experiments import study\n'
      f'study.__file__ = {str(cell)!r}\n'
      'study.stop_cells_on_sigterm()\n'
      f'study.launch_cell("wildcat", 0.5, 0, "validation", {{}}, {str(tmp_path)!r}, True, "")\n')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(study.__file__)))
  proc = subprocess.Popen([sys.executable, str(driver)], cwd=repo,
                          env=dict(os.environ, PYTHONPATH=repo), stderr=subprocess.PIPE)
  deadline = time.time() + 30
  while not (tmp_path / 'pid').exists() and time.time() < deadline:
    time.sleep(0.1)
  child = int((tmp_path / 'pid').read_text())
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=30) != 0 and b'stopped: SIGTERM' in proc.stderr.read()
  time.sleep(0.5)
  assert (tmp_path / 'term').exists()  # The cell got SIGTERM (it saves a checkpoint), not SIGKILL.
  with pytest.raises(ProcessLookupError):  # The cell is gone, not left running alone.
    os.kill(child, 0)


def test_parallel_jobs_use_disjoint_cores_and_wait_for_a_shared_training(tmp_path):
  """--jobs=2: two cells at once on disjoint core sets; wildcat_relative (which evaluates
  wildcat's training) never runs beside the wildcat cell that makes that training."""
  cells = [('wildcat', 0.5, 0, 'validation', {}), ('wildcat_relative', 0.5, 0, 'validation', {}),
           ('excam', 0.5, 0, 'validation', {}), ('excam', 0.5, 1, 'validation', {})]
  lock, active, overlaps, seen = threading.Lock(), {}, [], []

  def launch(method, cue, seed, split, setting, cpus=None):
    with lock:
      for other, other_cpus in active.values():
        overlaps.append((other, method, bool(other_cpus & cpus)))
      active[(method, seed)] = (method, cpus)
      seen.append(method)
    time.sleep(0.2 if method == 'wildcat' else 0.05)
    with lock:
      del active[(method, seed)]
    return _row(method, cue, seed, corloc=0.5)

  rows = study.run_study(str(tmp_path), cells, 'cmd', launch, jobs=2)
  assert sorted((r['method'], r['seed']) for r in rows) == sorted(
      (c[0], c[2]) for c in cells)
  assert overlaps and not any(shared for _, _, shared in overlaps)  # Disjoint cores.
  assert ('wildcat', 'wildcat_relative', False) not in overlaps
  assert ('wildcat_relative', 'wildcat', False) not in overlaps
  assert seen.index('wildcat_relative') > seen.index('wildcat')
  assert study.core_shares(2, {0, 1, 2}) == [{0, 2}, {1}]
  assert len(study.read_rows(os.path.join(tmp_path, study.CSV_NAME))) == 4


def test_a_failed_parallel_cell_does_not_stop_the_others(tmp_path):
  cells = [('wildcat', 0.5, s, 'validation', {}) for s in range(4)]

  def launch(method, cue, seed, split, setting, cpus=None):
    if seed in (1, 2):
      raise study.CellFailed(f'cell {seed} failed (exit 1); see its log.')
    return _row(method, cue, seed, corloc=0.5)

  with pytest.raises(study.CellFailed, match=r'2 cell\(s\) failed and wrote no row: cell [12] '):
    study.run_study(str(tmp_path), cells, 'cmd', launch, jobs=2)
  kept = study.read_rows(os.path.join(tmp_path, study.CSV_NAME))
  assert sorted(int(r['seed']) for r in kept) == [0, 3]  # The rest ran and is kept.


def test_tunes_on_val_and_reports_on_test_on_a_wsol_benchmark_set(tmp_path):
  """--config=configs/cub.py on a tiny CUB tree: no levels, tuning scores 'val' and chooses by
  MaxBoxAccV2; the report scores 'test' and refuses the tuning seed."""
  sys.path.insert(0, os.path.dirname(__file__))
  from wsol_test import cub_tree  # pylint: disable=g-import-not-at-top
  cub_tree(str(tmp_path / 'tree'))
  tiny = ','.join([f'data.wsol.data_root="{tmp_path / "tree" / "data"}"',
                   f'data.wsol.metadata_root="{tmp_path / "tree" / "metadata"}"',
                   'data.image_size=32', 'data.wsol.resize_size=40', 'model.depth=18',
                   'model.width=8', 'train.batch_size=2', 'eval.batch_size=4',
                   'train.num_epochs=1'])
  work = tmp_path / 'study'
  common = [sys.executable, os.path.join(study.REPO, 'experiments', 'study.py'),
            f'--workdir={work}', '--config=configs/cub.py', '--methods=cam', f'--set={tiny}']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  tuned = subprocess.run(common + ['--tune', '--seeds=0'], capture_output=True, text=True,
                         env=env, timeout=900)
  assert tuned.returncode == 0, tuned.stderr[-2000:]
  (row,) = study.read_rows(os.path.join(work, study.TUNING_CSV))
  assert (row['split'], row['body_cue']) == ('validation', 0.0)
  assert 0.0 <= row['maxboxaccv2'] <= 1.0 and math.isnan(row['corloc'])
  assert os.path.isfile(work / 'runs' / 'cam_cue0_seed0' / 'eval' / 'metrics.json')
  with open(work / 'runs' / 'cam_cue0_seed0' / 'eval' / 'metrics.json') as f:
    assert json.load(f)['split'] == 'val'
  with open(work / study.CHOICES_NAME) as f:
    assert json.load(f) == {'cam': {'0': {}}}
  refused = subprocess.run(common + [f'--choices={work / study.CHOICES_NAME}', '--split=test',
                                     '--seeds=0'], capture_output=True, text=True, env=env,
                           timeout=120)
  assert refused.returncode != 0 and 'seeds [0] tuned the choices' in refused.stderr
  report = subprocess.run(common + [f'--choices={work / study.CHOICES_NAME}', '--split=test',
                                    '--seeds=1'], capture_output=True, text=True, env=env,
                          timeout=900)
  assert report.returncode == 0, report.stderr[-2000:]
  (row,) = study.read_rows(os.path.join(work, study.CSV_NAME))
  assert (row['split'], row['seed']) == ('test', 1) and 0.0 <= row['top1_accuracy'] <= 1.0
  assert 'Primary endpoint: maxboxaccv2' in (work / study.MD_NAME).read_text()


def test_overlays_resolve_each_methods_training_and_inference_fields(tmp_path):
  from experiments import compare_maps  # pylint: disable=g-import-not-at-top
  choices = tmp_path / 'choices.json'
  choices.write_text(json.dumps({
      'acol_zero': {'0.75': {'model.kmax': 0.2, 'model.acol_threshold': 0.7}},
      'wildcat': {'0.75': {'model.kmax': 0.3}},
      'wildcat_cluster': {'0.75': {'model.kmax': 0.1, 'eval.map_expansion_temperature': 5.0}}}))
  runs = compare_maps.study_runs('w', str(choices), ['acol_zero', 'wildcat_advcam',
                                                      'wildcat_cluster'], 0.75, 200)
  assert runs == [
      ('acol_zero', os.path.join('w', 'runs', 'acol_cue0.75_seed200_acol_threshold0.7_kmax0.2'),
       {}, {'acol_fusion': 'logits'}),
      # AdvCAM climbs the tuned WILDCAT's training (it inherits WILDCAT's choice).
      ('wildcat_advcam', os.path.join('w', 'runs', 'wildcat_cue0.75_seed200_kmax0.3'),
       {'map_expansion': 'advcam'}, {}),
      ('wildcat_cluster', os.path.join('w', 'runs', 'wildcat_cue0.75_seed200_kmax0.1'),
       {'map_expansion': 'cluster', 'map_expansion_temperature': 5.0}, {})]
  with pytest.raises(SystemExit, match='no choice for excam at body_cue 0.75'):
    compare_maps.study_runs('w', str(choices), ['excam'], 0.75, 200)


def test_cpu_hours_count_a_shared_training_once(tmp_path):
  from experiments import cost  # pylint: disable=g-import-not-at-top
  kmax = lambda k: f'model.kmax={k}'
  rows = [dict(_row('wildcat', 0.5, 0, 0.4, setting=kmax(0.2)), train_s=100.0, eval_s=10.0,
               cores=1.0),
          # Evaluates the row above's training: only its own 20 s count.
          dict(_row('wildcat_relative', 0.5, 0, 0.4, setting=kmax(0.2)), train_s=100.0,
               eval_s=20.0, cores=1.0),
          # A training no WILDCAT row ran (kmax 0.3): the first row that evaluates it counts it,
          # the second (an eval.* field is no training field) only its evaluation.
          dict(_row('wildcat_relative', 0.5, 0, 0.4, setting=kmax(0.3)), train_s=80.0,
               eval_s=4.0, cores=1.0),
          dict(_row('wildcat_cluster', 0.5, 0, 0.4,
                    setting=kmax(0.3) + ';eval.map_expansion_temperature=5.0'),
               train_s=80.0, eval_s=6.0, cores=1.0),
          dict(_row('excam', 0.5, 0, 0.4), train_s=50.0, eval_s=5.0, cores=2.0),
          # A row without a cores value trained on both cores (before the column existed).
          dict(_row('cam', 0.5, 0, 0.4), train_s=7.0, eval_s=3.0, cores=math.nan)]
  assert cost.cpu_seconds(rows) == pytest.approx(110 + 20 + 84 + 6 + 2 * 55 + 2 * 10)
  path = str(tmp_path / 'study.csv')
  study.write_rows(path, rows)
  assert cost.cpu_seconds(study.read_rows(path)) == pytest.approx(350)
