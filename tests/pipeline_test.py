"""Tests of the train/eval pipelines on the synthetic data set (tiny config)."""

import itertools

import numpy as np
import pytest

from configs import tiny
from excam_jax.data import pipeline
from excam_jax.data import preprocess
from excam_jax.data import synthetic
from excam_jax.errors import UserError


def _config(**overrides):
  config = tiny.get_config()  # 32 train / 12 eval images, 3 classes, batch 8.
  config.data.parts.image_size = 64
  config.data.image_size = 64  # Native size: the pipeline's only pixel change is the normalisation.
  for key, value in overrides.items():
    section = 'train' if key in ('seed', 'batch_size') else 'data'
    config[section][key] = value
  return config


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _same(a, b):
  return all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def _concat(batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_dataset_info():
  info = pipeline.dataset_info(_config())
  assert info == pipeline.DatasetInfo('parts', 3, synthetic.class_names(3), 32, 12)


def test_train_batch_format():
  batch = next(pipeline.train_batches(_config()))
  shapes = {k: (v.shape, v.dtype) for k, v in batch.items()}
  assert shapes == {
      'image': ((8, 64, 64, 3), np.float32), 'label': ((8, 3), np.float32),
      'ignore': ((8, 3), bool), 'boxes': ((8, 3, 4), np.float32),
      'box_labels': ((8, 3), np.int32), 'box_difficult': ((8, 3), bool),
      'orig_size': ((8, 2), np.int32), 'image_id': ((8,), np.int32), 'mask': ((8,), np.float32)}
  np.testing.assert_array_equal(batch['mask'], 1.0)
  np.testing.assert_array_equal(batch['orig_size'], [[64, 64]] * 8)


def test_train_images_are_the_rendered_ones_maybe_mirrored_with_their_boxes():
  config = _config()
  for batch in _take(pipeline.train_batches(config), 2):
    for i, image_id in enumerate(batch['image_id']):
      ex = synthetic.render(0, 'train', int(image_id), 'main', 3, 64)
      want = preprocess.normalize(ex['image'].astype(np.float32) / 255)
      k = len(ex['labels'])
      # Decided on the image (a box can be its own mirror); its boxes must follow it.
      mirrored = not np.allclose(batch['image'][i], want, atol=1e-5)
      if mirrored:
        want, boxes = want[:, ::-1], ex['boxes'][:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, 1, 0, 1]
      else:
        boxes = ex['boxes']
      np.testing.assert_allclose(batch['image'][i], want, atol=1e-5)
      np.testing.assert_allclose(batch['boxes'][i, :k], boxes, atol=1e-6)
      label = np.zeros(3)
      label[ex['labels']] = 1
      np.testing.assert_array_equal(batch['label'][i], label)


def test_flips_occur_both_ways():
  flags = []
  for batch in _take(pipeline.train_batches(_config()), 4):
    for i, image_id in enumerate(batch['image_id']):
      ex = synthetic.render(0, 'train', int(image_id), 'main', 3, 64)
      flags.append(np.allclose(batch['boxes'][i, 0], ex['boxes'][0]))
  assert 0 < np.mean(flags) < 1


def test_each_epoch_visits_every_example_once_in_a_new_order():
  ids = [b['image_id'] for b in _take(pipeline.train_batches(_config()), 8)]
  first, second = np.concatenate(ids[:4]), np.concatenate(ids[4:])
  np.testing.assert_array_equal(np.sort(first), np.arange(32))
  np.testing.assert_array_equal(np.sort(second), np.arange(32))
  assert not np.array_equal(first, second)


def test_deterministic_and_seeded():
  a = _take(pipeline.train_batches(_config()), 3)
  b = _take(pipeline.train_batches(_config()), 3)
  assert all(_same(x, y) for x, y in zip(a, b))
  c = next(pipeline.train_batches(_config(seed=1)))
  assert not np.array_equal(a[0]['image_id'], c['image_id'])


def test_exact_resume_across_epochs():
  reference = _take(pipeline.train_batches(_config()), 7)
  for start in (1, 4, 5):  # 4 steps per epoch: 4 and 5 resume inside the second epoch.
    resumed = _take(pipeline.train_batches(_config(), start_step=start), 7 - start)
    assert all(_same(x, y) for x, y in zip(resumed, reference[start:]))


def test_global_batch_does_not_depend_on_process_count():
  reference = _take(pipeline.train_batches(_config(), start_step=2), 2)
  parts = [_take(pipeline.train_batches(_config(), start_step=2, process_index=i,
                                        process_count=4), 2) for i in range(4)]
  assert parts[0][0]['image'].shape[0] == 2
  for step in range(2):
    assert _same(_concat([p[step] for p in parts]), reference[step])


def test_eval_visits_every_example_once_with_mask():
  batches = list(pipeline.eval_batches(_config()))
  assert len(batches) == 2  # 12 examples in global batches of 8.
  merged = _concat(batches)
  np.testing.assert_array_equal(merged['image_id'], list(range(12)) + [-1] * 4)
  np.testing.assert_array_equal(merged['mask'], [1] * 12 + [0] * 4)
  np.testing.assert_array_equal(merged['box_labels'][12:], -1)
  np.testing.assert_array_equal(merged['image'][12:], 0)
  for i in (0, 11):
    ex = synthetic.render(0, 'validation', i, 'main', 3, 64)
    want = (ex['image'].astype(np.float32) / 255 - preprocess.IMAGENET_MEAN) / preprocess.IMAGENET_STD
    np.testing.assert_allclose(merged['image'][i], want, atol=1e-5)
    k = len(ex['labels'])
    np.testing.assert_allclose(merged['boxes'][i, :k], ex['boxes'])
    np.testing.assert_array_equal(merged['box_difficult'][i, :k], ex['difficult'])
    only_difficult = [c for c in range(3) if c in ex['labels'][ex['difficult']]
                      and c not in ex['labels'][~ex['difficult']]]
    np.testing.assert_array_equal(np.flatnonzero(merged['ignore'][i]), only_difficult)


def test_eval_splits_over_processes():
  reference = list(pipeline.eval_batches(_config()))
  parts = [list(pipeline.eval_batches(_config(), process_index=i, process_count=2))
           for i in range(2)]
  assert [len(p) for p in parts] == [2, 2]
  for step in range(2):
    assert _same(_concat([p[step] for p in parts]), reference[step])


def test_eval_resizes_to_image_size():
  batch = next(pipeline.eval_batches(_config(image_size=32), 'train'))
  assert batch['image'].shape == (8, 32, 32, 3)
  np.testing.assert_array_equal(batch['orig_size'], [[64, 64]] * 8)
  np.testing.assert_array_equal(batch['image_id'], np.arange(8))


@pytest.mark.parametrize('overrides, match', [
    ({'batch_size': 6}, 'batch_size'), ({'dataset': 'coco'}, 'config.data.dataset'),
    ({'train_split': 'trainval'}, 'splits')])
def test_user_errors(overrides, match):
  with pytest.raises(UserError, match=match):
    pipeline.train_batches(_config(**overrides), process_count=4)
