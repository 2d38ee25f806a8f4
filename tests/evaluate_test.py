"""Tests of the evaluation loop with a fake model of fixed outputs and hand-worked metrics."""

import json
import math
import os

import numpy as np
import pytest

import cli_util
from configs import tiny
from excam_jax import visualize
from excam_jax.errors import ConfigError, UserError
from excam_jax.evaluation import boxes
from excam_jax.evaluation import evaluator
from excam_jax.evaluation import report
from excam_jax import checkpoint_eval
from excam_jax import inference
from excam_jax.evaluation import sweep
from excam_jax.evaluation import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def _score(predict, batches, names, *, box_grid=None, sweep_grid=None, sweep_step=0.01,
           localization=True, workers=0):
  protocol = evaluator.Protocol(box_grid=box_grid, sweep_grid=sweep_grid, sweep_step=sweep_step)
  return evaluator.score(predict, batches, names, protocol, localization=localization,
                         workers=workers)


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
  result = _score(predict, _split(batch, [1, 2]), NAMES, box_grid=grids[0],
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
  result = _score(shifted, _split(batch, [3]), NAMES, box_grid=None, sweep_grid=None,
                             sweep_step=0.25, workers=0)
  assert result['per_class']['localization_ap'] == [0.0, 1.0]
  assert result['per_class']['corloc'] == [0.0, 1.0]
  assert result['localization_ap'] == pytest.approx(0.5)
  assert result['expansion'] == pytest.approx(1.0)
  assert result['pointwise_ap'] == pytest.approx(1.0)


def test_difficult_only_samples_leave_the_box_metrics():
  """Image 0's missed class-0 object (as in the test above) made difficult: the only class-0
  sample leaves CorLoc, MaxBoxAcc and expansion (NaN per class), as it leaves the APs."""
  predict, batch = _fixed_outputs()
  logits, maps = predict(np.arange(3))
  maps[0, :, :, 0] = maps[0, ::-1, ::-1, 0]
  shifted = lambda index: (logits[index], maps[index])
  kept = _score(shifted, _split(batch, [3]), NAMES, sweep_step=0.25)
  batch['box_difficult'][0, 0] = True
  skipped = _score(shifted, _split(batch, [3]), NAMES, sweep_step=0.25)
  assert kept['per_class']['corloc'] == [0.0, 1.0] and kept['corloc'] == pytest.approx(0.5)
  assert kept['maxboxacc'] == pytest.approx(0.5)
  assert np.isnan(skipped['per_class']['corloc'][0]) and skipped['per_class']['corloc'][1] == 1.0
  assert skipped['corloc'] == pytest.approx(1.0)
  assert skipped['maxboxacc'] == pytest.approx(1.0)
  assert np.isnan(skipped['per_class']['localization_ap'][0])
  assert 'skip' in evaluator.Protocol().describe()['difficult']


def test_process_pool_gives_the_same_numbers():
  predict, batch = _fixed_outputs()
  inline = _score(predict, _split(batch, [1, 2]), NAMES, sweep_step=0.25, workers=0)
  pooled = _score(predict, _split(batch, [1, 2]), NAMES, sweep_step=0.25, workers=2)
  assert pooled == inline


def test_classification_only():
  predict, batch = _fixed_outputs()
  result = _score(predict, _split(batch, [3]), NAMES, localization=False)
  assert set(result) == {'num_examples', 'classification_map', 'per_class'}
  assert result['per_class'] == {'classification_ap': [1.0, 1.0]}


def test_nan_maps_are_a_clear_error():
  predict, batch = _fixed_outputs()
  batch['mask'][2] = 1.0  # The NaN row is now a real example.
  with pytest.raises(UserError, match='NaN'):
    _score(predict, _split(batch, [3]), NAMES, workers=0)


def test_class_count_mismatch():
  predict, batch = _fixed_outputs()
  with pytest.raises(UserError, match='classes'):
    _score(predict, _split(batch, [3]), ['a', 'b', 'c'], workers=0)


def test_class_without_examples_is_nan_not_zero():
  predict, batch = _fixed_outputs()
  batch['box_labels'][1, 0] = 0  # Image 1 now holds class 0 (a miss); class 1 has no boxes.
  batch['label'][1] = (1, 0)
  result = _score(predict, _split(batch, [3]), NAMES, workers=0)
  assert math.isnan(result['per_class']['corloc'][1])
  assert result['per_class']['corloc'][0] == pytest.approx(0.5)


def test_markdown_report_names_protocols_and_voc_references():
  predict, batch = _fixed_outputs()
  result = _score(predict, _split(batch, [3]), NAMES, workers=0)
  names20 = list(report.VOC_CLASSES)
  result['per_class'] = {k: v + [float('nan')] * 18 for k, v in result['per_class'].items()}
  result['protocol'] = evaluator.Protocol(box_grid=None, maxboxacc='wsolevaluation').describe()
  text = report.markdown_report(result, names20, 'voc/2012', 'validation', 7)
  assert 'step 7' in text and 'VOC detection AP, all-point' in text
  assert 'Scored with: threshold = 0.0; box_grid = original size; maxboxacc = wsolevaluation' in text
  assert 'sweep_grid = 224 x 224 (cubic); sweep_step = 0.001' in text
  assert 'ex-CAM 0.70' in text and 'WILDCAT 82.9' in text  # Summary references.
  assert 'split and protocol not stated' in text  # The thesis's localization AP, labelled.
  # Per-class reference columns, labelled with their protocol.
  assert 'ex-CAM (thesis T1, protocol not stated) [localization_ap]' in text
  aeroplane = next(line for line in text.splitlines() if line.startswith('| aeroplane'))
  assert aeroplane.endswith('| 0.80 | 0.61 | 1.00 |')
  assert '| cat | n/a |' in text
  parts = report.markdown_report(result, names20, 'parts', 'validation', 7)
  assert 'thesis' not in parts  # No reference numbers for the parts data set.


def test_jsonable_turns_nan_into_null():
  got = report.jsonable({'a': float('nan'), 'b': [np.float32(0.5), np.int64(3)], 'c': 'x'})
  assert json.dumps(got) == '{"a": null, "b": [0.5, 3], "c": "x"}'


def test_restore_and_evaluate_a_checkpoint(tmp_path, write_tiny_checkpoint):
  """A tiny run's checkpoint is restored with its config and scored on the parts data set."""
  config = write_tiny_checkpoint(tmp_path, 5)
  out = checkpoint_eval.evaluate_checkpoint(str(tmp_path), figures=2, workers=0)
  assert out == os.path.join(str(tmp_path), 'eval', '5')
  assert sorted(os.listdir(out)) == ['ap_bars.png', 'boxes.png', 'cams.png', 'metrics.json',
                                     'tables.md']
  with open(os.path.join(out, 'metrics.json')) as f:
    metrics_json = json.load(f)
  assert metrics_json['num_examples'] == config.data.parts.num_eval
  assert metrics_json['step'] == 5 and metrics_json['dataset'] == 'parts'
  for key in ('classification_map', 'localization_ap', 'pointwise_ap', 'corloc', 'maxboxacc',
              'maxboxaccv2', 'parts_body_coverage', 'parts_map_precision', 'pxap',
              'mean_class_pxap'):
    assert key in metrics_json
  assert len(metrics_json['per_class']['corloc']) == config.data.parts.num_classes
  assert len(metrics_json['per_class_pxap']) == config.data.parts.num_classes
  with open(os.path.join(out, 'tables.md')) as f:
    tables = f.read()
  assert 'parts data set: fraction of body pixels' in tables and '| mean_class_pxap |' in tables
  # The other split goes to its own folder.
  other = checkpoint_eval.evaluate_checkpoint(str(tmp_path), split='test', figures=0, workers=0)
  assert other == os.path.join(out, 'test')


def test_model_overrides_change_only_inference_fields():
  config = tiny.get_config()
  del config.model['acol_fusion']  # A checkpoint's config from before the field existed.
  model = inference.model_fields(config, {'acol_fusion': 'logits'})
  assert model.acol_fusion == 'logits' and 'acol_fusion' not in config.model  # A copy.
  assert inference.model_fields(config, {'acol_fusion': None}).get('acol_fusion') is None
  with pytest.raises(ConfigError, match="config.model.acol_fusion='max' is invalid"):
    inference.model_fields(config, {'acol_fusion': 'max'})
  with pytest.raises(UserError, match='model.num_maps cannot change at evaluation'):
    inference.model_fields(config, {'num_maps': 2})


def test_cams_are_drawn_on_their_own_scale(tmp_path, monkeypatch):
  """cams.png draws the heat it is given: an ACoL-like map in [-0.5, 0.5] spans all colours."""
  drawn = []
  monkeypatch.setattr(visualize, 'overlay_cam', lambda image, cam: drawn.append(cam) or image)
  maps = np.array([[-0.5, 0.5], [0.5, 0.0]], np.float32)[None, :, :, None]  # (1, 2, 2, C = 1)
  examples = {'image': np.zeros((1, 8, 8, 3), np.float32), 'orig_size': np.array([[8, 8]]),
              'box_labels': np.array([[0]]), 'boxes': np.array([[[0, 0, 0.5, 0.5]]]),
              'logits': np.array([[1.0]]), 'class_maps': maps}
  for heat, low, high in ((visualize.heat_fn({'head': 'acol'}), 0.0, 1.0),
                          (visualize.sigmoid, 1 / (1 + np.exp(0.5)), 1 / (1 + np.exp(-0.5)))):
    drawn.clear()
    checkpoint_eval.write_figures(str(tmp_path), examples, ['a'], {'localization_ap': [1.0]}, 'parts',
                         0.0, heat=heat)
    assert len(drawn) == 1 and drawn[0].shape == (8, 8)
    assert drawn[0].min() == pytest.approx(low) and drawn[0].max() == pytest.approx(high)
  assert os.path.isfile(os.path.join(tmp_path, 'cams.png'))


def test_command_reports_a_missing_checkpoint(tmp_path):
  code, _, lines = cli_util.run_command('excam_jax.evaluate', f'--workdir={tmp_path}')
  cli_util.assert_one_error_line(code, lines, 'no checkpoints')


def test_load_compare(tmp_path):
  folder = tmp_path / 'wildcat_run' / 'eval' / '3'
  folder.mkdir(parents=True)
  (folder / 'metrics.json').write_text(json.dumps(
      {'per_class': {'localization_ap': [0.5, None], 'localization_ap_07': [0.25, 0.75]}}))
  name, values = report.load_compare(str(folder / 'metrics.json'), 2)
  assert name == 'wildcat_run' and values[0] == 0.5 and math.isnan(values[1])
  assert report.load_compare(str(folder / 'metrics.json'), 2, 'localization_ap_07')[1] == [
      0.25, 0.75]
  with pytest.raises(UserError, match='same data set'):
    report.load_compare(str(folder / 'metrics.json'), 3)
  (tmp_path / 'bad.json').write_text('{')
  with pytest.raises(UserError, match='metrics.json'):
    report.load_compare(str(tmp_path / 'bad.json'), 2)


class TestSweep:

  def test_second_peak_by_hand(self):
    maps = np.array([[[0, 1, 0, 0], [0, 0, 0, 3], [2, 0, 0, 0]],
                     [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]], np.float32)
    np.testing.assert_array_equal(sweep.second_peak(maps), [2, -np.inf])

  def test_matches_labelling_every_threshold(self):
    """The shortcut above the second peak gives what labelling every (tau, map) gives."""
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(6, 4, 4)).astype(np.float32)
    maps[0] = 0.0  # Constant: no component at any tau.
    maps[1] = np.outer(np.hanning(4), np.hanning(4))  # One peak: every slot is a shortcut.
    heights = np.array([20, 30, 17, 40, 25, 33])
    widths = np.array([30, 20, 41, 40, 25, 12])
    gt = np.tile(np.array([[[2, 3, 15, 12], [0, 0, 5, 5]]]), (6, 1, 1))
    valid = np.array([[True, True]] * 5 + [[True, False]])
    taus = np.arange(0, 1, 0.05)
    v1, v2 = sweep.exact_ious(maps, heights, widths, gt, valid, taus, 9)
    grids = boxes.normalize_minmax(boxes.upsample(maps, 9, 9))
    for p in range(6):
      for t, tau in enumerate(taus):
        found = boxes.cam_to_boxes(grids[p], tau)
        pix = [boxes.grid_boxes_to_pixels([b], 9, 9, heights[p], widths[p])[0] for b in found]
        ious = [metrics.box_iou([b], gt[p][valid[p]]).max() for b in pix]
        assert v1[p, t] == pytest.approx(ious[0] if ious else 0.0)
        assert v2[p, t] == pytest.approx(max(ious) if ious else 0.0)
