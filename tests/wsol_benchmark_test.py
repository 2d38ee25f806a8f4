"""Tests of the WSOL benchmark's scores (excam_jax/evaluation/wsol_benchmark.py): literal maps with
hand-computed MaxBoxAccV2, GT-known Loc and Top-1 Loc, agreement with metrics.wsol_max_box_acc and
metrics.wsol_pxap, and the report's tables."""

import concurrent.futures

import numpy as np
import pytest

from excam_jax.errors import UserError
from excam_jax.evaluation import evaluator
from excam_jax.evaluation import metrics
from excam_jax.evaluation import report
from excam_jax.evaluation import wsol_benchmark

NAMES = ('a', 'b', 'c')
PROTOCOL = wsol_benchmark.Protocol.from_config()  # wsolevaluation's: 0.001, (30, 50, 70), True.


def _square(maps, low, high, value):
  maps[low:high + 1, low:high + 1] = np.maximum(maps[low:high + 1, low:high + 1], value)


def _literal_batch():
  """Four 224 x 224 images of one box (50, 50, 149, 149), a padding row, 224 x 224 maps.

  Each ground-truth class map is 1 on a core square, 0.5 on a ring square around it, 0 elsewhere:
  quantised 255 / 127 / 0, so thresholds up to 0.498 (level int(0.498 * 255) = 126) box the
  ring and from 0.499 (level 127) the core. A square [l, h] gives the box (l, l, h + 1, h + 1)
  (boundingRect's end is one past), area (h - l + 2)^2; the ground truth's area is 100^2:
    A: core [50, 149] IoU 100^2 / 101^2 = 0.980, ring [20, 179] 100^2 / 161^2 = 0.386;
    B: core [90, 109] 21^2 / 100^2 = 0.044, ring [50, 149] 0.980;
    C: core [60, 139] 81^2 / 100^2 = 0.656, ring [40, 159] 100^2 / 121^2 = 0.683;
    D: core [50, 149] 0.980, ring [10, 189] 100^2 / 181^2 = 0.305; D's top-1 class is wrong and
       the predicted class's map is a decoy that would box the object exactly.
  IoU >= 0.3: ring 4/4, core 3/4 -> 1.0 at 0.000; >= 0.5: ring 2/4 (B, C), core 3/4 (A, C, D)
  -> 0.75 at 0.499; >= 0.7: ring 1/4 (B), core 2/4 (A, D) -> 0.5 at 0.499. MaxBoxAccV2 = 0.75;
  GT-known Loc = 0.75; Top-1 Loc at 0.499: A and C (D's class is wrong) = 0.5; top-1 accuracy
  3/4.
  """
  squares = {0: ((50, 149), (20, 179)), 1: ((90, 109), (50, 149)), 2: ((60, 139), (40, 159)),
             3: ((50, 149), (10, 189))}
  classes = np.array([0, 1, 2, 0, -1])
  maps = np.zeros((5, 224, 224, 3), np.float32)
  for i, (core, ring) in squares.items():
    _square(maps[i, ..., classes[i]], *ring, 0.5)
    _square(maps[i, ..., classes[i]], *core, 1.0)
  _square(maps[3, ..., 2], 50, 148, 1.0)  # D's predicted class: a perfect box, never scored.
  maps[4] = np.nan  # Padding: never looked at.
  logits = np.zeros((5, 3), np.float32)
  logits[np.arange(4), [0, 1, 2, 2]] = 1.0
  edge = np.float32(50 / 224), np.float32(150 / 224)
  batch = {'mask': np.array([1, 1, 1, 1, 0], np.float32), 'class_id': classes.astype(np.int32),
           'image_id': np.array([0, 1, 2, 3, -1], np.int32),
           'orig_size': np.full((5, 2), 224, np.int32),
           'boxes': np.tile(np.array([edge[0], edge[0], edge[1], edge[1]], np.float32),
                            (5, 1, 1)),
           'box_labels': classes[:, None].astype(np.int32)}
  return batch, logits, maps


