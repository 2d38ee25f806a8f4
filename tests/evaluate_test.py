"""Tests of the evaluation loop with a fake model of fixed outputs and hand-worked metrics."""

import math

import numpy as np
import pytest

from excam_jax.errors import UserError
from excam_jax.evaluation import evaluate

NAMES = ['a', 'b']


def _fixed_outputs():
  """Two images and a padding row; see the hand computation in the test docstrings.

  Image 0 (4 x 4 pixels): class 0 in the top-left quarter, pixel box (0, 0, 1, 1).
  Image 1 (4 x 8 pixels): class 1 in the right half, pixel box (4, 0, 7, 3).
  """
  maps = np.full((3, 2, 2, 2), -5.0, np.float32)
  maps[0, 0, 0, 0] = 5.0  # z = -5 + 10 * R[i, 0] * C[j, 0] after upsampling.
  maps[1, :, 1, 1] = 5.0  # z = -5 + 10 * C[j, 1].
  maps[2] = np.nan  # Padding: never looked at.
  logits = np.array([[2.0, -1.0], [-3.0, 1.0], [9.0, 9.0]], np.float32)
  batch = {
      'image': np.arange(3),
      'label': np.array([[1, 0], [0, 1], [1, 1]], np.float32),
      'ignore': np.zeros((3, 2), bool),
      'boxes': np.array([[[0, 0, 0.5, 0.5], [0, 0, 0, 0]], [[0, 0.5, 1, 1], [0, 0, 0, 0]],
                         [[0, 0, 1, 1], [0, 0, 0, 0]]], np.float32),
      'box_labels': np.array([[0, -1], [1, -1], [0, -1]], np.int32),
      'box_difficult': np.zeros((3, 2), bool),
      'orig_size': np.array([[4, 4], [4, 8], [4, 4]], np.int32),
      'image_id': np.array([10, 11, 0], np.int32),
      'mask': np.array([1, 1, 0], np.float32),
  }
  predict = lambda index: (logits[index], maps[index])
  return predict, batch


def _split(batch, parts):
  """Splits a batch into consecutive smaller batches of the given sizes."""
  start = 0
  for size in parts:
    yield {k: v[start:start + size] for k, v in batch.items()}
    start += size


@pytest.mark.parametrize('grids', [(None, None), (4, 4)])
def test_metrics_by_hand(grids):
  """Both images are localised exactly by their maps (z > 0 is the ground-truth box).

  MaxBoxAcc at taus {0, .25, .5, .75}: image 0's normalised map is R[i,0] C[j,0] with weights
  (1, .75, .25, 0): tau = 0 gives box (0,0,2,2), IoU 4/9; tau = .25 gives (0,0,1,1), IoU 1.
  Image 1's map is C[j,1]: tau = 0 gives (2,0,7,3), IoU 16/24; tau = .25 gives (3..7) or (4..7).
  So V1 peaks at tau = .25 with accuracy 1; V2's delta .3 already at tau = 0.
  """
  predict, batch = _fixed_outputs()
  result = evaluate.evaluate(predict, _split(batch, [1, 2]), NAMES, box_grid=grids[0],
                             sweep_grid=grids[1], sweep_step=0.25, workers=0)
  assert result['num_examples'] == 2
  for key in ('classification_map', 'localization_ap', 'localization_ap_07', 'pointwise_ap',
              'corloc', 'maxboxacc', 'maxboxaccv2', 'expansion'):
    assert result[key] == pytest.approx(1.0), key
  assert result['maxboxacc_threshold'] == 0.25
  assert result['maxboxaccv2_thresholds'] == [0.0, 0.25, 0.25]
  assert result['per_class']['corloc'] == [1.0, 1.0]


def test_misses_and_false_positives():
  """Shifting image 0's blob to the bottom-right makes its box miss (IoU 0).

  Class 0 then has one FP detection and no TP: AP 0; CorLoc 0; the box has the ground truth's
  area, so expansion stays 1. The argmax (3, 3) is 2 pixels from the box, within tolerance 18.
  """
  predict, batch = _fixed_outputs()
  logits, maps = predict(np.arange(3))
  maps[0, :, :, 0] = maps[0, ::-1, ::-1, 0]  # Blob in the bottom-right: box (2, 2, 3, 3).
  shifted = lambda index: (logits[index], maps[index])
  result = evaluate.evaluate(shifted, _split(batch, [3]), NAMES, box_grid=None, sweep_grid=None,
                             sweep_step=0.25, workers=0)
  assert result['per_class']['localization_ap'] == [0.0, 1.0]
  assert result['per_class']['corloc'] == [0.0, 1.0]
  assert result['localization_ap'] == pytest.approx(0.5)
  assert result['expansion'] == pytest.approx(1.0)
  assert result['pointwise_ap'] == pytest.approx(1.0)


def test_process_pool_gives_the_same_numbers():
  predict, batch = _fixed_outputs()
  inline = evaluate.evaluate(predict, _split(batch, [1, 2]), NAMES, sweep_step=0.25, workers=0)
  pooled = evaluate.evaluate(predict, _split(batch, [1, 2]), NAMES, sweep_step=0.25, workers=2)
  assert pooled == inline


def test_classification_only():
  predict, batch = _fixed_outputs()
  result = evaluate.evaluate(predict, _split(batch, [3]), NAMES, localization=False)
  assert set(result) == {'num_examples', 'classification_map', 'per_class'}
  assert result['per_class'] == {'classification_ap': [1.0, 1.0]}


def test_nan_maps_are_a_clear_error():
  predict, batch = _fixed_outputs()
  batch['mask'][2] = 1.0  # The NaN row is now a real example.
  with pytest.raises(UserError, match='NaN'):
    evaluate.evaluate(predict, _split(batch, [3]), NAMES, workers=0)


def test_class_count_mismatch():
  predict, batch = _fixed_outputs()
  with pytest.raises(UserError, match='classes'):
    evaluate.evaluate(predict, _split(batch, [3]), ['a', 'b', 'c'], workers=0)


def test_class_without_examples_is_nan_not_zero():
  predict, batch = _fixed_outputs()
  batch['box_labels'][1, 0] = 0  # Image 1 now holds class 0 (a miss); class 1 has no boxes.
  batch['label'][1] = (1, 0)
  result = evaluate.evaluate(predict, _split(batch, [3]), NAMES, workers=0)
  assert math.isnan(result['per_class']['corloc'][1])
  assert result['per_class']['corloc'][0] == pytest.approx(0.5)
