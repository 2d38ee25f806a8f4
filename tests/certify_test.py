"""Tests of experiments/certify.py on hand-computed values."""

import pytest

from experiments import certify


def _row(method, cue, seed, value):
  return {'method': method, 'body_cue': cue, 'seed': seed, 'classification_map': value}


def test_certify_by_hand():
  rows = [_row('part_only', 0.0, s, v) for s, v in enumerate((0.85, 0.80, 0.90))]
  rows += [_row('body_only', 0.5, s, v) for s, v in enumerate((0.45, 0.50, 0.49))]  # Mean 0.48.
  rows += [_row('body_only', 0.75, s, v) for s, v in enumerate((0.65, 0.70, 0.66))]
  rows += [_row('body_only', 1.0, s, v) for s, v in enumerate((0.90, 0.75, 0.95))]
  found = {c['body_cue']: c for c in certify.certify(rows)}
  # 0.5: body-only mean 0.48 < 0.5. 0.75: gaps 0.20, 0.10, 0.24 (part-only at cue 0 serves every
  # level), mean 0.18, sd 0.0721, half-width 4.302653 * 0.0721 / sqrt(3) = 0.179: above 0.
  # 1: gaps -0.05, 0.05, -0.05: not above the body.
  assert not found[0.5]['certified'] and found[0.5]['body'][0] == pytest.approx(0.48)
  assert found[0.75]['certified'] and found[0.75]['gap'][0] == pytest.approx(0.18)
  assert found[0.75]['gap'][1] == pytest.approx(4.302653 * 0.072111 / 3 ** 0.5, rel=1e-4)
  assert not found[1.0]['certified']
  assert certify.levels(list(found.values())) == [0.75]
  assert '| 0.75 | 3 | 0.670 ± ' in certify.markdown(list(found.values()))


def test_a_part_only_row_at_the_same_level_is_preferred_and_at_most_two_levels():
  rows = [_row('part_only', 0.0, s, 0.9) for s in range(3)]
  rows += [_row('part_only', 0.6, s, 0.95 + 0.01 * s) for s in range(3)]
  for cue, body in ((0.6, 0.6), (0.7, 0.62), (0.8, 0.64)):
    rows += [_row('body_only', cue, s, body + 0.01 * s) for s in range(3)]
  found = {c['body_cue']: c for c in certify.certify(rows)}
  assert found[0.6]['gap'][0] == pytest.approx(0.35)  # Against 0.95-0.97, not 0.9.
  assert found[0.7]['gap'][0] == pytest.approx(0.27)
  # Three levels qualify; the two with the highest body-only mAP are kept, in order.
  assert certify.levels(list(found.values())) == [0.7, 0.8]
