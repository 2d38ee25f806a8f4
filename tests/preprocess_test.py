"""Tests of the preprocessing ops, eagerly and inside tf.data, on literal inputs."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from excam_jax.data import preprocess


def _in_tf_data(fn, example):
  """Runs fn on example inside a tf.data map (graph mode) and returns numpy values."""
  ds = tf.data.Dataset.from_tensors(example).map(fn)
  return next(ds.as_numpy_iterator())


def _eager(fn, example):
  return {k: np.asarray(v) for k, v in fn(example).items()}


RUNNERS = [_eager, _in_tf_data]


class TestNormalize:

  def test_hand_values(self):
    image = np.array([[[0.485, 0.456, 0.406], [1.0, 1.0, 0.0]]], np.float32)
    want = np.array([[[0.0, 0.0, 0.0],
                      [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (0 - 0.406) / 0.225]]])
    np.testing.assert_allclose(preprocess.normalize(image), want, atol=1e-6)
    np.testing.assert_allclose(preprocess.normalize(tf.constant(image)).numpy(), want, atol=1e-6)

  def test_denormalize_inverts(self):
    image = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(preprocess.denormalize(preprocess.normalize(image)), image,
                               atol=1e-6)


@pytest.mark.parametrize('run', RUNNERS)
class TestFlip:

  def test_image_and_boxes(self, run):
    image = np.array([[[1], [2], [3]], [[4], [5], [6]]], np.uint8)
    example = {'image': image, 'boxes': np.array([[0.1, 0.2, 0.5, 0.6]], np.float32)}
    out = run(preprocess.flip_left_right, example)
    np.testing.assert_array_equal(out['image'][..., 0], [[3, 2, 1], [6, 5, 4]])
    np.testing.assert_allclose(out['boxes'], [[0.1, 0.4, 0.5, 0.8]], atol=1e-7)

  def test_random_flip_is_keyed_by_seed(self, run):
    image = np.arange(6, dtype=np.uint8).reshape(1, 6, 1)
    flipped = set()
    for s in range(16):
      fn = lambda ex, s=s: preprocess.random_flip(ex, tf.constant([7, s], tf.int64))
      first, second = run(fn, {'image': image}), run(fn, {'image': image})
      np.testing.assert_array_equal(first['image'], second['image'])
      flipped.add(bool(first['image'][0, 0, 0] == 5))
    assert flipped == {True, False}  # Both outcomes occur over 16 seeds.


@pytest.mark.parametrize('run', RUNNERS)
class TestResize:

  def test_bilinear_hand_values(self, run):
    image = np.array([[[0], [255]], [[0], [255]]], np.uint8).repeat(3, -1)
    out = run(lambda ex: preprocess.resize(ex, 4), {'image': image})
    assert out['image'].dtype == np.float32 and out['image'].shape == (4, 4, 3)
    # Upsampling 2 -> 4 with half-pixel centres: columns sit at 0, 1/4, 3/4, 1 of the edge.
    np.testing.assert_allclose(out['image'][:, :, 0], [[0, 0.25, 0.75, 1.0]] * 4, atol=1e-6)

  def test_same_size_only_rescales(self, run):
    image = np.array([[[0, 51, 255]]], np.uint8)
    out = run(lambda ex: preprocess.resize(ex, 1), {'image': image})
    np.testing.assert_allclose(out['image'], [[[0.0, 0.2, 1.0]]], atol=1e-6)

  def test_boxes_stay_aligned_through_resize_and_flip(self, run):
    # A bright rectangle on rows 10..29 and columns 5..24 of a 40 x 50 image.
    image = np.zeros((40, 50, 3), np.uint8)
    image[10:30, 5:25] = 255
    box = np.array([[10 / 40, 5 / 50, 30 / 40, 25 / 50]], np.float32)

    def fn(ex):
      return preprocess.flip_left_right(preprocess.resize(ex, 100))

    out = run(fn, {'image': image, 'boxes': box})
    rows = np.flatnonzero(out['image'][:, :, 0].max(1) > 0.5)
    cols = np.flatnonzero(out['image'][:, :, 0].max(0) > 0.5)
    bright = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / 100
    np.testing.assert_allclose(out['boxes'][0], bright, atol=0.011)  # Within a pixel of 100.
    np.testing.assert_allclose(out['boxes'][0], [0.25, 0.5, 0.75, 0.9], atol=1e-6)


@pytest.mark.parametrize('run', RUNNERS)
class TestLabelsAndBoxes:

  def test_multi_hot_and_difficult_only(self, run):
    example = {'box_labels': np.array([2, 0, 2, 3], np.int32),
               'box_difficult': np.array([True, True, False, True])}
    out = run(lambda ex: preprocess.multi_hot(ex, 5), example)
    np.testing.assert_array_equal(out['label'], [1, 0, 1, 1, 0])
    np.testing.assert_array_equal(out['ignore'], [True, False, False, True, False])

  def test_multi_hot_skips_padding_and_empty(self, run):
    example = {'box_labels': np.array([-1, 1], np.int32), 'box_difficult': np.array([False, False])}
    out = run(lambda ex: preprocess.multi_hot(ex, 3), example)
    np.testing.assert_array_equal(out['label'], [0, 1, 0])
    empty = {'box_labels': np.zeros((0,), np.int32), 'box_difficult': np.zeros((0,), bool)}
    out = run(lambda ex: preprocess.multi_hot(ex, 3), empty)
    np.testing.assert_array_equal(out['label'], [0, 0, 0])
    np.testing.assert_array_equal(out['ignore'], [False] * 3)

  def test_pad_and_truncate(self, run):
    boxes = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    example = {'boxes': boxes, 'box_labels': np.array([4, 1], np.int32),
               'box_difficult': np.array([True, False])}
    out = run(lambda ex: preprocess.pad_boxes(ex, 3), example)
    np.testing.assert_allclose(out['boxes'], np.concatenate([boxes, np.zeros((1, 4))]))
    np.testing.assert_array_equal(out['box_labels'], [4, 1, -1])
    np.testing.assert_array_equal(out['box_difficult'], [True, False, False])
    out = run(lambda ex: preprocess.pad_boxes(ex, 1), example)
    np.testing.assert_array_equal(out['box_labels'], [4])


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


@pytest.mark.parametrize('run', RUNNERS)
def test_prepare_example_from_encoded_bytes(run):
  # One colour per row: squeezing the columns 7 -> 5 must leave every row its exact colour.
  colours = np.random.default_rng(1).integers(0, 256, (5, 1, 3), dtype=np.uint8)
  pixels = np.repeat(colours, 7, axis=1)
  example = {'image': _png(pixels), 'boxes': np.array([[0.0, 0.0, 1.0, 0.5]], np.float32),
             'box_labels': np.array([1], np.int32), 'box_difficult': np.array([False]),
             'image_id': np.int32(3)}
  out = run(lambda ex: preprocess.prepare_example(
      ex, size=5, num_classes=2, max_boxes=2, encoded=True), example)
  np.testing.assert_array_equal(out['orig_size'], [5, 7])
  assert out['image'].shape == (5, 5, 3)
  np.testing.assert_array_equal(out['label'], [0, 1])
  np.testing.assert_array_equal(out['box_labels'], [1, -1])
  assert out['mask'] == 1.0 and out['image_id'] == 3
  want = preprocess.normalize(np.repeat(colours, 5, axis=1).astype(np.float32) / 255)
  np.testing.assert_allclose(out['image'], want, atol=1e-5)
