"""Tests of the study harness (experiments/study.py): intervals, paired differences, resume."""

import math

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


def _row(method, cue, seed, corloc, body=0.5):
  row = {m: 0.5 for m in study.METRICS}
  row.update(method=method, body_cue=cue, seed=seed, corloc=corloc, parts_body_coverage=body,
             train_s=10.0, eval_s=1.0, steps=100)
  return row


def test_paired_differences_use_common_seeds():
  rows = [_row('wildcat', 0.5, 0, 0.2), _row('wildcat', 0.5, 1, 0.3), _row('excam', 0.5, 0, 0.5),
          _row('excam', 0.5, 1, 0.4), _row('excam', 0.5, 2, 0.9), _row('excam', 1.0, 0, 0.1)]
  diffs = study.paired_differences(rows, 'corloc', 'excam')
  assert diffs.keys() == {0.5}  # No WILDCAT run at cue 1; seed 2 has no partner.
  assert diffs[0.5] == pytest.approx([0.3, 0.1])
  text = study.markdown(rows)
  # Paired mean 0.2, sd 0.141421, t_{0.975, 1} = 12.7062: half-width 12.7062 * 0.1 = 1.271.
  assert '| excam | 0.5 | 2 | ' in text and '0.200 ± 1.271' in text
  assert '| wildcat | 0.5 | 2 | 0.500 ± 0.000 | 0.250 ± 0.635 |' in text


def test_study_appends_rows_and_resumes(tmp_path, capsys):
  cells = [('wildcat', 0.0, 0), ('excam', 0.0, 0), ('wildcat', 1.0, 0), ('excam', 1.0, 0)]
  launched = []

  def launch(method, cue, seed):
    launched.append((method, cue, seed))
    if len(launched) == 3:
      raise study.CellFailed('killed')
    return _row(method, cue, seed, corloc=0.1 * len(launched))

  with pytest.raises(study.CellFailed):
    study.run_study(str(tmp_path), cells, 'cmd', launch)
  assert len(study.read_rows(str(tmp_path / study.CSV_NAME))) == 2
  launched.clear()
  rows = study.run_study(str(tmp_path), cells, 'cmd', lambda *c: _row(*c, corloc=0.7))
  assert [(r['method'], r['body_cue'], r['seed']) for r in rows] == cells
  assert [r['corloc'] for r in rows] == pytest.approx([0.1, 0.2, 0.7, 0.7])
  assert (tmp_path / study.MD_NAME).read_text().startswith('# Study\n\nCommand: `cmd`')
  assert (tmp_path / study.PNG_NAME).stat().st_size > 1000
  capsys.readouterr()


def test_cell_config_sets_method_cue_and_seed():
  config = study.cell_config('excam', 0.25, 3, quick=True, extra=[('model.num_maps', 4)])
  assert config.model.head == 'excam' and config.model.self_drop is False
  assert config.data.parts.body_cue == 0.25
  assert config.train.seed == 3 and config.data.parts.seed == 3
  assert config.data.parts.num_train == study.QUICK['data.parts.num_train']
  assert config.model.num_maps == 4
  assert config.model.kmax == 0.05  # The band's pooling, in quick and full cells alike.
  assert study.cell_config('wildcat', 1.0, 0, quick=False, extra=[('model.kmax', 0.3)]).model.kmax == 0.3
  probe = study.cell_config('body_only', 0.5, 0, quick=False)
  assert probe.data.parts.probe == 'body_only' and probe.model.head == 'wildcat'


def test_inference_only_methods_share_their_base_training():
  for method, base in study.TRAINED_AS.items():
    mine, theirs = study.cell_config(method, 0.5, 1, quick=True), study.cell_config(base, 0.5, 1,
                                                                                     quick=True)
    assert mine.eval.map_expansion != 'none' and theirs.eval.map_expansion == 'none'
    for field in [f for f in mine.eval if f.startswith('map_expansion')]:
      mine.eval[field] = theirs.eval[field]
    assert mine.to_dict() == theirs.to_dict(), method  # Only inference differs.
  for method in study.METHODS:  # Every method's config passes the config check.
    study.config_checks_validate(study.cell_config(method, 0.5, 0, quick=True))


def test_claim_criteria_by_hand():
  from experiments import claim  # pylint: disable=g-import-not-at-top
  rows = []
  for seed, (base, mine, base_map, mine_map) in enumerate([(0.2, 0.7, 0.98, 0.97),
                                                           (0.3, 0.6, 0.98, 0.99),
                                                           (0.1, 0.8, 0.98, 0.98)]):
    rows.append(dict(_row('wildcat', 0.5, seed, base), classification_map=base_map))
    rows.append(dict(_row('acol', 0.5, seed, mine), classification_map=mine_map, train_s=20.0))
    rows.append(dict(_row('excam', 0.5, seed, base + 0.1)))
  rows.append(_row('acol', 1.0, 0, 0.9))  # No WILDCAT partner: not a cell.
  found = {(c['method'], c['body_cue']): c for c in claim.claims(rows)}
  assert set(found) == {('acol', 0.5), ('excam', 0.5)}
  acol = found[('acol', 0.5)]
  # CorLoc 0.7 / 0.6 / 0.8: mean 0.7; gains 0.5 / 0.3 / 0.7: mean 0.5, sd 0.2,
  # half-width 4.302653 * 0.2 / sqrt(3).
  assert acol['seeds'] == 3 and acol['corloc'][0] == pytest.approx(0.7)
  assert acol['gain'][0] == pytest.approx(0.5)
  assert acol['gain'][1] == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-6)
  assert acol['map_change'][0] == pytest.approx(0.0) and acol['train_ratio'] == pytest.approx(2.0)
  assert acol['met'] and not found[('excam', 0.5)]['met']  # excam gains 0.1 only.
  assert claim.best(claim.claims(rows))['method'] == 'acol'
  # A mAP cost above 0.02 breaks the claim, as do fewer than 3 seeds.
  worse = [dict(r, classification_map=0.9) if r['method'] == 'acol' else r for r in rows]
  assert not {(c['method'], c['body_cue']): c for c in claim.claims(worse)}[('acol', 0.5)]['met']
  assert not claim.claims([r for r in rows if r['seed'] < 2])[0]['met']
  assert '| acol | 0.5 | 3 | 0.700 ± ' in claim.markdown(claim.claims(rows))
