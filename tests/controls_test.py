"""experiments/controls.py: PROTOCOL.md's control readings on literal rows, by hand."""

import sys

import pytest

from experiments import controls
from experiments import study


def _rows(method, values, metric='corloc', cue=0.75, split='test'):
  out = []
  for seed, value in enumerate(values):
    row = {m: 0.5 for m in study.METRICS}
    row.update(method=method, body_cue=cue, seed=seed, split=split, setting='')
    row[metric] = value
    out.append(row)
  return out


def test_max_identity_reads_as_the_protocol_says():
  # excam - wildcat_max = (0.01, -0.01, 0, 0.02): mean 0.005, sd 0.012910, t(0.975, 3) = 3.18245,
  # half = 3.18245 * 0.012910 / 2 = 0.020543: not resolved, |mean| < 0.05.
  rows = _rows('excam', [0.5, 0.6, 0.5, 0.6]) + _rows('wildcat_max', [0.49, 0.61, 0.5, 0.58])
  line = controls.max_identity(rows, 0.75)
  assert '+0.005, not resolved (±0.021) CorLoc' in line
  assert line.endswith("the class-wise max explains ex-CAM's boxes at this setting.")
  rows = _rows('excam', [0.7, 0.81, 0.69, 0.8]) + _rows('wildcat_max', [0.5, 0.6, 0.5, 0.6])
  assert controls.max_identity(rows, 0.75).endswith('differs from the class-wise max of its maps.')
  # (0.3, -0.1, 0.25, -0.05): mean 0.1, not resolved, |mean| >= 0.05.
  rows = _rows('excam', [0.8, 0.5, 0.75, 0.55]) + _rows('wildcat_max', [0.5, 0.6, 0.5, 0.6])
  assert controls.max_identity(rows, 0.75).endswith('not decided at this n.')
  assert controls.max_identity(_rows('excam', [0.5]), 0.75) == (
      'max identity: wildcat_max or excam absent.')


def test_delta_hard_masks_and_more_maps():
  excam = _rows('excam', [0.6, 0.7, 0.6, 0.7])
  worse = _rows('excam_d07', [0.4, 0.51, 0.39, 0.5])  # -0.2 +- small: resolved below 0.
  assert controls.delta_07(excam + worse, 0.75).endswith('not what a sequential mechanism predicts.')
  same = _rows('excam_d07', [0.62, 0.69, 0.6, 0.7])
  assert controls.delta_07(excam + same, 0.75).endswith('as a sequential mechanism predicts.')
  hard = _rows('excam_hard', [0.59, 0.71, 0.61, 0.69])
  assert controls.hard_masks(excam + hard, 0.75).endswith('is not shown to matter.')
  body = _rows('excam', [0.3, 0.4, 0.3, 0.4], 'parts_body_coverage')
  m8 = _rows('excam_m8', [0.5, 0.61, 0.49, 0.6], 'parts_body_coverage')
  lines = controls.more_maps(body + m8, 0.75)
  assert lines[0] == 'more maps: excam_m4 or excam absent.'
  assert lines[1].startswith('more maps (excam_m8 - excam): +0.200 ± ')
  assert lines[1].endswith('body coverage grows with M.')


def test_verdicts_cover_every_level_and_the_cli_refuses_an_empty_csv(tmp_path, monkeypatch):
  rows = _rows('excam', [0.6, 0.7], cue=1.0) + _rows('wildcat', [0.5, 0.6], cue=0.75)
  found = controls.verdicts(rows)
  assert sorted(found) == [0.75, 1.0] and len(found[1.0]) == 9
  assert found[1.0][0] == 'settings (a control and its reference may differ in them): excam none.'
  assert '## body_cue 0.75' in controls.markdown(found)
  study.write_rows(str(tmp_path / 'study.csv'), [])
  monkeypatch.setattr(sys, 'argv', ['controls.py', f'--csv={tmp_path / "study.csv"}'])
  with pytest.raises(SystemExit, match='no rows in'):
    controls.main()


def test_the_cli_refuses_tuning_rows(tmp_path, monkeypatch):
  rows = _rows('excam', [0.6, 0.7], split='validation')
  rows += [dict(r, setting='model.kmax=0.2') for r in rows]
  study.write_rows(str(tmp_path / 'tuning.csv'), rows)
  monkeypatch.setattr(sys, 'argv', ['controls.py', f'--csv={tmp_path / "tuning.csv"}'])
  with pytest.raises(SystemExit, match='several settings of a method for one seed'):
    controls.main()


def test_settings_name_each_side_of_the_controls():
  rows = ([dict(r, setting='model.kmax=0.2') for r in _rows('excam', [0.6, 0.7])] +
          [dict(r, setting='model.kmax=0.3') for r in _rows('wildcat_max', [0.6, 0.7])] +
          [dict(r, setting='model.kmax=0.1') for r in _rows('cam', [0.6, 0.7])])  # Not a control.
  assert controls.settings(rows, 0.75) == ('settings (a control and its reference may differ in '
                                          'them): excam model.kmax=0.2, wildcat_max model.kmax=0.3.')
  assert controls.settings(rows, 1.0).endswith('no method of the controls ran.')
