"""Tests of the metrics on literal inputs with hand-worked answers."""

import numpy as np
import pytest

from excam_jax.errors import UserError
from excam_jax.evaluation import metrics

BOX = (0, 0, 9, 9)  # 10 x 10 = 100 pixels.


class TestBoxIou:

  def test_inclusive_convention(self):
    # Rows 0..5 of BOX: 60 pixels inside 100 -> 0.6 (exclusive would give 45 / 81).
    np.testing.assert_allclose(metrics.box_iou([(0, 0, 9, 5)], [BOX]), [[0.6]])

  def test_disjoint_and_pairwise_shape(self):
    got = metrics.box_iou([BOX, (20, 20, 29, 29)], [(5, 0, 14, 9)])
    # 50 shared pixels, union 150.
    np.testing.assert_allclose(got, [[1 / 3], [0.0]])


class TestVocAp:

  def test_all_point(self):
    assert metrics.voc_ap([0.5, 1.0], [1.0, 0.5]) == pytest.approx(0.75)

  def test_eleven_point(self):
    # t in 0..0.5 (6 points) -> 1, t in 0.6..1 (5 points) -> 0.5.
    assert metrics.voc_ap([0.5, 1.0], [1.0, 0.5], use_07_metric=True) == pytest.approx(8.5 / 11)

  def test_envelope_raises_earlier_precision(self):
    # Points (0.5, 0.5), (1, 2/3): the envelope lifts recall 0.5 to 2/3, so AP = 2/3.
    assert metrics.voc_ap([0.5, 1.0], [0.5, 2 / 3]) == pytest.approx(2 / 3)

  def test_empty(self):
    assert metrics.voc_ap([], []) == 0.0
    assert metrics.voc_ap([], [], use_07_metric=True) == 0.0


class TestDetectionAp:

  def test_no_detections(self):
    truth = {'a': [(BOX, False)], 'b': [(BOX, False)]}
    assert metrics.detection_ap([], truth) == 0.0

  def test_no_positives_is_nan(self):
    assert np.isnan(metrics.detection_ap([('a', 0.9, BOX)], {'a': []}))

  def test_all_difficult_is_nan(self):
    assert np.isnan(metrics.detection_ap([('a', 0.9, BOX)], {'a': [(BOX, True)]}))

  def test_duplicate_is_false_positive(self):
    truth = {'a': [(BOX, False)], 'b': [(BOX, False)]}
    dets = [('a', 0.9, BOX), ('a', 0.8, BOX), ('b', 0.7, BOX)]
    # TP, FP, TP: recall .5 .5 1, precision 1 .5 2/3 -> 0.5 * 1 + 0.5 * 2/3.
    assert metrics.detection_ap(dets, truth) == pytest.approx(0.5 + 1 / 3)
    assert metrics.detection_ap(dets, truth, use_07_metric=True) == pytest.approx(
        (6 + 5 * 2 / 3) / 11)

  def test_ties_keep_input_order(self):
    truth = {'a': [(BOX, False)], 'x': []}
    # Same score: the FP (image x) comes first in the input, so it ranks first.
    assert metrics.detection_ap([('x', 0.5, BOX), ('a', 0.5, BOX)], truth) == pytest.approx(0.5)
    assert metrics.detection_ap([('a', 0.5, BOX), ('x', 0.5, BOX)], truth) == pytest.approx(1.0)

  def test_difficult_match_is_ignored(self):
    truth = {'a': [(BOX, True)], 'b': [(BOX, False)]}
    assert metrics.detection_ap([('a', 0.9, BOX), ('b', 0.8, BOX)], truth) == pytest.approx(1.0)

  def test_iou_must_exceed_threshold(self):
    truth = {'a': [(BOX, False)]}
    assert metrics.detection_ap([('a', 0.9, (0, 0, 9, 4))], truth) == 0.0  # IoU exactly 0.5.
    assert metrics.detection_ap([('a', 0.9, (0, 0, 9, 5))], truth) == 1.0  # IoU 0.6.

  def test_best_overlap_box_is_the_one_matched(self):
    other = (20, 0, 29, 9)
    truth = {'a': [(BOX, False), (other, False)]}
    dets = [('a', 0.9, (0, 0, 9, 8)), ('a', 0.8, (19, 0, 29, 9))]
    assert metrics.detection_ap(dets, truth) == pytest.approx(1.0)


class TestRankedAndClassificationAp:

  def test_ranked_ap_by_hand(self):
    # Hits at ranks 1 and 3: (1 + 2/3) / 2; one positive never hit halves it further when npos=3.
    assert metrics.ranked_ap([0.9, 0.8, 0.7], [1, 0, 1], 2) == pytest.approx(5 / 6)
    assert metrics.ranked_ap([0.9, 0.8, 0.7], [1, 0, 1], 3) == pytest.approx(5 / 9)
    assert np.isnan(metrics.ranked_ap([0.9], [0], 0))

  def test_classification_ap_skips_ignored(self):
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    labels = np.array([[1], [0], [1], [0]])
    assert metrics.classification_ap(scores, labels)[0] == pytest.approx(5 / 6)
    ignore = np.array([[False], [True], [False], [False]])
    assert metrics.classification_ap(scores, labels, ignore)[0] == pytest.approx(1.0)

  def test_classification_ap_without_positives(self):
    got = metrics.classification_ap(np.array([[0.1, 0.2]]), np.array([[1, 0]]))
    assert got[0] == 1.0 and np.isnan(got[1])


