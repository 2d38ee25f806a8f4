"""Tests of PartsMeasures' PxAP on rendered parts examples with literal fake class maps."""

import json
import math

import ml_collections
import numpy as np
import pytest

from excam_jax.data import synthetic
from excam_jax.evaluation import metrics
from excam_jax.evaluation import parts
from excam_jax.evaluation import report

P = ml_collections.ConfigDict({'seed': 0, 'preset': 'small', 'num_classes': 6, 'image_size': 64})
COUNT = 4  # Examples 0-3 of 'test' hold classes {0}, {1, 3, 4}, {3, 5}, {1}: class 2 has none.


def _examples():
  return [synthetic.render(P.seed, 'test', i, **synthetic.options(P)) for i in range(COUNT)]


def _object_masks(ex):
  """Class c -> the uint8 PxAP mask of every class in the example (no difficult objects here)."""
  assert not ex['difficult'].any()
  objects = ex['body_masks'] | ex['part_masks']
  return {int(c): objects[ex['labels'] == c].any(axis=0).astype(np.uint8) for c in ex['labels']}


def _measure(class_maps):
  measures = parts.PartsMeasures(P, 'test')
  measures.add({'mask': np.ones(COUNT), 'image_id': np.arange(COUNT)}, class_maps)
  return measures.compute()


def test_map_equal_to_the_object_mask_scores_one():
  maps = np.zeros((COUNT, 64, 64, P.num_classes), np.float32)
  for i, ex in enumerate(_examples()):
    for c, mask in _object_masks(ex).items():
      maps[i, ..., c] = mask
  got = _measure(maps)
  assert got['pxap'] == 1.0 and got['mean_class_pxap'] == 1.0
  assert [math.isnan(v) for v in got['per_class_pxap']] == [False, False, True, False, False, False]
  assert {f'parts_{k}' for k in parts.MEASURES} | {'parts_argmax_in'} <= set(got)


def test_constant_map_scores_the_object_fraction():
  # Every score is 0: PxAP = P / (P + N) over the pooled pixels (see pxap_test), and per class
  # over the class's samples; each sample has P = its object's pixels, N = 64 * 64 - P.
  got = _measure(np.zeros((COUNT, 8, 8, P.num_classes), np.float32))
  sizes = [(c, int(m.sum())) for ex in _examples() for c, m in _object_masks(ex).items()]
  assert got['pxap'] == pytest.approx(sum(s for _, s in sizes) / (len(sizes) * 64 * 64))
  for c in (0, 1, 3, 4, 5):
    mine = [s for k, s in sizes if k == c]
    assert got['per_class_pxap'][c] == pytest.approx(sum(mine) / (len(mine) * 64 * 64))
  assert got['mean_class_pxap'] == pytest.approx(np.nanmean(got['per_class_pxap']))


def test_low_resolution_maps_are_resized_by_pxap_itself():
  """The raw 8 x 8 maps go to PxAP (cubic resize), not the bilinear upsampled ones."""
  maps = np.zeros((COUNT, 8, 8, P.num_classes), np.float32)
  cams, masks, classes = [], [], []
  for i, ex in enumerate(_examples()):
    for c, mask in _object_masks(ex).items():
      maps[i, ..., c] = mask.reshape(8, 8, 8, 8).mean(axis=(1, 3))  # 8 x 8 block means.
      cams.append(maps[i, ..., c])
      masks.append(mask)
      classes.append(c)
  got = _measure(maps)
  assert got['pxap'] == metrics.wsol_pxap(cams, masks)
  assert 0.8 < got['pxap'] < 1.0
  one = [k for k, c in enumerate(classes) if c == 3]
  assert got['per_class_pxap'][3] == metrics.wsol_pxap([cams[k] for k in one],
                                                       [masks[k] for k in one])


def test_report_and_json_show_pxap():
  got = _measure(np.zeros((COUNT, 8, 8, P.num_classes), np.float32))
  result = {'num_examples': COUNT, 'per_class': {'corloc': [0.5] * P.num_classes}, **got}
  text = report.markdown_report(result, synthetic.class_names(P.num_classes), 'parts', 'test', 1)
  assert f'| pxap | {report.METRICS["pxap"]} | {got["pxap"]:.3f} |' in text
  assert f'| mean_class_pxap | {report.METRICS["mean_class_pxap"]} |' in text
  assert '| class | corloc | pxap |' in text
  mean_row = text.splitlines()[-1]
  assert mean_row.endswith(f'| {got["mean_class_pxap"]:.3f} |')
  saved = json.loads(json.dumps(report.jsonable(result), allow_nan=False))
  assert saved['per_class_pxap'][2] is None and saved['pxap'] == pytest.approx(got['pxap'])
