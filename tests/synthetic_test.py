"""Tests of the synthetic "parts" data set: exact boxes, masks, determinism, the presets' looks."""

import numpy as np
import pytest

from excam_jax.data import synthetic
from excam_jax.errors import UserError

SIZE = 64


def _examples(preset, count=24, seed=0, size=SIZE, **options):
  return [synthetic.render(seed, 'train', i, preset, 6, size, **options) for i in range(count)]


@pytest.mark.parametrize('preset', sorted(synthetic.PRESETS))
def test_boxes_enclose_every_object_pixel(preset):
  for ex in _examples(preset):
    k = len(ex['labels'])
    assert k >= 1 and k <= synthetic.PRESETS[preset].max_objects, k
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
  flags = np.concatenate([ex['difficult'] for ex in _examples('main', count=60,
                                                              difficult_objects=True)])
  assert 0.05 < flags.mean() < 0.5
  # Off by default: only an object cut by its own length or an occluded part is flagged.
  flags = np.concatenate([ex['difficult'] for ex in _examples('main', count=60)])
  assert flags.mean() < 0.05


def test_object_counts_follow_the_presets():
  """1-2 objects drawn (1-3 in small); a second object that cannot be placed is left out."""
  for preset, most in (('main', 2), ('easy', 2), ('small', 3)):
    counts = np.bincount([len(ex['labels']) for ex in _examples(preset, count=80)],
                         minlength=4)
    assert counts[0] == 0 and counts[1] > 0 and counts[most] > 0
    assert counts[most + 1:].sum() == 0


def _tint_hue_class(ex, num_classes=6):
  """Per visible body: the class whose hue is nearest the body's hue (bodies of > 50 pixels)."""
  out = []
  for label, body in zip(ex['labels'], ex['body_masks']):
    if body.sum() > 50:
      rgb = ex['image'][body].astype(np.float64).mean(0) / 255.0
      tint = (rgb - 0.5 * synthetic._SHARED_BODY.mean(0)) / 0.5  # Undo the mix (roughly).
      distances = np.abs(synthetic.class_colours(num_classes) - tint).sum(-1)
      out.append((int(label), int(np.argmin(distances))))
  return out


def test_body_cue_names_the_class_as_often_as_set():
  matches = {}
  for cue in (0.0, 0.5, 1.0):
    pairs = [p for ex in _examples('main', count=120, body_cue=cue) for p in _tint_hue_class(ex)]
    matches[cue] = np.mean([label == hue for label, hue in pairs])
  assert matches[1.0] > 0.9  # Every body tinted with its class's (jittered) hue.
  # P(own hue) = c + (1 - c) / C = 0.58 at c = 0.5, C = 6; the jitter blurs it a little.
  assert 0.35 < matches[0.5] < 0.8
  # At c = 0 the body is the shared brown: no tint (chromaticity as in the shared test).
  plain = _examples('main', count=10, body_cue=0.0)
  assert all(np.array_equal(a['image'], b['image'])
             for a, b in zip(plain, _examples('main', count=10)))


def test_scenes_are_the_same_at_every_cue_and_probe():
  for a, b, c in zip(_examples('main', count=12), _examples('main', count=12, body_cue=0.7),
                     _examples('main', count=12, body_cue=0.7, probe='body_only')):
    for key in ('boxes', 'labels', 'difficult', 'body_masks', 'part_masks'):
      np.testing.assert_array_equal(a[key], b[key])
      np.testing.assert_array_equal(a[key], c[key])
    background = ~(a['body_masks'].any(0) | a['part_masks'].any(0))
    np.testing.assert_array_equal(a['image'][background], b['image'][background])


def test_probes_remove_one_cue():
  for plain, body_only, part_only in zip(
      _examples('main', count=12, body_cue=0.5),
      _examples('main', count=12, body_cue=0.5, probe='body_only'),
      _examples('main', count=12, body_cue=0.5, probe='part_only')):
    body, part = plain['body_masks'].any(0), plain['part_masks'].any(0)
    # body_only: the body as it was; the part's cells now carry body shades, not the pattern.
    np.testing.assert_array_equal(body_only['image'][body], plain['image'][body])
    assert not np.array_equal(body_only['image'][part], plain['image'][part])
    body_shades = {tuple(v) for v in plain['image'][body]}
    assert {tuple(v) for v in body_only['image'][part]} <= body_shades
    # part_only: the part as it was; no body pixel keeps the body's look.
    np.testing.assert_array_equal(part_only['image'][part], plain['image'][part])
    assert not {tuple(v) for v in part_only['image'][body]} & body_shades - {
        tuple(v) for v in part_only['image'][~body]}


def test_split_renders_on_demand_and_matches_generate():
  lazy = synthetic.Split(2, 'train', 10, 'main', 6, SIZE)
  taken = lazy.take([7, 3, 7])
  assert lazy._done.sum() == 2  # Only what was asked for.
  whole = synthetic.generate(2, 'train', 10, 'main', 6, SIZE)
  for key, value in taken.items():
    np.testing.assert_array_equal(value, whole[key][[7, 3, 7]])
  assert lazy.take([0])['image_id'].tolist() == [0]


def test_non_difficult_objects_show_at_least_half_a_part():
  for ex in _examples('hard', count=30):
    for part, hard in zip(ex['part_masks'], ex['difficult']):
      if not hard:
        assert part.sum() > 0


@pytest.mark.parametrize('kwargs, field', [
    ({'preset': 'huge'}, 'preset'), ({'num_classes': 0}, 'num_classes'),
    ({'image_size': 8}, 'image_size'), ({'body_cue': 1.5}, 'body_cue'),
    ({'probe': 'parts'}, 'probe')])
def test_bad_settings_name_the_field(kwargs, field):
  args = {'preset': 'main', 'num_classes': 6, 'image_size': 64} | kwargs
  with pytest.raises(UserError, match=f'config.data.parts.{field}'):
    synthetic.render(0, 'train', 0, **args)


def test_unknown_split():
  with pytest.raises(UserError, match='splits'):
    synthetic.render(0, 'trainval', 0)