class TestPointwiseAp:

  def setup_method(self):
    # Image 0 holds class 0 at (10, 10, 20, 20); image 1 nothing; image 2 class 0 only difficult;
    # class 1 only appears as difficult (image 2); class 2 never appears.
    self.truth = [[(0, (10, 10, 20, 20), False)], [],
                  [(0, (0, 0, 5, 5), True), (1, (0, 0, 5, 5), True)]]

  def _points(self, x, y):
    points = np.zeros((3, 3, 2))
    points[0, 0] = (x, y)
    return points

  def test_tolerance_is_inclusive(self):
    scores = np.array([[0.9, 0.5, 0.5], [0.8, 0.5, 0.5], [0.95, 0.5, 0.5]])
    got = metrics.pointwise_ap(scores, self._points(38, 2), self.truth)
    # (38, 2): x <= 20 + 18 and y >= 10 - 18. Image 2 (difficult only) leaves the ranking.
    assert got[0] == pytest.approx(1.0)
    assert np.isnan(got[1]) and np.isnan(got[2])
    assert metrics.pointwise_ap(scores, self._points(39, 15), self.truth)[0] == 0.0

  def test_false_positive_ranked_first(self):
    scores = np.array([[0.9, 0, 0], [0.95, 0, 0], [0.99, 0, 0]])
    assert metrics.pointwise_ap(scores, self._points(15, 15), self.truth)[0] == pytest.approx(0.5)

  def test_shape_mismatch(self):
    with pytest.raises(ValueError):
      metrics.pointwise_ap(np.zeros((2, 3)), np.zeros((3, 3, 2)), self.truth)


class TestCorLoc:

  def test_by_hand(self):
    top = {'a': BOX, 'b': None, 'c': (0, 0, 9, 4)}  # c: IoU exactly 0.5 counts.
    truth = {'a': [BOX], 'b': [BOX], 'c': [(30, 30, 40, 40), BOX]}
    assert metrics.corloc(top, truth) == pytest.approx(2 / 3)

  def test_below_threshold_and_empty(self):
    assert metrics.corloc({'a': (0, 0, 9, 3)}, {'a': [BOX]}) == 0.0
    assert np.isnan(metrics.corloc({}, {}))


class TestMaxBoxAccuracy:

  IOUS = np.array([[0.6, 0.4], [0.2, 0.55], [0.7, 0.1]])
  CLASSES = np.array([0, 1, 0])

  def test_v1(self):
    value, per_class, best = metrics.max_box_accuracy(self.IOUS, self.CLASSES, 3)
    assert value == pytest.approx(2 / 3) and best == [0]
    np.testing.assert_allclose(per_class, [1.0, 0.0, np.nan])

  def test_v2_deltas(self):
    value, _, best = metrics.max_box_accuracy(self.IOUS, self.CLASSES, 3, (0.3, 0.5, 0.7))
    assert value == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3) and best == [0, 0, 0]

  def test_accumulator(self):
    acc = metrics.MaxBoxAcc(3, thresholds=[0.0, 0.5])
    acc.accumulate(self.IOUS[:2], self.IOUS[:2], self.CLASSES[:2])
    acc.accumulate(self.IOUS[2:], self.IOUS[2:], self.CLASSES[2:])
    out = acc.compute()
    assert out['maxboxacc'] == pytest.approx(2 / 3) and out['maxboxacc_threshold'] == 0.0


class TestExpansionAndAccumulators:

  def test_expansion_ratio(self):
    got = metrics.expansion_ratio([(0, 0, 19, 9), (-1, -1, -1, -1)], [BOX, BOX])
    np.testing.assert_allclose(got, [2.0, 0.0])

  def test_sample_means(self):
    means = metrics.SampleMeans(3)
    means.accumulate([2.0, 1.0], [0, 0])
    means.accumulate([4.0], [1])
    mean, per_class = means.compute()
    assert mean == pytest.approx(7 / 3)
    np.testing.assert_allclose(per_class, [1.5, 4.0, np.nan])

  def test_detection_accumulator_counts_images_without_boxes(self):
    det = metrics.DetectionAP(2)
    det.add_ground_truth(0, [0], [BOX], [False])
    det.add_ground_truth(1, [], [], [])
    det.add_detections(1, 0, 0.9, [BOX])  # An FP on an image without class 0.
    det.add_detections(0, 0, 0.8, [BOX])
    got = det.compute()
    assert got[0] == pytest.approx(0.5) and np.isnan(got[1])


class TestMaskMeasures:

  def test_by_hand(self):
    cam = np.array([[3.0, 1.0, -1.0],
                    [1.0, -1.0, -1.0],
                    [-1.0, -1.0, 2.0]])
    body = np.array([[0, 1, 1], [1, 1, 0], [0, 0, 0]], bool)
    part = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0]], bool)
    background = ~(body | part)
    got = metrics.mask_measures(cam, body, part, background)
    # Active: (0,0) part, (0,1) body, (1,0) body, (2,2) background.
    assert got['body_coverage'] == pytest.approx(2 / 4)
    assert got['part_coverage'] == 1.0
    assert got['background_activation'] == pytest.approx(1 / 4)
    assert got['map_precision'] == pytest.approx(3 / 4)
    assert got['argmax_in'] == 'part'

  def test_constant_map_and_empty_masks(self):
    empty = np.zeros((2, 2), bool)
    got = metrics.mask_measures(np.zeros((2, 2)), empty, empty, ~empty)
    assert np.isnan(got['body_coverage']) and np.isnan(got['map_precision'])
    assert got['background_activation'] == 0.0 and got['argmax_in'] == 'outside'

  def test_nan_map(self):
    with pytest.raises(UserError, match='NaN'):
      metrics.mask_measures(np.full((2, 2), np.nan), *(np.zeros((2, 2), bool),) * 3)