class TestLiteralMaps:

  def test_maxboxaccv2_gt_known_and_top1_loc_by_hand(self):
    batch, logits, maps = _literal_batch()
    scorer = wsol_benchmark.Scorer(NAMES, PROTOCOL)
    scorer.add({k: v[:2] for k, v in batch.items()}, logits[:2], maps[:2])  # Two batches.
    scorer.add({k: v[2:] for k, v in batch.items()}, logits[2:], maps[2:])
    got = scorer.compute()
    assert got['num_examples'] == 4 and got['top1_accuracy'] == 0.75
    np.testing.assert_allclose(got['maxboxaccv2_per_iou'], [1.0, 0.75, 0.5])
    np.testing.assert_allclose(got['maxboxaccv2_thresholds'], [0.0, 0.499, 0.499])
    assert got['maxboxaccv2'] == 0.75 and got['gt_known_loc'] == 0.75
    assert got['top1_loc'] == 0.5 and got['loc_threshold'] == pytest.approx(0.499)
    # Per class at 0.499: class 0 holds A (right) and D (wrong), class 1 B, class 2 C.
    assert got['per_class'] == {'top1_accuracy': [0.5, 1.0, 1.0],
                                'gt_known_loc': [1.0, 0.0, 1.0]}

  def test_the_same_as_wsol_max_box_acc(self):
    batch, logits, maps = _literal_batch()
    cams = [maps[i, ..., c] for i, c in enumerate(batch['class_id'][:4])]
    boxes = [np.array([[50, 50, 149, 149]])] * 4
    want = metrics.wsol_max_box_acc(cams, boxes, [(224, 224)] * 4, (0.3, 0.5, 0.7),
                                    multi_contour=True)
    got = evaluator.score(lambda images: (logits, maps), [dict(batch, image=np.zeros(5))], NAMES,
                          dataset='wsol/cub')
    np.testing.assert_allclose(got['maxboxaccv2_per_iou'], want)

  def test_iou_thresholds_and_contours_follow_the_protocol(self):
    # One image: its box (50, 50, 149, 149) is covered exactly by a small blob, and a larger
    # blob lies elsewhere: every contour finds the object, the largest contour misses it.
    batch, logits, maps = _literal_batch()
    batch, logits, maps = {k: v[:1] for k, v in batch.items()}, logits[:1], maps[:1] * 0
    _square(maps[0, ..., 0], 50, 148, 1.0)
    maps[0, 160:220, 0:200, 0] = 1.0
    every = wsol_benchmark.Scorer(NAMES, PROTOCOL)
    every.add(batch, logits, maps)
    largest = wsol_benchmark.Scorer(NAMES, PROTOCOL._replace(multi_contour_eval=False,
                                                             iou_threshold_list=(70,)))
    largest.add(batch, logits, maps)
    assert every.compute()['maxboxaccv2'] == 1.0
    got = largest.compute()  # V1 boxes: named MaxBoxAcc.
    assert 'maxboxaccv2' not in got and got['maxboxacc'] == 0.0
    assert got['maxboxacc_per_iou'] == [0.0] and got['gt_known_loc'] == 0.0

  def test_random_maps_agree_with_wsol_max_box_acc_on_the_metadatas_boxes(self):
    """Maps of any size on images of any size, several boxes: the boxes are the metadata's
    integers (x0, y0, x1, y1) as they are, not one pixel wider (sweep.wsolevaluation_ious's
    VOC convention); a process pool gives the same counts."""
    rng = np.random.default_rng(0)
    n, boxes, sizes = 6, [], []
    batch = {'mask': np.ones(n, np.float32), 'class_id': rng.integers(0, 3, n).astype(np.int32),
             'image_id': np.arange(n, dtype=np.int32), 'orig_size': np.zeros((n, 2), np.int32),
             'boxes': np.zeros((n, 2, 4), np.float32), 'box_labels': np.full((n, 2), -1, np.int32)}
    for i in range(n):
      h, w = rng.integers(40, 300, 2)
      k = 1 + i % 2
      x0, y0 = rng.integers(0, w // 2, k), rng.integers(0, h // 2, k)
      x1, y1 = x0 + rng.integers(0, w // 2, k), y0 + rng.integers(0, h // 2, k)
      boxes.append(np.stack([x0, y0, x1, y1], 1))
      sizes.append((w, h))
      batch['orig_size'][i] = h, w
      batch['boxes'][i, :k] = np.stack([y0 / h, x0 / w, (y1 + 1) / h, (x1 + 1) / w], 1)
      batch['box_labels'][i, :k] = batch['class_id'][i]
    maps = rng.normal(size=(n, 7, 9, 3)).astype(np.float32)
    logits = rng.normal(size=(n, 3)).astype(np.float32)
    cams = [maps[i, ..., c] for i, c in enumerate(batch['class_id'])]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      for executor in (None, pool):
        scorer = wsol_benchmark.Scorer(NAMES, PROTOCOL, pool=executor)
        scorer.add(batch, logits, maps)
        got = scorer.compute()
        np.testing.assert_allclose(got['maxboxaccv2_per_iou'], metrics.wsol_max_box_acc(
            cams, boxes, sizes, (0.3, 0.5, 0.7), multi_contour=True))
        assert got['gt_known_loc'] == got['maxboxaccv2_per_iou'][1]


class TestMasks:

  def test_pxap_of_the_ground_truth_class_maps_pooled(self):
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 5, 5, 3)).astype(np.float32)
    masks = rng.choice(np.array([0, 1, 255], np.uint8), size=(3, 16, 16))
    classes = np.array([2, 0, 2], np.int32)
    logits = np.eye(3, dtype=np.float32)[[2, 1, 2]]
    batch = {'mask': np.ones(3, np.float32), 'class_id': classes, 'image_id': np.arange(3),
             'object_mask': masks}
    scorer = evaluator.make_scorer(NAMES, dataset='wsol/openimages')
    scorer.add(batch, logits, maps)
    got = scorer.compute()
    cams = [maps[i, ..., c] for i, c in enumerate(classes)]
    assert got['pxap'] == pytest.approx(metrics.wsol_pxap(cams, masks))
    assert got['top1_accuracy'] == pytest.approx(2 / 3) and 'maxboxaccv2' not in got
    assert got['per_class']['pxap'][0] == pytest.approx(metrics.wsol_pxap(cams[1:2], masks[1:2]))
    assert np.isnan(got['per_class']['pxap'][1])

  def test_a_perfect_map_scores_one(self):
    mask = np.zeros((1, 8, 8), np.uint8)
    mask[0, 2:5, 3:6] = 1
    mask[0, 0, 0] = 255
    maps = np.where(mask == 1, 1.0, 0.0).astype(np.float32)[..., None]  # 8 x 8: no resize.
    scorer = wsol_benchmark.Scorer(NAMES[:1], PROTOCOL)
    scorer.add({'mask': np.ones(1), 'class_id': np.zeros(1, np.int32), 'image_id': np.zeros(1),
                'object_mask': mask}, np.zeros((1, 1)), maps)
    assert scorer.compute()['pxap'] == 1.0


