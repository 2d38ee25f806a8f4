"""Tests of experiments/stats.py on hand-computed values."""

import math

import pytest

from experiments import stats


class TestSignFlipP:

  def test_all_positive_reaches_the_smallest_p(self):
    # 2^3 patterns; only all-plus and all-minus reach |sum| = 6: p = 2 / 8.
    assert stats.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    # Eight equal gains: 2 / 256.
    assert stats.sign_flip_p([0.1] * 8) == pytest.approx(2 / 256)

  def test_mixed_signs_by_hand(self):
    # d = (2, 1, -1), observed sum 2. Signed sums over the 8 patterns: 2, 4, 0, 2, -2, 0, -4,
    # -2; six have |sum| >= 2.
    assert stats.sign_flip_p([2.0, 1.0, -1.0]) == pytest.approx(6 / 8)
    # d = (3, -1): sums 2, 4, -4, -2, all reach 2.
    assert stats.sign_flip_p([3.0, -1.0]) == 1.0

  def test_nan_left_out_and_empty(self):
    assert stats.sign_flip_p([1.0, float('nan'), 2.0, 3.0]) == pytest.approx(0.25)
    assert math.isnan(stats.sign_flip_p([]))

  def test_too_many_pairs_is_refused(self):
    with pytest.raises(ValueError, match='at most'):
      stats.sign_flip_p([1.0] * (stats.MAX_EXACT_PAIRS + 1))


def test_bh_qvalues_by_hand():
  # Finite p sorted: 0.01, 0.03, 0.04, 0.5 (m = 4); m p / rank = 0.04, 0.06, 0.0533, 0.5;
  # running minimum from the largest rank down: 0.04, 0.0533, 0.0533, 0.5.
  q = stats.bh_qvalues([0.01, 0.04, 0.03, float('nan'), 0.5])
  assert q[0] == pytest.approx(0.04)
  assert q[1] == pytest.approx(0.04 * 4 / 3)
  assert q[2] == pytest.approx(0.04 * 4 / 3)
  assert math.isnan(q[3])
  assert q[4] == pytest.approx(0.5)
  assert stats.bh_qvalues([0.9, 0.8]) == pytest.approx([0.9, 0.9])  # 0.8 * 2 / 1 capped by 0.9.
  assert stats.bh_qvalues([0.6]) == [0.6] and stats.bh_qvalues([]) == []


def test_mean_ci_by_hand():
  # 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302653.
  mean, half, n = stats.mean_ci([1.0, 2.0, 3.0])
  assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_formatting_never_says_ties():
  assert stats.format_difference(0.2, 0.1) == '+0.200 ± 0.100'
  assert stats.format_difference(-0.2, 0.1) == '-0.200 ± 0.100'
  assert stats.format_difference(0.05, 0.1) == '+0.050, not resolved (±0.100)'
  assert stats.format_difference(0.05, float('nan')) == '+0.050, not resolved (one seed)'
  assert stats.format_p(0.0004) == '<0.001' and stats.format_p(0.0123) == '0.012'
  assert stats.format_p(float('nan')) == '-'
