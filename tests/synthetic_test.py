"""Tests of the synthetic "parts" data set: exact boxes, masks, determinism, the presets' looks."""

import numpy as np
import pytest

from excam_jax.data import synthetic
from excam_jax.errors import UserError

SIZE = 64


def _examples(preset, count=24, seed=0, size=SIZE):
  return [synthetic.render(seed, 'train', i, preset, 6, size) for i in range(count)]


@pytest.mark.parametrize('preset', sorted(synthetic.PRESETS))
def test_boxes_enclose_every_object_pixel(preset):
  for ex in _examples(preset):
    k = len(ex['labels'])
    assert k in (1, 2, 3), k
    assert ex['image'].shape == (SIZE, SIZE, 3) and ex['image'].dtype == np.uint8
    assert ex['boxes'].shape == (k, 4) and ex['body_masks'].shape == (k, SIZE, SIZE)
    for box, body, part in zip(ex['boxes'], ex['body_masks'], ex['part_masks']):
      ymin, xmin, ymax, xmax = box * SIZE
      assert 0 <= ymin < ymax <= SIZE and 0 <= xmin < xmax <= SIZE
      rows, cols = np.nonzero(body | part)
      # Pixel (r, c) covers [r, r + 1) x [c, c + 1): it lies in the box when its span does.
      assert (rows >= ymin).all() and (rows + 1 <= ymax).all()
      assert (cols >= xmin).all() and (cols + 1 <= xmax).all()
      assert np.allclose(box * SIZE, np.round(box * SIZE), atol=1e-4)  # Edges on pixel borders.


def test_masks_are_disjoint_and_labels_distinct():
  for ex in _examples('small'):
    masks = np.concatenate([ex['body_masks'], ex['part_masks']])
    assert masks.sum(0).max() <= 1
    assert len(set(ex['labels'].tolist())) == len(ex['labels'])
    assert ((ex['labels'] >= 0) & (ex['labels'] < 6)).all()


def test_visible_object_boxes_are_tight_when_unoccluded():
  """A lone object inside the image touches all four sides of its box."""
  checked = 0
  for ex in _examples('small', count=40):
    for box, body, part, hard in zip(ex['boxes'], ex['body_masks'], ex['part_masks'],
                                     ex['difficult']):
      if len(ex['labels']) > 1 or hard:
        continue
      rows, cols = np.nonzero(body | part)
      np.testing.assert_allclose(
          box * SIZE, [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], atol=1e-4)
      checked += 1
  assert checked > 0


def test_same_seed_same_data_other_seed_other_data():
  a = synthetic.render(3, 'train', 5, 'main', 6, SIZE)
  b = synthetic.render(3, 'train', 5, 'main', 6, SIZE)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a['image'], synthetic.render(4, 'train', 5, 'main', 6, SIZE)['image'])
  assert not np.array_equal(a['image'],
                            synthetic.render(3, 'validation', 5, 'main', 6, SIZE)['image'])


def test_generate_matches_render():
  arrays = synthetic.generate(1, 'validation', 6, 'hard', 4, SIZE)
  assert arrays['image'].shape == (6, SIZE, SIZE, 3)
  for i in (0, 5):
    ex = synthetic.render(1, 'validation', i, 'hard', 4, SIZE)
    k = len(ex['labels'])
    np.testing.assert_array_equal(arrays['image'][i], ex['image'])
    np.testing.assert_array_equal(arrays['boxes'][i, :k], ex['boxes'])
    np.testing.assert_array_equal(arrays['box_labels'][i], np.pad(ex['labels'], (0, 3 - k),
                                                                   constant_values=-1))
    np.testing.assert_array_equal(arrays['box_difficult'][i, :k], ex['difficult'])
  np.testing.assert_array_equal(arrays['image_id'], np.arange(6))


def test_part_carries_the_class_colour():
  colours = np.round(synthetic.class_colours(6) * 255).astype(np.uint8)
  for ex in _examples('main'):
    for label, part in zip(ex['labels'], ex['part_masks']):
      if part.sum() >= 16:
        pixels = ex['image'][part]
        assert (pixels == colours[label]).all(-1).any()


def _body_chromaticity(preset):
  """Per object: (label, mean r/(r+g+b), g/(r+g+b)) of its visible body pixels."""
  out = []
  for ex in _examples(preset, count=30):
    for label, body in zip(ex['labels'], ex['body_masks']):
      if body.sum() > 50:
        rgb = ex['image'][body].astype(np.float64)
        chroma = rgb / rgb.sum(-1, keepdims=True)
        out.append((label, *chroma[:, :2].mean(0)))
  return np.array(out)


def test_shared_body_look_carries_no_class_and_easy_does():
  base = synthetic._SHARED_BODY / synthetic._SHARED_BODY.sum(-1, keepdims=True)
  shared = _body_chromaticity('main')
  # Every body is the same brown whatever its class (the two stripe shades differ slightly).
  assert np.abs(shared[:, 1:] - base[:, :2].mean(0)).max() < 0.02
  tinted = _body_chromaticity('easy')
  assert np.abs(tinted[:, 1:] - base[:, :2].mean(0)).max() > 0.1


def test_small_preset_has_smaller_objects_and_difficult_flags_occur():
  def areas(preset):
    boxes = np.concatenate([ex['boxes'] for ex in _examples(preset, count=30)])
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

  assert np.median(areas('small')) < 0.5 * np.median(areas('main'))
  flags = np.concatenate([ex['difficult'] for ex in _examples('main', count=60)])
  assert 0 < flags.mean() < 0.5


def test_non_difficult_objects_show_at_least_half_a_part():
  for ex in _examples('hard', count=30):
    for part, hard in zip(ex['part_masks'], ex['difficult']):
      if not hard:
        assert part.sum() > 0


@pytest.mark.parametrize('kwargs, field', [
    ({'preset': 'huge'}, 'preset'), ({'num_classes': 0}, 'num_classes'),
    ({'image_size': 8}, 'image_size')])
def test_bad_settings_name_the_field(kwargs, field):
  args = {'preset': 'main', 'num_classes': 6, 'image_size': 64} | kwargs
  with pytest.raises(UserError, match=f'config.data.parts.{field}'):
    synthetic.render(0, 'train', 0, **args)


def test_unknown_split():
  with pytest.raises(UserError, match='splits'):
    synthetic.render(0, 'trainval', 0)
