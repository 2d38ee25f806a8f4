"""Map transforms (models/expansion.py): test-time erasing's passes and the relative box rule by
hand on a stand-in model, the config fields and their checks, and an evaluation with each."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from excam_jax import config_checks
from excam_jax.errors import ConfigError
from excam_jax.evaluation import runner
from excam_jax.models import expansion


def _norm(x):
  low, high = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
  return np.where(high > low, (x - low) / np.where(high > low, high - low, 1), 0.0)


def channel_model(logits):
  """images -> (fixed logits, class map c = input channel c): erasing shows in the maps."""
  def apply(images):
    return jnp.broadcast_to(jnp.asarray(logits), (images.shape[0], len(logits))), images[
        ..., :len(logits)]
  return apply


class TestExpandByErasing:
  IMAGES = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)

  def test_zero_steps_is_the_plain_model(self):
    logits, maps = expansion.expand_by_erasing(channel_model((1.0, -1.0)), self.IMAGES, 0, 0.5)
    np.testing.assert_array_equal(np.asarray(maps), self.IMAGES[..., :2])
    np.testing.assert_array_equal(np.asarray(logits), [[1.0, -1.0]] * 2)

  def test_two_passes_by_hand(self):
    x = self.IMAGES.astype(np.float64)
    logits, maps = expansion.expand_by_erasing(channel_model((1.0, -1.0)), self.IMAGES, 2, 0.5)
    # Class 0 is predicted (logit > 0), class 1 is not: only class 0's maps erase.
    mask1 = (_norm(x[..., :1]) >= 0.5).astype(np.float64)
    pass1 = (x * (1 - mask1))[..., :2]
    mask2 = np.maximum(mask1, (_norm(pass1[..., :1]) >= 0.5))
    pass2 = (x * (1 - mask2))[..., :2]
    want = np.maximum(np.maximum(x[..., :2], pass1), pass2)
    np.testing.assert_allclose(np.asarray(maps), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(logits), [[1.0, -1.0]] * 2)  # First pass's scores.
    assert mask2.sum() > mask1.sum()  # The second pass erased more.

  def test_nothing_predicted_nothing_erased(self):
    _, maps = expansion.expand_by_erasing(channel_model((-1.0, -2.0)), self.IMAGES, 3, 0.5)
    np.testing.assert_array_equal(np.asarray(maps), self.IMAGES[..., :2])

  def test_erased_cells_keep_their_first_pass_value(self):
    # One image, one class, a single peak: the peak is erased and its first value is kept.
    image = np.zeros((1, 3, 3, 3), np.float32)
    image[0, 1, 1, 0], image[0, 0, 0, 0] = 4.0, 1.0
    _, maps = expansion.expand_by_erasing(channel_model((2.0,)), image, 1, 0.5)
    np.testing.assert_array_equal(np.asarray(maps)[0, :, :, 0], image[0, :, :, 0])


class TestRelative:

  def test_by_hand(self):
    image = np.zeros((1, 2, 2, 3), np.float32)
    image[0, :, :, 0] = [[0.0, 2.0], [4.0, 8.0]]  # Range 8: normalised 0, 1/4, 1/2, 1.
    image[0, :, :, 1] = [[-3.0, -1.0], [-1.0, -1.0]]  # Range 2: 0, 1, 1, 1.
    logits, maps = expansion.relative_maps(channel_model((1.0, -1.0)), image, 0.4)
    np.testing.assert_allclose(np.asarray(maps)[0, :, :, 0], [[-0.4, -0.15], [0.1, 0.6]], atol=1e-7)
    np.testing.assert_allclose(np.asarray(maps)[0, :, :, 1], [[-0.4, 0.6], [0.6, 0.6]], atol=1e-7)
    np.testing.assert_array_equal(np.asarray(logits), [[1.0, -1.0]])  # Scores unchanged.

  def test_constant_map_has_no_cell_above_the_level(self):
    image = np.full((1, 3, 3, 3), 5.0, np.float32)
    _, maps = expansion.relative_maps(channel_model((1.0,)), image, 0.5)
    assert np.all(np.asarray(maps) == -0.5)


class TestFields:

  def test_from_config(self):
    assert expansion.from_config(None) is None
    assert expansion.from_config(ml_collections.ConfigDict({'map_expansion': 'none'})) is None
    images = TestExpandByErasing.IMAGES
    model = channel_model((1.0, -1.0))
    erase = expansion.from_config(ml_collections.ConfigDict(
        {'map_expansion': 'erase', 'map_expansion_steps': 3, 'map_expansion_threshold': 0.4}))
    np.testing.assert_array_equal(np.asarray(erase(model, images)[1]),
                                  np.asarray(expansion.expand_by_erasing(model, images, 3, 0.4)[1]))
    relative = expansion.from_config(ml_collections.ConfigDict(
        {'map_expansion': 'relative', 'map_expansion_threshold': 0.3}))
    np.testing.assert_allclose(np.asarray(relative(model, images)[1]),
                               _norm(images[..., :2].astype(np.float64)) - 0.3, atol=1e-6)

  def test_describe_names_the_rule(self):
    fields = {'map_expansion': 'relative', 'map_expansion_steps': 2, 'map_expansion_threshold': 0.5}
    assert 'above 0.5 of its range' in expansion.describe(fields)
    assert '3 passes' in expansion.describe(dict(fields, map_expansion='erase', map_expansion_steps=3))
    assert expansion.describe(dict(fields, map_expansion='none')).startswith('none')

  def test_overrides_on_top_of_the_config(self):
    config = tiny.get_config()
    assert runner.map_expansion_fields(config, None)['map_expansion'] == 'none'
    fields = runner.map_expansion_fields(config, {'map_expansion': 'erase',
                                                  'map_expansion_steps': None})
    assert fields == {'map_expansion': 'erase', 'map_expansion_steps': 2,
                      'map_expansion_threshold': 0.5}

  @pytest.mark.parametrize('field, value', [('map_expansion', 'advcam'),
                                            ('map_expansion_steps', 0),
                                            ('map_expansion_threshold', 1.0)])
  def test_bad_values_name_the_field(self, field, value):
    config = tiny.get_config()
    config.eval[field] = value
    with pytest.raises(ConfigError, match=f'config.eval.{field}='):
      config_checks.validate(config)
    with pytest.raises(ConfigError, match=f'config.eval.{field}='):
      runner.map_expansion_fields(tiny.get_config(), {field: value})


def test_evaluate_with_each_transform(tmp_path, write_tiny_checkpoint):
  """One checkpoint scored three ways: the relative rule moves only the box metrics (it is
  monotone in each map), erasing moves the maps; the protocol names each."""
  write_tiny_checkpoint(tmp_path, 3)
  got = {}
  for kind in ('none', 'relative', 'erase'):
    out = runner.evaluate_checkpoint(str(tmp_path), figures=0, workers=0,
                                     output=str(tmp_path / kind), expansion={'map_expansion': kind})
    with open(os.path.join(out, 'metrics.json'), encoding='utf-8') as f:
      got[kind] = json.load(f)
  plain, relative = got['none'], got['relative']
  assert 'range' in relative['protocol']['map_expansion']
  assert 'erasing' in got['erase']['protocol']['map_expansion']
  for key in ('classification_map', 'pointwise_ap', 'maxboxacc', 'maxboxaccv2'):
    assert relative[key] == pytest.approx(plain[key], abs=1e-9), key
  # Random weights: z > 0 and "above half the range" keep different cells.
  assert relative['parts_body_coverage'] != pytest.approx(plain['parts_body_coverage'], abs=1e-6)