def test_classification_only_and_class_count_check():
  batch, logits, maps = _literal_batch()
  scorer = wsol_benchmark.Scorer(NAMES, PROTOCOL, localization=False)
  scorer.add(batch, logits, maps)
  assert scorer.compute().keys() == {'num_examples', 'top1_accuracy', 'per_class'}
  with pytest.raises(UserError, match='predicts 2 classes but the data set has 3'):
    scorer.add(batch, logits[:, :2], maps)


def test_protocol_from_config_and_report():
  import ml_collections  # pylint: disable=g-import-not-at-top
  protocol = wsol_benchmark.Protocol.from_config(ml_collections.ConfigDict(
      {'iou_threshold_list': [50], 'multi_contour_eval': False}))
  assert protocol == (0.001, (50,), False)
  assert wsol_benchmark.Protocol.from_config() == (0.001, (30, 50, 70), True)
  batch, logits, maps = _literal_batch()
  scorer = wsol_benchmark.Scorer(NAMES, PROTOCOL)
  scorer.add(batch, logits, maps)
  result = dict(scorer.compute(), protocol=PROTOCOL.describe())
  text = report.markdown_report(result, NAMES, 'wsol/cub', 'test', 7)
  assert 'wsolevaluation (clovaai' in text and 'multi_contour_eval = True' in text
  assert '| maxboxaccv2 |' in text and 'ResNet50 63.0' in text
  assert text.index('| maxboxaccv2 |') < text.index('| top1_loc |') < text.index('| gt_known_loc')
  assert 'MaxBoxAccV2 at IoU 30%: 1.000 (CAM threshold 0.000), 50%: 0.750' in text
  assert '| class | top1_accuracy | gt_known_loc |' in text
  assert report.bar_metric('wsol/openimages') == 'pxap'
