"""Tests of the overlays (pixel-exact, RGB order) and of the figure files."""

import numpy as np
import pytest
from PIL import Image

from excam_jax import visualize
from excam_jax.errors import UserError


def test_box_colours_and_rgb_order():
  image = np.zeros((10, 12, 3), np.float32)
  out = visualize.overlay_boxes(image, gt_boxes=[(0, 0, 5, 5)], pred_boxes=[(6, 2, 11, 9)], width=1)
  np.testing.assert_array_equal(out[0, 3], [255, 0, 0])  # Red: channel 0.
  np.testing.assert_array_equal(out[9, 8], [0, 255, 0])  # Green.
  np.testing.assert_array_equal(out[3, 3], [0, 0, 0])  # Inside the ground-truth outline.
  assert out.dtype == np.uint8 and out.shape == (10, 12, 3)


def test_box_outline_exact_and_clipped():
  canvas = np.zeros((6, 6, 3), np.uint8)
  visualize.draw_box(canvas, (1, 1, 3, 4), (1, 2, 3), width=1)
  mask = canvas[..., 0] == 1
  expected = np.zeros((6, 6), bool)
  expected[1, 1:4] = expected[4, 1:4] = expected[1:5, 1] = expected[1:5, 3] = True
  np.testing.assert_array_equal(mask, expected)
  visualize.draw_box(canvas, (-5, -5, 20, 20), (9, 9, 9), width=1)  # Clipped, no error.
  assert canvas[0, 0, 0] == 9 and canvas[5, 5, 0] == 9


def test_cam_overlay_constant_and_order():
  red = np.zeros((4, 4, 3), np.float32)
  red[..., 0] = 1.0
  out = visualize.overlay_cam(red, np.zeros((4, 4)), alpha=0.5)
  # jet(0) is dark blue (0, 0, 0.5): half red + half blue.
  np.testing.assert_array_equal(out[0, 0], [128, 0, 64])
  assert np.all(out == out[0, 0])  # A constant map gives one colour.
  hot = visualize.overlay_cam(np.zeros((4, 4, 3)), np.full((4, 4), 5.0), vmin=0, vmax=1, alpha=1.0)
  np.testing.assert_array_equal(hot[0, 0], [128, 0, 0])  # jet(1) is dark red.


def test_cam_overlay_errors():
  with pytest.raises(UserError, match='NaN'):
    visualize.overlay_cam(np.zeros((2, 2, 3)), np.full((2, 2), np.nan))
  with pytest.raises(UserError, match='match'):
    visualize.overlay_cam(np.zeros((2, 2, 3)), np.zeros((3, 3)))
  with pytest.raises(UserError, match='RGB'):
    visualize.overlay_boxes(np.zeros((2, 2)))


def test_figures_are_written(tmp_path):
  names = ['a', 'b', 'c']
  visualize.save_ap_bars(tmp_path / 'bars.png', names,
                         {'ours': [0.5, np.nan, 1.0], 'ref': [0.2, 0.3, 0.4]}, title='AP')
  panels = [visualize.overlay_boxes(np.ones((8, 8, 3)), [(1, 1, 4, 4)]) for _ in range(3)]
  visualize.save_panels(tmp_path / 'panels.png', panels, titles=['x', 'y', 'z'], columns=2)
  for name in ('bars.png', 'panels.png'):
    with Image.open(tmp_path / name) as img:
      assert img.size[0] > 100 and img.mode in ('RGB', 'RGBA')
  with pytest.raises(UserError, match='classes'):
    visualize.save_ap_bars(tmp_path / 'bad.png', names, {'ours': [0.5]})


RELATIVE = {'map_expansion': 'relative', 'map_expansion_threshold': 0.3}


@pytest.mark.parametrize('model, expansion, z', [
    # Each scale's literal map from its lowest to its highest value: drawn from 0 to 1.
    ({'head': 'acol'}, None, [-0.5, 0.0, 0.5]),  # ACoL 'normalised': n - 0.5.
    ({'head': 'acol', 'acol_fusion': 'normalised'}, {'map_expansion': 'erase'}, [-0.5, 0.5]),
    ({'head': 'wildcat'}, RELATIVE, [-0.3, 0.7]),  # 'relative': n - level.
    ({'head': 'acol'}, dict(RELATIVE, map_expansion='advcam+relative'), [-0.3, 0.7]),
    ({'head': 'excam'}, {'map_expansion': 'advcam', 'map_expansion_threshold': 0.5}, [0., 1.]),
])
def test_heat_of_normalised_maps_spans_every_colour(model, expansion, z):
  heat = visualize.heat_fn(model, expansion)(np.array(z))
  assert heat.min() == pytest.approx(0.0) and heat.max() == pytest.approx(1.0)
  np.testing.assert_allclose(np.diff(heat), np.diff(z))  # As they are, shifted back.
  squeezed = visualize.sigmoid(np.array(z))
  assert squeezed.max() - squeezed.min() < 0.25  # What a sigmoid drew: flat.


@pytest.mark.parametrize('model, expansion', [
    ({'head': 'wildcat'}, None), ({'head': 'cam'}, {'map_expansion': 'none'}),
    ({'head': 'excam'}, {'map_expansion': 'erase', 'map_expansion_threshold': 0.5}),
    ({'head': 'acol', 'acol_fusion': 'logits'}, None)])
def test_heat_of_logits_is_their_sigmoid(model, expansion):
  z = np.array([-6.0, 0.0, np.log(3.0), 6.0])
  heat = visualize.heat_fn(model, expansion)(z)
  np.testing.assert_allclose(heat, [1 / (1 + np.exp(6)), 0.5, 0.75, 1 / (1 + np.exp(-6))])
  assert heat.max() - heat.min() > 0.99
