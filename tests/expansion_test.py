"""Map transforms (models/expansion.py): test-time erasing's passes and the relative box rule by
hand on a stand-in model, the config fields and their checks, and an evaluation with each."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import cli_util
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


def mean_model(num_classes):
  """images -> (logits s_c = spatial mean of channel c, maps z_c = channel c): gradients by hand."""
  def apply(images):
    maps = images[..., :num_classes]
    return maps.mean(axis=(1, 2)), maps
  return apply


def climb_reference(x, steps, threshold, step_size, weight, num_classes=2):
  """AdvCAM on mean_model in float64 numpy, with the gradient written out by hand."""
  x = x.astype(np.float64)
  b, h, w, _ = x.shape
  low = x.min(axis=(1, 2, 3), keepdims=True)
  high = x.max(axis=(1, 2, 3), keepdims=True)
  out = np.zeros((b, h, w, num_classes))
  for c in range(num_classes):
    xc, initial, total = x.copy(), np.maximum(x[..., c], 0), 0.0
    for _ in range(steps):
      z = xc[..., :num_classes]
      s = z.mean(axis=(1, 2))
      total = total + z[..., c]
      g = np.zeros_like(xc)
      g[..., c] += 1.0 / (h * w)  # d s_c / dx.
      for k in range(num_classes):
        if k != c:
          g[..., k] -= (s[:, k] > 0)[:, None, None] / (h * w)  # - d relu(s_k) / dx.
      region = np.maximum(z[..., c], 0)
      peak = region.max(axis=(1, 2), keepdims=True)
      held = (region > threshold * peak) & (peak > 0)
      g[..., c] -= weight * held * np.sign(region - initial) * (z[..., c] > 0)
      scale = np.abs(g).max(axis=(1, 2, 3), keepdims=True) + 1e-12
      xc = np.clip(xc + step_size * g / scale, low, high)
    out[..., c] = (total + xc[..., c]) / (steps + 1)
  return out


class TestAdversarialClimbing:
  IMAGES = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype(np.float32)

  def test_objective_by_hand(self):
    logits = np.array([[2.0, 1.0, -3.0]], np.float32)
    maps = np.zeros((1, 1, 3, 3), np.float32)
    maps[0, 0, :, 0] = [4.0, 1.0, -2.0]
    initial = np.array([[[3.0, 0.0, 0.0]]], np.float32)
    value, own = expansion.climbing_objective(jnp.asarray(logits), jnp.asarray(maps),
                                              jnp.asarray(initial), 0, 0.5, 7.0)
    # s_0 - relu(s_1) - relu(s_2) - 7 * |4 - 3| (only the cell above half of the maximum 4 is held).
    assert float(value) == pytest.approx(2.0 - 1.0 - 0.0 - 7.0 * 1.0)
    np.testing.assert_array_equal(np.asarray(own), maps[..., 0])

  def test_step_by_hand(self):
    x = np.zeros((1, 1, 2, 1), np.float32)
    x[0, 0, :, 0] = [0.5, -0.5]
    grad = np.zeros_like(x)
    grad[0, 0, :, 0] = [4.0, -2.0]
    got = expansion.climb_step(jnp.asarray(x), jnp.asarray(grad), -0.5, 0.5, 0.1)
    np.testing.assert_allclose(np.asarray(got)[0, 0, :, 0], [0.5, -0.5], atol=1e-7)  # Clipped.
    got = expansion.climb_step(jnp.asarray(x), jnp.asarray(grad), -1.0, 1.0, 0.1)
    np.testing.assert_allclose(np.asarray(got)[0, 0, :, 0], [0.6, -0.55], atol=1e-7)

  # A weight below the score's gradient (1/16 per cell here) keeps the held cells from climbing
  # back exactly to their first value, where the sign of a float32 rounding residue would decide.
  @pytest.mark.parametrize('steps, weight', [(1, 7.0), (3, 0.03), (3, 0.0)])
  def test_against_a_reference_with_hand_gradients(self, steps, weight):
    logits, maps = expansion.adversarial_climbing(mean_model(2), jnp.asarray(self.IMAGES), steps,
                                                  0.5, 0.3, weight)
    want = climb_reference(self.IMAGES, steps, 0.5, 0.3, weight)
    np.testing.assert_allclose(np.asarray(maps), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), self.IMAGES[..., :2].mean(axis=(1, 2)),
                               rtol=1e-6)  # The plain image's scores.
    assert not np.allclose(want, self.IMAGES[..., :2], atol=1e-3)  # The climb moved the maps.
    free = climb_reference(self.IMAGES, steps, 0.5, 0.3, 0.0)
    if steps == 1:  # Nothing has changed at the first step: the restriction does not push it.
      np.testing.assert_allclose(np.asarray(maps), free, rtol=1e-5, atol=1e-5)
    elif weight:  # Later it changes the climb.
      assert not np.allclose(want, free, atol=1e-3)

  def test_climbing_raises_the_own_map(self):
    _, maps = expansion.adversarial_climbing(mean_model(2), jnp.asarray(self.IMAGES), 4, 0.5, 0.2,
                                             0.0)
    assert np.all(np.asarray(maps).mean(axis=(1, 2)) > self.IMAGES[..., :2].mean(axis=(1, 2)))


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

  def test_advcam_then_relative(self):
    model, images = mean_model(2), TestAdversarialClimbing.IMAGES
    fields = {'map_expansion': 'advcam+relative', 'map_expansion_steps': 2,
              'map_expansion_threshold': 0.4, 'map_expansion_step_size': 0.3,
              'map_expansion_weight': 7.0}
    got = expansion.from_config(ml_collections.ConfigDict(fields))(model, jnp.asarray(images))[1]
    np.testing.assert_allclose(np.asarray(got), _norm(climb_reference(images, 2, 0.4, 0.3, 7.0)) - 0.4,
                               rtol=1e-5, atol=1e-5)

  def test_describe_names_the_rule(self):
    fields = {'map_expansion': 'relative', 'map_expansion_steps': 2, 'map_expansion_threshold': 0.5}
    assert 'above 0.5 of its range' in expansion.describe(fields)
    assert '3 passes' in expansion.describe(dict(fields, map_expansion='erase', map_expansion_steps=3))
    assert expansion.describe(dict(fields, map_expansion='none')).startswith('none')
    climb = expansion.describe(dict(expansion.DEFAULTS, map_expansion='advcam+relative'))
    assert 'AdvCAM' in climb and '2 steps of size 0.08' in climb and climb.endswith('of its range')

  def test_overrides_on_top_of_the_config(self):
    config = tiny.get_config()
    assert runner.map_expansion_fields(config, None)['map_expansion'] == 'none'
    fields = runner.map_expansion_fields(config, {'map_expansion': 'erase',
                                                  'map_expansion_steps': None})
    assert fields == {'map_expansion': 'erase', 'map_expansion_steps': 2,
                      'map_expansion_threshold': 0.5, 'map_expansion_step_size': 0.08,
                      'map_expansion_weight': 7.0}

  @pytest.mark.parametrize('field, value', [('map_expansion', 'gradcam'),
                                            ('map_expansion', 'relative+erase'),
                                            ('map_expansion_steps', 0),
                                            ('map_expansion_threshold', 1.0),
                                            ('map_expansion_step_size', 0.0),
                                            ('map_expansion_weight', -1.0)])
  def test_bad_values_name_the_field(self, field, value):
    config = tiny.get_config()
    config.eval[field] = value
    with pytest.raises(ConfigError, match=f'config.eval.{field}='):
      config_checks.validate(config)
    with pytest.raises(ConfigError, match=f'config.eval.{field}='):
      runner.map_expansion_fields(tiny.get_config(), {field: value})


def test_evaluate_with_each_transform(tmp_path, write_tiny_checkpoint):
  """One checkpoint scored four ways: the relative rule moves only the box metrics (it is
  monotone in each map), erasing moves the maps; the protocol names each."""
  write_tiny_checkpoint(tmp_path, 3)
  got = {}
  for kind in ('none', 'relative', 'erase', 'advcam'):
    out = runner.evaluate_checkpoint(str(tmp_path), figures=0, workers=0,
                                     output=str(tmp_path / kind),
                                     expansion={'map_expansion': kind, 'map_expansion_steps': 1})
    with open(os.path.join(out, 'metrics.json'), encoding='utf-8') as f:
      got[kind] = json.load(f)
  plain, relative = got['none'], got['relative']
  assert 'range' in relative['protocol']['map_expansion']
  assert 'erasing' in got['erase']['protocol']['map_expansion']
  assert 'climbing' in got['advcam']['protocol']['map_expansion']
  for kind in ('erase', 'advcam'):  # The scores are the plain image's.
    assert got[kind]['classification_map'] == pytest.approx(plain['classification_map'], abs=1e-9)
  for key in ('classification_map', 'pointwise_ap', 'maxboxacc', 'maxboxaccv2'):
    assert relative[key] == pytest.approx(plain[key], abs=1e-9), key
  # Random weights: z > 0 and "above half the range" keep different cells.
  assert relative['parts_body_coverage'] != pytest.approx(plain['parts_body_coverage'], abs=1e-6)


@pytest.mark.parametrize('flag, allowed', [('--map_expansion_step_size=0', 'a float > 0'),
                                           ('--map_expansion_weight=-1', 'a float >= 0'),
                                           ('--map_expansion_threshold=1.5', 'in (0, 1)')])
def test_evaluate_answers_a_bad_transform_flag(tmp_path, flag, allowed):
  (tmp_path / 'checkpoints').mkdir()
  code, _, lines = cli_util.run_command('excam_jax.evaluate', f'--workdir={tmp_path}', flag,
                                        '--map_expansion=advcam')
  cli_util.assert_one_error_line(code, lines, flag.split('=')[0][2:], allowed)
