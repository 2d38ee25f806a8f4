"""Tests of CAM-to-box conversion on literal maps with hand-worked boxes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from excam_jax.errors import UserError
from excam_jax.evaluation import boxes


class TestCamToBoxes:

  def test_two_components_largest_first(self):
    cam = np.array([
        [0, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 2, 2],
        [0, 0, 0, 0, 2, 2],
        [0, 0, 0, 0, 2, 0],
        [0, 0, 0, 0, 0, 0],
    ], dtype=np.float32)
    # Right component: 5 pixels, columns 4-5, rows 1-3; left: one pixel at (1, 1).
    assert boxes.cam_to_boxes(cam, 0.5) == [(4, 1, 5, 3), (1, 1, 1, 1)]

  def test_diagonal_neighbours_join(self):
    cam = np.array([
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
    ], dtype=np.float32)
    assert boxes.cam_to_boxes(cam, 0.0) == [(0, 0, 2, 2)]

  def test_threshold_is_strict(self):
    cam = np.array([[0.5, 0.6], [0.4, 0.5]], dtype=np.float32)
    assert boxes.cam_to_boxes(cam, 0.5) == [(1, 0, 1, 0)]

  def test_equal_areas_keep_raster_order(self):
    cam = np.array([
        [0, 0, 0, 1],
        [0, 0, 0, 0],
        [1, 0, 0, 0],
    ], dtype=np.float32)
    assert boxes.cam_to_boxes(cam, 0.5) == [(3, 0, 3, 0), (0, 2, 0, 2)]

  def test_constant_maps(self):
    assert boxes.cam_to_boxes(np.zeros((4, 5)), 0.0) == []
    assert boxes.cam_to_boxes(np.ones((4, 5)), 0.0) == [(0, 0, 4, 3)]

  def test_nan_map_is_a_clear_error(self):
    cam = np.zeros((3, 3))
    cam[1, 1] = np.nan
    with pytest.raises(UserError, match='NaN'):
      boxes.cam_to_boxes(cam, 0.0)

  def test_rejects_non_2d(self):
    with pytest.raises(UserError, match='2-D'):
      boxes.cam_to_boxes(np.zeros((2, 3, 3)), 0.0)


class TestComponents:

  def test_stacked_maps_never_join(self):
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 2, :] = True
    masks[1, 0, :] = True  # Touches map 0's last row only if the stack axis leaked.
    comps = boxes.components(masks)
    np.testing.assert_array_equal(comps.map_index, [0, 1])
    np.testing.assert_array_equal(comps.area, [3, 3])
    np.testing.assert_array_equal(comps.boxes, [[0, 2, 2, 2], [0, 0, 2, 0]])

  def test_matches_cam_to_boxes_per_map(self):
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, 9, 11))
    comps = boxes.components(maps > 0.3)
    for i in range(5):
      expected = boxes.cam_to_boxes(maps[i], 0.3)
      mine = comps.boxes[comps.map_index == i]
      assert sorted(map(tuple, mine.tolist())) == sorted(expected)
      largest = np.argmax(comps.area[comps.map_index == i])  # First of the largest, as expected.
      assert tuple(mine[largest]) == expected[0]

  def test_empty_stack(self):
    comps = boxes.components(np.zeros((0, 3, 3), dtype=bool))
    assert comps.boxes.shape == (0, 4) and len(comps.area) == 0

  def test_map_to_boxes_is_upsample_then_components(self):
    """A 2 x 2 map with one hot cell, upsampled to 4 x 8: z = -5 + 10 R[i] C[j], with the first
    input cell's weights R = (1, .75, .25, 0) over rows and C = (1, 1, .875, .625, .375, .125,
    0, 0) over columns. z > 0 where R C > 0.5: row 0 columns 0-3, row 1 columns 0-2 (C > 2/3),
    no pixel of rows 2-3: one component, box (x1, y1, x2, y2) = (0, 0, 3, 1)."""
    cam = np.array([[5.0, -5.0], [-5.0, -5.0]])
    got = boxes.map_to_boxes(cam, 4, 8, 0.0)
    want = boxes.cam_to_boxes(boxes.upsample(cam, 4, 8), 0.0)
    assert got == want == [(0, 0, 3, 1)]


class TestConversions:

  def test_normalized_to_pixels_by_hand(self):
    # W = 10, H = 20: xmin 0.15 -> floor(1.5) = 1; xmax 0.5 -> ceil(5) - 1 = 4;
    # ymin 0.1 -> 2; ymax 0.52 -> ceil(10.4) - 1 = 10.
    got = boxes.normalized_to_pixels([0.1, 0.15, 0.52, 0.5], 20, 10)
    np.testing.assert_array_equal(got, [1, 2, 4, 10])

  def test_round_trip_is_exact(self):
    pixel = np.array([[0, 0, 499, 374], [3, 7, 3, 7], [123, 45, 321, 300]])
    normalized = boxes.pixels_to_normalized(pixel, 375, 500)
    np.testing.assert_array_equal(boxes.normalized_to_pixels(normalized, 375, 500), pixel)

  @pytest.mark.parametrize('size', [96, 333, 375, 500])
  def test_float32_edges_come_back_exactly(self, size):
    # Boxes travel as float32 (TFDS, tf.data): k / W rounded to float32 must still give k.
    k = np.arange(size)
    normalized = np.stack([k / size, k / size, (k + 1) / size, (k + 1) / size], -1)
    got = boxes.normalized_to_pixels(normalized.astype(np.float32), size, size)
    np.testing.assert_array_equal(got, np.stack([k, k, k, k], -1))

  def test_grid_boxes_to_pixels(self):
    # Grid 4 x 4 onto 8 x 12 (H x W): grid column 1..2 -> pixels 3..8, row 0..0 -> 0..1.
    got = boxes.grid_boxes_to_pixels([[1, 0, 2, 0]], 4, 4, 8, 12)
    np.testing.assert_array_equal(got, [[3, 0, 8, 1]])


class TestUpsample:

  def test_matches_jax_image_resize(self):
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    moved = np.moveaxis(maps, -1, 1)  # (B, C, h, w)
    got = boxes.upsample(moved, 13, 17)
    want = jax.image.resize(jnp.asarray(moved), (2, 3, 13, 17), 'bilinear')
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)

  def test_by_hand(self):
    # 1 x 2 -> 1 x 4: sources -0.25, 0.25, 0.75, 1.25 -> clamp, 0.25, 0.75, clamp.
    got = boxes.upsample(np.array([[0.0, 4.0]]), 1, 4)
    np.testing.assert_allclose(got, [[0.0, 1.0, 3.0, 4.0]])

  def test_upsampled_argmax_matches_brute_force(self):
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(6, 5, 7)).astype(np.float32)
    maps[0] = 1.0  # Constant: every pixel ties, the first one wins.
    maps[1] = np.round(maps[1])  # Many ties.
    for height, width in ((23, 31), (5, 7), (3, 40)):
      full = boxes.upsample(maps, height, width).reshape(6, -1).argmax(axis=1)
      got = boxes.upsampled_argmax(maps, height, width)
      np.testing.assert_array_equal(got, np.stack([full % width, full // width], axis=1))

  def test_normalize_minmax_constant_map(self):
    got = boxes.normalize_minmax(np.stack([np.full((2, 2), 3.0), [[0.0, 1.0], [2.0, 4.0]]]))
    np.testing.assert_allclose(got, [[[0, 0], [0, 0]], [[0, 0.25], [0.5, 1.0]]])
