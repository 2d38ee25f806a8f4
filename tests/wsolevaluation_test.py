"""Tests of MaxBoxAcc / MaxBoxAccV2 (clovaai/wsolevaluation rules) on literal maps.

Most maps are 224 x 224 (OpenCV returns a same-size INTER_CUBIC resize unchanged) made of
constant rectangles, so every box, IoU and accuracy below is worked by hand. Rectangles are
given as inclusive (row0, row1, col0, col1).
"""

import cv2
import numpy as np
import pytest

from excam_jax.errors import UserError
from excam_jax.evaluation import wsolevaluation as wsol
from excam_jax.evaluation.wsolevaluation import wsol_max_box_acc

FRAME = (224, 224)  # An original image already 224 x 224: ground truth is not rescaled.


def canvas(*patches, shape=(224, 224)):
  """A float map of zeros with each (row0, row1, col0, col1, value) rectangle painted in."""
  cam = np.zeros(shape)
  for r0, r1, c0, c1, value in patches:
    cam[r0:r1 + 1, c0:c1 + 1] = value
  return cam


def acc(cams, boxes, iou=(0.5,), multi=False, interval=0.25, sizes=None):
  sizes = sizes or [FRAME] * len(cams)
  return wsol_max_box_acc(cams, [np.array(b) for b in boxes], sizes, iou, multi, interval)


def boxes_per_threshold(scoremap, interval, multi=False):
  """The box list at each CAM threshold, via the module's grouped computation."""
  boxes, index = wsol.boxes_at_thresholds(scoremap, wsol.cam_threshold_list(interval), multi)
  return [boxes[i].tolist() for i in index]


# A 100 x 50 block at 0.5 (quantised to 127) holding a 30 x 20 core at 1.0 (255).
OUTER = (50, 99, 30, 129, 0.5)
INNER = (60, 79, 40, 69, 1.0)
UNIMODAL = canvas(OUTER, INNER)
OUTER_BOX = [30, 50, 130, 100]  # boundingRect (30, 50, 100, 50) -> (x, y, x + w, y + h).
INNER_BOX = [40, 60, 70, 80]


class TestDegenerateMaps:

  @pytest.mark.parametrize('cam', [np.full((14, 14), 5.0), np.zeros((224, 224)),
                                   np.full((3, 5), -2.0)])
  def test_constant_map_gives_origin_box(self, cam):
    # normalize_scoremap zeroes a constant map (these values stay exactly constant through the
    # cubic resize); no pixel is > level 0, so no contour, so the box is (0, 0, 0, 0): one pixel
    # at the origin under the +1 convention.
    assert boxes_per_threshold(wsol.resize_and_normalize(cam), 0.25) == [[[0, 0, 0, 0]]] * 4
    np.testing.assert_array_equal(acc([cam], [[(0, 0, 0, 0)]], iou=(1.0,)), [1.0])
    # Against (0, 0, 1, 1): intersection 1, union 4 -> IoU 1/4.
    np.testing.assert_array_equal(acc([cam], [[(0, 0, 1, 1)]], iou=(0.25, 0.3)), [1.0, 0.0])

  def test_rounding_noise_of_a_near_constant_map_is_stretched(self):
    # 0.7 is not exact in binary: the cubic resize leaves a 1-ulp ripple, min != max, and the
    # min-max normalisation stretches the ripple to [0, 1], as wsolevaluation does (checked
    # against its code). The map is then not zeroed and yields boxes that are not the origin.
    cam = np.full((14, 14), 0.7)
    scoremap = wsol.resize_and_normalize(cam)
    assert scoremap.min() == 0.0 and scoremap.max() == 1.0
    assert boxes_per_threshold(scoremap, 0.25)[0] != [[0, 0, 0, 0]]
    np.testing.assert_array_equal(acc([cam], [[(0, 0, 0, 0)]], iou=(1.0,)), [0.0])

  def test_nan_map_scores_as_the_zero_map(self):
    blob = canvas((10, 19, 10, 19, 1.0))
    with_nan = blob.copy()
    with_nan[0, 0] = np.nan
    np.testing.assert_array_equal(acc([blob], [[(10, 10, 20, 20)]]), [1.0])
    np.testing.assert_array_equal(acc([with_nan], [[(10, 10, 20, 20)]]), [0.0])
    np.testing.assert_array_equal(acc([with_nan], [[(0, 0, 0, 0)]]), [1.0])

  def test_single_hot_pixel(self):
    cam = canvas((10, 10, 20, 20, 3.0))  # row 10, column 20.
    # boundingRect (20, 10, 1, 1) -> (20, 10, 21, 11) at every threshold.
    assert boxes_per_threshold(wsol.resize_and_normalize(cam), 0.25) == [[[20, 10, 21, 11]]] * 4
    np.testing.assert_array_equal(acc([cam], [[(20, 10, 21, 11)]], iou=(1.0,)), [1.0])
    # The pixel itself as ground truth: 1 pixel of a 4-pixel box.
    np.testing.assert_array_equal(acc([cam], [[(20, 10, 20, 10)]], iou=(0.25, 0.26)), [1.0, 0.0])


