"""Tests of PxAP (clovaai/wsolevaluation's MaskEvaluator) on literal maps with hand answers.

Hand computations use cam_curve_interval = 0.25 where possible: thresholds (0, .25, .5, .75), bins
[0, .25), [.25, .5), [.5, .75), [.75, 1), [1, 2), [2, 3]; tp_j, fp_j count the object and
background pixels scoring >= the j-th left edge from the top (2, 1, .75, .5, .25, 0).
"""

import cv2
import numpy as np
import pytest

from excam_jax.errors import UserError
from excam_jax.evaluation import metrics
from excam_jax.evaluation import wsolevaluation

U8 = np.uint8


def reference_pxap(cams, masks, interval):
  """PxAP from first principles: count TP/FP at every threshold, then sum precision * d(recall)."""
  pos, neg = [], []
  for cam, mask in zip(cams, masks):
    m = cv2.resize(np.float64(cam), (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_CUBIC)
    m = np.zeros_like(m) if m.min() == m.max() else (m - m.min()) / (m - m.min()).max()
    pos.append(m[mask == 1])
    neg.append(m[mask == 0])
  pos, neg = np.concatenate(pos), np.concatenate(neg)
  ap, last_recall = 0.0, 0.0
  for t in [2.0, 1.0] + list(np.arange(0, 1, interval))[::-1]:
    tp, fp = np.sum(pos >= t), np.sum(neg >= t)
    recall = tp / len(pos)
    if tp + fp:
      ap += tp / (tp + fp) * (recall - last_recall)
    last_recall = recall
  return ap


class TestPxapCurve:

  def test_by_hand(self):
    # Object scores {1, .25}, background {.5, 0}: true_hist = [0, 1, 0, 0, 1, 0],
    # false_hist = [1, 0, 1, 0, 0, 0]. From the top: tp = [0, 1, 1, 1, 2, 2],
    # fp = [0, 0, 0, 1, 1, 2]; precision = [nan, 1, 1, 1/2, 2/3, 1/2], recall = [0, .5, .5, .5,
    # 1, 1]; PxAP = 1 * .5 + 2/3 * .5 = 5/6.
    got = metrics.pxap_curve([0, 1, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0])
    assert got['pxap'] == pytest.approx(5 / 6, abs=1e-15)
    np.testing.assert_allclose(got['precision'], [np.nan, 1, 1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(got['recall'], [0, .5, .5, .5, 1, 1])

  def test_no_object_pixel_is_an_error(self):
    with pytest.raises(UserError, match='at least one object pixel'):
      metrics.pxap_curve([0, 0, 0], [1, 2, 0])


class TestWsolPxap:

  def test_scores_by_hand(self):
    # The map above: object pixels (1, .25), background (.5, 0) -> 5/6 (TestPxapCurve).
    cam = np.array([[1.0, 0.5], [0.25, 0.0]])
    assert metrics.wsol_pxap([cam], [np.array([[1, 0], [1, 0]], U8)], 0.25) == pytest.approx(5 / 6)

  def test_perfect_map(self):
    # Object pixels score 1, background 0: tp = P from the [1, 2) bin on while fp = 0 until the
    # last edge; the recall jumps 0 -> 1 at precision 1, so PxAP = 1 * 1 = 1 exactly.
    mask = np.array([[1, 1, 0], [0, 255, 0], [0, 0, 1]], U8)
    assert metrics.wsol_pxap([(mask == 1) * 3.0], [mask]) == 1.0

  def test_constant_map_gives_the_object_fraction(self):
    # A constant map becomes zeros: every pixel enters at the last edge (0), where
    # precision = P / (P + N) and recall goes 0 -> 1, so PxAP = P / (P + N) = 2 / (2 + 3).
    mask = np.array([[1, 0, 0], [0, 255, 1]], U8)
    assert metrics.wsol_pxap([np.full((2, 3), 5.0)], [mask]) == pytest.approx(0.4)

  def test_inverted_map(self):
    # Background scores 1, object 0: precision 0 at recall 0 until the last edge, where all
    # pixels enter: precision P / (P + N) = 1 / 4 over a recall step of 1. PxAP = 1/4.
    mask = np.array([[1, 0], [0, 0]], U8)
    assert metrics.wsol_pxap([1.0 - mask], [mask]) == pytest.approx(0.25)

  def test_pools_pixels_over_samples(self):
    # interval .5, bins [0, .5), [.5, 1), [1, 2), [2, 3]. Sample A (perfect): object 1,
    # background 0. Sample B (constant -> zeros): object 0, background 0, 0.
    # true_hist = [1, 0, 1, 0], false_hist = [3, 0, 0, 0]; tp = [0, 1, 1, 2], fp = [0, 0, 0, 3];
    # precision = [nan, 1, 1, 2/5], recall = [0, .5, .5, 1]: PxAP = .5 + 2/5 * .5 = 0.7 (not the
    # mean 2/3 of the per-sample values 1 and 1/3).
    cams = [np.array([[1.0, 0.0]]), np.zeros((1, 3))]
    masks = [np.array([[1, 0]], U8), np.array([[1, 0, 0]], U8)]
    assert metrics.wsol_pxap(cams, masks, 0.5) == pytest.approx(0.7)

  @pytest.mark.parametrize('ignored', [(0.0, 0.0), (1.0, 0.3), (0.7, 0.9)])
  def test_ignore_pixels_are_not_scored(self, ignored):
    # The third column is ignored (255); any values in the map's range [0, 1] leave 5/6.
    cam = np.array([[1.0, 0.5, ignored[0]], [0.25, 0.0, ignored[1]]])
    mask = np.array([[1, 0, 255], [1, 0, 255]], U8)
    assert metrics.wsol_pxap([cam], [mask], 0.25) == pytest.approx(5 / 6)

  def test_ignore_pixels_still_normalise(self):
    # As in wsolevaluation, the min-max runs over the whole map: an ignored 2 halves the scores:
    # object (.5, .125), background (.25, 0). tp = [0, 0, 0, 1, 1, 2], fp = [0, 0, 0, 0, 1, 2];
    # precision = [-, -, -, 1, 1/2, 1/2], recall = [0, 0, 0, .5, .5, 1]: PxAP = .5 + .5 * .5.
    cam = np.array([[1.0, 0.5, 2.0], [0.25, 0.0, 0.0]])
    mask = np.array([[1, 0, 255], [1, 0, 255]], U8)
    assert metrics.wsol_pxap([cam], [mask], 0.25) == pytest.approx(0.75)

  def test_cubic_resize_by_hand(self):
    # (0, 1) -> 4 samples, cv2 INTER_CUBIC (Keys, A = -0.75, edges replicated): sources x =
    # -.25, .25, .75, 1.25. W(.75) = 1.25 * .75^3 - 2.25 * .75^2 + 1 = 0.26171875,
    # W(1.25) = A (1.25^3 - 5 * 1.25^2 + 8 * 1.25 - 4) = -0.10546875, W(1.75) = -0.03515625.
    # x = -.25: taps (0, 0, 0, 1), value W(1.25) = -0.10546875; x = .25: taps (0, 0, 1, 1),
    # W(.75) + W(1.75) = 0.2265625; by symmetry 0.7734375 and 1.10546875. Min-max over the
    # range 1.2109375 = 310/256: (0, 85/310, 225/310, 1) = (0, 17/62, 45/62, 1).
    got = wsolevaluation.resize_and_normalize(np.array([[0.0, 1.0]]), size=(1, 4))
    np.testing.assert_allclose(got, [[0, 17 / 62, 45 / 62, 1]], rtol=0, atol=1e-15)
    # A (2, 1) map against a (4, 1) mask (a swapped dsize would give (1, 4)): the same values
    # down the column; object at 17/62 and 1, background at 0 and 45/62 (bins 1, 4 and 0, 2 as
    # in TestPxapCurve) -> 5/6.
    mask = np.array([[0], [1], [0], [1]], U8)
    assert metrics.wsol_pxap([np.array([[0.0], [1.0]])], [mask], 0.25) == pytest.approx(5 / 6)

  @pytest.mark.parametrize('interval', [0.001, 0.05])
  def test_matches_a_direct_threshold_loop(self, interval):
    rng = np.random.default_rng(0)
    cams = [rng.normal(size=s) for s in [(5, 7), (8, 8), (3, 4)]]
    masks = [rng.choice(np.array([0, 1, 255], U8), size=s, p=[.5, .3, .2])
             for s in [(20, 28), (8, 8), (9, 16)]]
    want = reference_pxap(cams, masks, interval)
    assert 0.3 < want < 0.9  # Not a trivial value.
    assert metrics.wsol_pxap(cams, masks, interval) == pytest.approx(want, rel=1e-12)

  def test_streams(self):
    """PxAP.accumulate one sample at a time gives wsol_pxap of the list."""
    rng = np.random.default_rng(1)
    cams = [rng.normal(size=(4, 4)) for _ in range(3)]
    masks = [rng.integers(0, 2, size=(8, 8)).astype(U8) for _ in range(3)]
    acc = metrics.PxAP()
    for cam, mask in zip(cams, masks):
      acc.accumulate(cam, mask)
    assert acc.num_samples == 3
    assert acc.compute()['pxap'] == metrics.wsol_pxap(cams, masks)

  @pytest.mark.parametrize('cams, masks, message', [
      ([np.zeros((2, 2))], [], 'one mask per cam'),
      ([], [], 'at least one sample'),
      ([np.zeros((2, 2))], [np.array([[0, 1], [2, 1]], U8)], r'holds \[2\]'),
      ([np.zeros((2, 2))], [np.zeros((2, 2, 1), U8)], 'non-empty 2-D'),
      ([np.array([[0.0, np.nan]])], [np.array([[0, 1]], U8)], 'NaN or infinite'),
      ([np.array([[0.0, np.inf]])], [np.array([[0, 1]], U8)], 'NaN or infinite'),
      ([np.zeros(3)], [np.array([[0, 1]], U8)], 'sample 0: a cam must be a non-empty 2-D'),
      ([np.zeros((2, 2))], [np.array([[0, 255]], U8)], 'at least one object pixel'),
  ])
  def test_rejects_bad_input(self, cams, masks, message):
    with pytest.raises(UserError, match=message):
      metrics.wsol_pxap(cams, masks)

  def test_rejects_bad_interval(self):
    with pytest.raises(UserError, match='cam_curve_interval'):
      metrics.wsol_pxap([np.zeros((1, 2))], [np.array([[0, 1]], U8)], cam_curve_interval=0)