class TestUnimodal:

  def test_boxes_at_each_threshold(self):
    # Thresholds 0, .25, .5, .75 -> levels int(thr * 255) = 0, 63, 127, 191. The 0.5 block is
    # quantised to int(127.5) = 127 and 127 > 127 is false, so from thr 0.5 only the core stays.
    assert boxes_per_threshold(UNIMODAL, 0.25) == [[OUTER_BOX], [OUTER_BOX], [INNER_BOX],
                                                   [INNER_BOX]]

  def test_level_is_truncated_times_the_map_maximum(self):
    # Three steps quantised to 25 (0.1), 64 (0.251) and 255. thr 0.25 -> level int(63.75) = 63,
    # so the 64 step is still in; round() or a factor 256 would give level 64 and drop it.
    cam = canvas((40, 119, 20, 139, 0.1), (50, 99, 30, 129, 0.251), INNER)
    assert boxes_per_threshold(cam, 0.25) == [[[20, 40, 140, 120]], [OUTER_BOX], [INNER_BOX],
                                              [INNER_BOX]]
    np.testing.assert_array_equal(acc([cam], [[(30, 50, 130, 100)]], iou=(1.0,)), [1.0])

  def test_iou_with_the_block(self):
    # GT = the block's own pixels (100 x 50 = 5000); the box (30, 50, 130, 100) is 101 x 51 =
    # 5151 -> IoU 5000 / 5151 = 0.9707 at thresholds 0 and .25.
    gt = [(30, 50, 129, 99)]
    np.testing.assert_array_equal(acc([UNIMODAL], [gt], iou=(0.97, 0.971)), [1.0, 0.0])

  def test_best_threshold_is_one_threshold_for_all_samples(self):
    # Sample A's GT is the block, B's the core ((40, 60, 69, 79): IoU 600 / 651 = 0.92 with the
    # core box, 600 / 5151 with the block box). Correct per threshold: A [1, 1, 0, 0],
    # B [0, 0, 1, 1]. The accuracy is max over thresholds of the mean: 1/2 for (A, B) (taking
    # each sample's own best threshold would give 1), 2/3 for (A, A, B) and (A, B, B).
    a, b = [(30, 50, 129, 99)], [(40, 60, 69, 79)]
    np.testing.assert_array_equal(acc([UNIMODAL] * 2, [a, b]), [0.5])
    np.testing.assert_allclose(acc([UNIMODAL] * 3, [a, a, b]), [2 / 3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(acc([UNIMODAL] * 3, [a, b, b]), [2 / 3], rtol=0, atol=1e-15)

  def test_finer_curve_interval_reaches_a_higher_threshold(self):
    # Core 1.0 (255) inside a ring at 0.9 (int(229.5) = 229). Interval 0.25 has levels up to
    # 191 < 229, so the box is always the ring's; interval 0.1 has thr 0.9 -> level 229, which
    # keeps only the core.
    cam = canvas((50, 99, 30, 129, 0.9), INNER)
    gt = [(40, 60, 69, 79)]
    np.testing.assert_array_equal(acc([cam], [gt], interval=0.25), [0.0])
    np.testing.assert_array_equal(acc([cam], [gt], interval=0.1), [1.0])


class TestContours:
  BIG = (10, 59, 10, 109, 1.0)  # 100 x 50 pixels -> box (10, 10, 110, 60).
  SMALL = (150, 169, 150, 179, 1.0)  # 30 x 20 pixels -> box (150, 150, 180, 170).

  def test_v1_keeps_the_largest_contour_v2_the_best(self):
    cam = canvas(self.BIG, self.SMALL)
    small_gt = [(150, 150, 179, 169)]  # IoU 600 / 651 with the small box, 0 with the big one.
    assert boxes_per_threshold(cam, 0.5) == [[[10, 10, 110, 60]]] * 2
    assert sorted(boxes_per_threshold(cam, 0.5, multi=True)[0]) == [[10, 10, 110, 60],
                                                                    [150, 150, 180, 170]]
    np.testing.assert_array_equal(acc([cam], [small_gt], multi=False), [0.0])
    np.testing.assert_array_equal(acc([cam], [small_gt], multi=True), [1.0])
    big_gt = [(10, 10, 109, 59)]
    np.testing.assert_array_equal(acc([cam], [big_gt], multi=False), [1.0])
    np.testing.assert_array_equal(acc([cam], [big_gt], multi=True), [1.0])

  def test_v2_counts_hole_borders(self):
    # A 100 x 100 square with a 40 x 40 hole (rows/cols 50..89). RETR_TREE also returns the
    # hole's border, traced on the square's pixels around it: rows/cols 49..90 ->
    # boundingRect (49, 49, 42, 42) -> box (49, 49, 91, 91), IoU 1600 / 1849 = 0.865 with the
    # hole as GT; the outer box (20, 20, 120, 120) gives 1600 / 10201.
    cam = canvas((20, 119, 20, 119, 1.0), (50, 89, 50, 89, 0.0))
    hole = [(50, 50, 89, 89)]
    np.testing.assert_array_equal(acc([cam], [hole], iou=(0.86,), multi=True), [1.0])
    np.testing.assert_array_equal(acc([cam], [hole], iou=(0.87,), multi=True), [0.0])
    np.testing.assert_array_equal(acc([cam], [hole], iou=(0.15,), multi=False), [1.0])
    np.testing.assert_array_equal(acc([cam], [hole], iou=(0.16,), multi=False), [0.0])

  def test_box_end_is_x_plus_w_and_clipped_at_223(self):
    inside = canvas((10, 19, 10, 19, 1.0))  # boundingRect (10, 10, 10, 10) -> (10, 10, 20, 20).
    np.testing.assert_array_equal(acc([inside], [[(10, 10, 20, 20)]], iou=(1.0,)), [1.0])
    # Its own pixels: 100 / 121 = 0.826.
    np.testing.assert_array_equal(acc([inside], [[(10, 10, 19, 19)]], iou=(0.82, 1.0)),
                                  [1.0, 0.0])
    # Touching the right and bottom edges: (180, 200, 180 + 44, 200 + 24) -> x1, y1 clipped
    # to 223. Unclipped it would be 45 x 25 against 44 x 24 pixels: IoU 0.939.
    edge = canvas((200, 223, 180, 223, 1.0))
    assert boxes_per_threshold(edge, 0.5) == [[[180, 200, 223, 223]]] * 2
    np.testing.assert_array_equal(acc([edge], [[(180, 200, 223, 223)]], iou=(1.0,)), [1.0])


class TestGroundTruth:

  def test_resize_truncates(self):
    # 448 x 112: x * 224 / 448 = 51.5 -> 51 and 125.5 -> 125 (round() would give 52, 126);
    # y * 224 / 112 = 60, 154.
    np.testing.assert_array_equal(wsol.resize_gt_boxes([(103, 30, 251, 77)], (448, 112)),
                                  [[51, 60, 125, 154]])
    # 300 x 200: 7.47 -> 7, 7.84 -> 7, 223.25 -> 223, 222.88 -> 222.
    np.testing.assert_array_equal(wsol.resize_gt_boxes([(10, 7, 299, 199)], (300, 200)),
                                  [[7, 7, 223, 222]])

  def test_resized_box_is_scored(self):
    # Pixels rows 60..153, cols 51..124 -> box (51, 60, 125, 154): IoU exactly 1 with the
    # resized GT of (103, 30, 251, 77) in a 448 x 112 image, and not with the box unresized.
    cam = canvas((60, 153, 51, 124, 1.0))
    gt = [(103, 30, 251, 77)]
    np.testing.assert_array_equal(acc([cam], [gt], iou=(1.0,), sizes=[(448, 112)]), [1.0])
    np.testing.assert_array_equal(acc([cam], [gt], iou=(1.0,), sizes=[(112, 448)]), [0.0])
    np.testing.assert_array_equal(acc([cam], [gt], iou=(0.5,)), [0.0])

  def test_best_of_several_gt_boxes(self):
    cam = canvas((10, 19, 10, 19, 1.0))  # Box (10, 10, 20, 20).
    far, match = (100, 100, 150, 150), (10, 10, 20, 20)
    np.testing.assert_array_equal(acc([cam], [[far]], iou=(1.0,)), [0.0])
    np.testing.assert_array_equal(acc([cam], [[far, match]], iou=(1.0,)), [1.0])
    np.testing.assert_array_equal(acc([cam], [[match, far]], iou=(1.0,)), [1.0])


def test_several_iou_thresholds():
  # IoUs 100 / 121 = 0.826 (a 10 x 10 block against its own pixels) and 1/4 (a hot pixel).
  block = canvas((10, 19, 10, 19, 1.0))
  pixel = canvas((10, 10, 20, 20, 1.0))
  got = acc([block, pixel], [[(10, 10, 19, 19)], [(20, 10, 20, 10)]], iou=(0.2, 0.5, 0.9))
  assert isinstance(got, np.ndarray) and got.shape == (3,)
  np.testing.assert_array_equal(got, [1.0, 0.5, 0.0])


def test_cubic_resize_path():
  cam = np.zeros((14, 14), dtype=np.float32)
  cam[4, 9] = 2.0
  cam[5, 9] = 1.0
  want = cv2.resize(cam.astype(np.float64), (224, 224), interpolation=cv2.INTER_CUBIC)
  want = (want - want.min()) / (want - want.min()).max()
  got = wsol.resize_and_normalize(cam)
  assert got.shape == (224, 224) and got.dtype == np.float64
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(wsol.resize_and_normalize(cam.astype(np.float64)), want)
  # The box at threshold 0.5 straight from cv2 on the resized map.
  mask = ((want * 255).astype(np.uint8) > 127).astype(np.uint8)
  x, y, w, h = cv2.boundingRect(cv2.findContours(mask, cv2.RETR_TREE,
                                                 cv2.CHAIN_APPROX_SIMPLE)[0][0])
  assert boxes_per_threshold(got, 0.5)[1] == [[x, y, x + w, y + h]]
  assert w < 40 and h < 60  # Upsampled by 16: a small blob, not the 14 x 14 grid.


def plain_max_box_acc(cams, gt_boxes, sizes, ious, multi, interval):
  """The rules written as one plain loop over thresholds (cv2.threshold, no grouping)."""
  thresholds = np.arange(0, 1, interval)
  correct = np.zeros((len(ious), len(thresholds)))
  for cam, gt, (w, h) in zip(cams, gt_boxes, sizes):
    m = cv2.resize(np.float64(cam), (224, 224), interpolation=cv2.INTER_CUBIC)
    m = np.zeros_like(m) if np.isnan(m).any() or m.min() == m.max() else (
        (m - m.min()) / (m - m.min()).max())
    u8 = (m * 255).astype(np.uint8)
    gt = [[int(b[0] * 224.0 / w), int(b[1] * 224.0 / h), int(b[2] * 224.0 / w),
           int(b[3] * 224.0 / h)] for b in gt]
    for t, thr in enumerate(thresholds):
      _, binary = cv2.threshold(u8, int(thr * u8.max()), 255, cv2.THRESH_BINARY)
      contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
      if not multi and contours:
        contours = [max(contours, key=cv2.contourArea)]
      boxes = [[0, 0, 0, 0]]
      if contours:
        boxes = []
        for contour in contours:
          x, y, bw, bh = cv2.boundingRect(contour)
          boxes.append([x, y, min(x + bw, 223), min(y + bh, 223)])
      best = 0.0
      for p in boxes:
        for g in gt:
          iw = max(0, min(p[2], g[2]) - max(p[0], g[0]) + 1)
          ih = max(0, min(p[3], g[3]) - max(p[1], g[1]) + 1)
          union = ((p[2] - p[0] + 1) * (p[3] - p[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1)
                   - iw * ih)
          best = max(best, iw * ih / union if union > 0 else 0.0)
      for i, iou in enumerate(ious):
        correct[i, t] += best >= iou
  return correct.max(axis=1) / len(cams)


@pytest.mark.parametrize('multi', [False, True])
@pytest.mark.parametrize('interval', [0.01, 0.003])
def test_matches_plain_loop_on_random_maps(multi, interval):
  rng = np.random.RandomState(7)
  cams, gts, sizes = [], [], []
  for k in range(12):
    h, w = rng.randint(2, 20, size=2)
    cam = rng.rand(h, w) if k % 3 else (rng.rand(h, w) > 0.6) * 1.0
    width, height = rng.randint(50, 600, size=2)
    x0, y0 = rng.randint(0, width // 2), rng.randint(0, height // 2)
    gts.append([(x0, y0, rng.randint(x0, width), rng.randint(y0, height))])
    cams.append(cam)
    sizes.append((width, height))
  ious = (0.1, 0.3, 0.5, 0.7)
  want = plain_max_box_acc(cams, gts, sizes, ious, multi, interval)
  got = wsol_max_box_acc(cams, gts, sizes, ious, multi, interval)
  np.testing.assert_array_equal(got, want)
  assert want.max() > 0  # The samples exercise the comparison.


GOOD_CAM, GOOD_BOX, GOOD_SIZE = np.eye(4), [(0, 0, 3, 3)], (8, 8)


@pytest.mark.parametrize('cams, boxes, sizes, kwargs', [
    ([np.zeros((2, 2, 2))], [GOOD_BOX], [GOOD_SIZE], {}),  # 3-D cam.
    ([np.zeros(5)], [GOOD_BOX], [GOOD_SIZE], {}),  # 1-D cam.
    ([np.zeros((0, 3))], [GOOD_BOX], [GOOD_SIZE], {}),  # empty cam.
    ([np.array([[1.0, np.inf]])], [GOOD_BOX], [GOOD_SIZE], {}),  # infinite value.
    ([np.array([['a', 'b']])], [GOOD_BOX], [GOOD_SIZE], {}),  # not numbers.
    ([GOOD_CAM], [[(0, 0, 3)]], [GOOD_SIZE], {}),  # boxes not (K, 4).
    ([GOOD_CAM], [np.zeros((0, 4))], [GOOD_SIZE], {}),  # no boxes.
    ([GOOD_CAM], [[(3, 0, 2, 3)]], [GOOD_SIZE], {}),  # x1 < x0.
    ([GOOD_CAM], [[(0, -1, 2, 3)]], [GOOD_SIZE], {}),  # negative.
    ([GOOD_CAM], [[(0, 0, np.nan, 3)]], [GOOD_SIZE], {}),  # not finite.
    ([GOOD_CAM, GOOD_CAM], [GOOD_BOX], [GOOD_SIZE], {}),  # lengths differ.
    ([], [], [], {}),  # no samples.
    ([GOOD_CAM], [GOOD_BOX], [(0, 8)], {}),  # width < 1.
    ([GOOD_CAM], [GOOD_BOX], [(8,)], {}),  # not (width, height).
    ([GOOD_CAM], [GOOD_BOX], [GOOD_SIZE], {'cam_curve_interval': 0}),
    ([GOOD_CAM], [GOOD_BOX], [GOOD_SIZE], {'cam_curve_interval': 1}),
    ([GOOD_CAM], [GOOD_BOX], [GOOD_SIZE], {'cam_curve_interval': -0.1}),
    ([GOOD_CAM], [GOOD_BOX], [GOOD_SIZE], {'iou_thresholds': (50,)}),
    ([GOOD_CAM], [GOOD_BOX], [GOOD_SIZE], {'iou_thresholds': ()}),
])
def test_invalid_inputs_raise_user_error(cams, boxes, sizes, kwargs):
  with pytest.raises(UserError):
    wsol_max_box_acc(cams, boxes, sizes, **kwargs)


def test_valid_baseline_of_the_invalid_cases():
  # The inputs the invalid cases start from are accepted (so each case fails for its own reason).
  got = wsol_max_box_acc([GOOD_CAM], [GOOD_BOX], [GOOD_SIZE])
  assert got.shape == (1,) and 0.0 <= got[0] <= 1.0
