"""Map transforms (models/map_transforms.py): test-time erasing's passes and the relative box rule by
hand on a stand-in model, the config fields and their checks, and an evaluation with each."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import cli_util
import conftest
from configs import tiny
from excam_jax import config_schema
from excam_jax.errors import ConfigError
from excam_jax import checkpoint_eval
from excam_jax import inference
from excam_jax.models import map_transforms
from excam_jax.models import network


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
    logits, maps = map_transforms.expand_by_erasing(channel_model((1.0, -1.0)), self.IMAGES, 0, 0.5)
    np.testing.assert_array_equal(np.asarray(maps), self.IMAGES[..., :2])
    np.testing.assert_array_equal(np.asarray(logits), [[1.0, -1.0]] * 2)

  def test_two_passes_by_hand(self):
    x = self.IMAGES.astype(np.float64)
    logits, maps = map_transforms.expand_by_erasing(channel_model((1.0, -1.0)), self.IMAGES, 2, 0.5)
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
    _, maps = map_transforms.expand_by_erasing(channel_model((-1.0, -2.0)), self.IMAGES, 3, 0.5)
    np.testing.assert_array_equal(np.asarray(maps), self.IMAGES[..., :2])

  def test_erased_cells_keep_their_first_pass_value(self):
    # One image, one class, a single peak: the peak is erased and its first value is kept.
    image = np.zeros((1, 3, 3, 3), np.float32)
    image[0, 1, 1, 0], image[0, 0, 0, 0] = 4.0, 1.0
    _, maps = map_transforms.expand_by_erasing(channel_model((2.0,)), image, 1, 0.5)
    np.testing.assert_array_equal(np.asarray(maps)[0, :, :, 0], image[0, :, :, 0])


class TestRelative:

  def test_by_hand(self):
    image = np.zeros((1, 2, 2, 3), np.float32)
    image[0, :, :, 0] = [[0.0, 2.0], [4.0, 8.0]]  # Range 8: normalised 0, 1/4, 1/2, 1.
    image[0, :, :, 1] = [[-3.0, -1.0], [-1.0, -1.0]]  # Range 2: 0, 1, 1, 1.
    logits, maps = map_transforms.relative_maps(channel_model((1.0, -1.0)), image, 0.4)
    np.testing.assert_allclose(np.asarray(maps)[0, :, :, 0], [[-0.4, -0.15], [0.1, 0.6]], atol=1e-7)
    np.testing.assert_allclose(np.asarray(maps)[0, :, :, 1], [[-0.4, 0.6], [0.6, 0.6]], atol=1e-7)
    np.testing.assert_array_equal(np.asarray(logits), [[1.0, -1.0]])  # Scores unchanged.

  def test_constant_map_has_no_cell_above_the_level(self):
    image = np.full((1, 3, 3, 3), 5.0, np.float32)
    _, maps = map_transforms.relative_maps(channel_model((1.0,)), image, 0.5)
    assert np.all(np.asarray(maps) == -0.5)


# A literal linear model: maps z = x @ W (a 1x1 convolution), logits s = mean of z + b, so that the
# reference below can write its gradients out by hand.
W = np.array([[1.0, 0.2, -0.1], [0.1, 1.0, 0.2], [-0.2, 0.1, 1.0]])  # (channels, classes)
BIAS = np.array([0.0, -0.1, 0.1])


def linear_model(images):
  maps = images @ jnp.asarray(W, images.dtype)
  return maps.mean(axis=(1, 2)) + jnp.asarray(BIAS, images.dtype), maps


def _max_norm(x):
  """x / its maximum over space per map (axes 1, 2), 0 where it is all <= 0."""
  peak = x.max(axis=(1, 2), keepdims=True)
  return np.where(peak > 0, x / np.where(peak > 0, peak, 1), 0.0)


def climb_reference(x, steps, threshold, step_size, weight, max_classes=2, current_mask=False):
  """(logits, maps): AdvCAM on linear_model in float64 numpy from the paper's equations, one
  (image, class) at a time, with the gradient written out by hand."""
  x = x.astype(np.float64)
  forward = lambda v: ((v @ W).mean(axis=(1, 2)) + BIAS, v @ W)
  logits, maps = forward(x)
  out = _max_norm(np.maximum(maps, 0))  # The classes not climbed.
  cells = x.shape[1] * x.shape[2]
  for i, scores in enumerate(logits):
    for rank, c in enumerate(np.argsort(-scores)[:max_classes]):
      if rank > 0 and scores[c] <= 0:
        continue  # Climb the predicted classes, or the top one when none is predicted.
      xi, total = x[i], 0.0
      for t in range(steps):  # A = the sum of relu(z_c(x_t)) over t = 0..T-1.
        s, z = forward(xi[None])
        region = np.maximum(z[0, :, :, c], 0)
        initial = region if t == 0 else initial  # relu(z_c(x_0)).
        total = total + region
        if t == steps - 1:
          break
        basis = region if current_mask else total  # M from the accumulated map.
        held = (basis > threshold * basis.max()) & (basis.max() > 0)
        g = np.broadcast_to(W[:, c] / cells, xi.shape).copy()  # d s_c / dx.
        for k in range(len(scores)):
          if k != c and s[0, k] > 0:
            g -= W[:, k] / cells  # - d relu(s_k) / dx.
        # - lambda d |relu(z_c) - initial| / dx on M, with sign(0) = 0.
        g -= weight * (held * np.sign(region - initial) * (z[0, :, :, c] > 0))[..., None] * W[:, c]
        xi = np.clip(xi + step_size * g / (np.abs(g).max() + 1e-12), xi.min(), xi.max())
      out[i, :, :, c] = total / total.max() if total.max() > 0 else 0.0
  return logits, out


class TestAdversarialClimbing:
  # Channel offsets set the predictions: image 0 predicts all three classes (P = 2: the lowest is
  # not climbed), image 1 class 0 only, image 2 none (its top-scoring class is climbed).
  IMAGES = (np.random.default_rng(1).normal(size=(3, 4, 4, 3)) * 0.5
            + np.array([[1.0, 0.8, 0.6], [1.0, -1.0, -1.0], [-1.0, -1.2, -1.5]])[:, None, None, :]
            ).astype(np.float32)

  def test_images_cover_the_cases(self):
    logits = np.asarray(linear_model(jnp.asarray(self.IMAGES))[0])
    assert (logits > 0).sum(axis=1).tolist() == [3, 1, 0]
    own = np.asarray(map_transforms.climbed_classes(jnp.asarray(logits), 2))
    np.testing.assert_array_equal(own.sum(axis=(1, 2)), [2, 1, 1])
    np.testing.assert_array_equal(own.sum(axis=1)[[1, 2]].argmax(axis=1), logits[[1, 2]].argmax(1))

  def test_objective_by_hand(self):
    logits = np.array([[2.0, 1.0, -3.0], [5.0, 5.0, 5.0]], np.float32)
    maps = np.zeros((2, 1, 3, 3), np.float32)
    maps[0, 0, :, 0] = [4.0, 1.0, -2.0]
    initial = np.array([[[3.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]], np.float32)
    total = np.array([[[0.0, 4.0, 0.0]], [[0.0, 0.0, 0.0]]], np.float32)
    own = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)  # Row 1 is padding.
    args = [jnp.asarray(a) for a in (logits, maps, own, initial, total)]
    value, region = map_transforms.climbing_objective(*args, 0.5, 7.0)
    # A = total + relu(z_0) = (4, 5, 0): cells 0 and 1 are above half of 5, so
    # s_0 - relu(s_1) - relu(s_2) - 7 * (|4 - 3| + |1 - 0|); the padding row adds nothing.
    assert float(value) == pytest.approx(2.0 - 1.0 - 0.0 - 7.0 * 2.0)
    np.testing.assert_array_equal(np.asarray(region)[0], [[4.0, 1.0, 0.0]])
    value, _ = map_transforms.climbing_objective(*args, 0.5, 7.0, current_mask=True)
    assert float(value) == pytest.approx(2.0 - 1.0 - 7.0 * 1.0)  # relu(z_0) alone: cell 0.

  def test_step_by_hand(self):
    x = np.zeros((1, 1, 2, 1), np.float32)
    x[0, 0, :, 0] = [0.5, -0.5]
    grad = np.zeros_like(x)
    grad[0, 0, :, 0] = [4.0, -2.0]
    got = map_transforms.climb_step(jnp.asarray(x), jnp.asarray(grad), 0.1)
    # 0.5 + 0.1 and -0.5 - 0.05, clipped to the image's own range [-0.5, 0.5].
    np.testing.assert_allclose(np.asarray(got)[0, 0, :, 0], [0.5, -0.5], atol=1e-7)
    x[0, 0, :, 0] = [0.5, 0.0]
    got = map_transforms.climb_step(jnp.asarray(x), jnp.asarray(-grad), 0.1)
    np.testing.assert_allclose(np.asarray(got)[0, 0, :, 0], [0.4, 0.05], atol=1e-7)

  # The restriction's sign is taken at x_1..x_{T-2}; with lambda = 7 from x_2 on, the held cells
  # can climb back exactly to their first value, where a float32 rounding residue would decide
  # it, so a long climb uses a weight below the score's gradient.
  @pytest.mark.parametrize('steps, weight, current_mask', [(2, 7.0, False), (3, 7.0, False),
                                                           (3, 7.0, True), (6, 0.02, False),
                                                           (6, 0.0, False)])
  def test_against_the_reference(self, steps, weight, current_mask):
    logits, maps = map_transforms.adversarial_climbing(linear_model, jnp.asarray(self.IMAGES), steps,
                                                  0.5, 0.3, weight, 2, current_mask)
    want_logits, want = climb_reference(self.IMAGES, steps, 0.5, 0.3, weight, 2, current_mask)
    np.testing.assert_allclose(np.asarray(maps), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), want_logits, rtol=1e-5, atol=1e-6)  # Plain.
    _, plain = climb_reference(self.IMAGES, 1, 0.5, 0.3, weight)
    assert not np.allclose(want, plain, atol=1e-3)  # The climb moved the maps.
    if steps > 2 and weight:  # The restriction acts from the second step on.
      assert not np.allclose(want, climb_reference(self.IMAGES, steps, 0.5, 0.3, 0.0)[1], atol=1e-3)

  def test_one_step_is_relu_over_its_maximum(self):
    _, maps = map_transforms.adversarial_climbing(linear_model, jnp.asarray(self.IMAGES), 1, 0.5, 0.3,
                                             7.0)
    z = self.IMAGES.astype(np.float64) @ W
    np.testing.assert_allclose(np.asarray(maps), _max_norm(np.maximum(z, 0)), rtol=1e-5, atol=1e-6)

  def test_unclimbed_classes_are_relu_over_their_maximum(self):
    logits, maps = map_transforms.adversarial_climbing(linear_model, jnp.asarray(self.IMAGES), 4, 0.5,
                                                  0.3, 7.0, max_classes=1)
    plain = _max_norm(np.maximum(self.IMAGES.astype(np.float64) @ W, 0))
    top = np.asarray(logits).argmax(axis=1)
    for i, c in enumerate(top):
      others = [k for k in range(3) if k != c]
      np.testing.assert_allclose(np.asarray(maps)[i][..., others], plain[i][..., others],
                                 rtol=1e-5, atol=1e-6)
      assert not np.allclose(np.asarray(maps)[i][..., c], plain[i][..., c], atol=1e-3)
      assert np.asarray(maps)[i][..., c].max() == pytest.approx(1.0)

  def test_climbing_grows_the_map(self):
    # Without the restriction and the other classes, the map's support can only grow here.
    # Image 2 predicts nothing: its top-scoring class 0 climbs, from a map mostly <= 0.
    _, maps = map_transforms.adversarial_climbing(linear_model, jnp.asarray(self.IMAGES[2:]), 6, 0.5,
                                             0.3, 0.0, max_classes=1)
    z = self.IMAGES[2].astype(np.float64) @ W
    assert (np.asarray(maps)[0, :, :, 0] > 0).sum() > (z[..., 0] > 0).sum()


@pytest.mark.parametrize('head', ['excam', 'cam'])
def test_climbing_a_network(head):
  """A tiny ResNet of each head kind through the evaluation's predict function: the scores are
  the plain image's, the climbed classes' maps move, the others are relu(z) / max."""
  config = tiny.get_config()
  config.model.head = head
  model = network.create_model(config.model, config.data.parts.num_classes)
  variables = conftest.random_variables(model, config.data.image_size)
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  logits, z = inference.make_predict_fn(model, variables)(images)
  climb = map_transforms.from_config({'map_expansion': 'advcam', 'map_expansion_climb_steps': 3,
                                 'map_expansion_climb_classes': 1})
  got_logits, maps = inference.make_predict_fn(model, variables, climb)(images)
  np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-5)
  plain = _max_norm(np.maximum(z.astype(np.float64), 0))
  for i, c in enumerate(logits.argmax(axis=1)):
    others = [k for k in range(logits.shape[1]) if k != c]
    np.testing.assert_allclose(maps[i][..., others], plain[i][..., others], atol=1e-5)
    assert not np.allclose(maps[i][..., c], plain[i][..., c], atol=1e-3)  # Climbing moved it.
    assert maps[i][..., c].max() == pytest.approx(1.0) and maps[i].min() >= 0


class TestFields:

  def test_from_config(self):
    assert map_transforms.from_config(None) is None
    assert map_transforms.from_config(ml_collections.ConfigDict({'map_expansion': 'none'})) is None
    images = TestExpandByErasing.IMAGES
    model = channel_model((1.0, -1.0))
    erase = map_transforms.from_config(ml_collections.ConfigDict(
        {'map_expansion': 'erase', 'map_expansion_steps': 3, 'map_expansion_threshold': 0.4}))
    np.testing.assert_array_equal(np.asarray(erase(model, images)[1]),
                                  np.asarray(map_transforms.expand_by_erasing(model, images, 3, 0.4)[1]))
    relative = map_transforms.from_config(ml_collections.ConfigDict(
        {'map_expansion': 'relative', 'map_expansion_threshold': 0.3}))
    np.testing.assert_allclose(np.asarray(relative(model, images)[1]),
                               _norm(images[..., :2].astype(np.float64)) - 0.3, atol=1e-6)

  def test_advcam_then_relative(self):
    images = TestAdversarialClimbing.IMAGES
    fields = {'map_expansion': 'advcam+relative', 'map_expansion_steps': 5,
              'map_expansion_climb_steps': 3, 'map_expansion_climb_classes': 2,
              'map_expansion_threshold': 0.4, 'map_expansion_step_size': 0.3,
              'map_expansion_weight': 7.0}
    got = map_transforms.from_config(ml_collections.ConfigDict(fields))(linear_model,
                                                                   jnp.asarray(images))[1]
    want = _norm(climb_reference(images, 3, 0.4, 0.3, 7.0)[1]) - 0.4
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)

  def test_describe_names_the_rule(self):
    fields = {'map_expansion': 'relative', 'map_expansion_steps': 2, 'map_expansion_threshold': 0.5}
    assert 'above 0.5 of its range' in map_transforms.describe(fields)
    assert '3 passes' in map_transforms.describe(dict(fields, map_expansion='erase', map_expansion_steps=3))
    assert map_transforms.describe(dict(fields, map_expansion='none')).startswith('none')
    climb = map_transforms.describe(dict(map_transforms.DEFAULTS, map_expansion='advcam+relative'))
    assert 'AdvCAM' in climb and '26 steps of size 0.08' in climb and 'sum of the 27' in climb
    assert 'at most 2 per image' in climb and climb.endswith('of its range')

  def test_overrides_on_top_of_the_config(self):
    config = tiny.get_config()
    assert inference.transform_fields(config, None)['map_expansion'] == 'none'
    fields = inference.transform_fields(config, {'map_expansion': 'erase',
                                                  'map_expansion_steps': None})
    assert fields == {'map_expansion': 'erase', 'map_expansion_steps': 2,
                      'map_expansion_threshold': 0.5, 'map_expansion_step_size': 0.08,
                      'map_expansion_weight': 7.0, 'map_expansion_climb_steps': 27,
                      'map_expansion_climb_classes': 2, 'map_expansion_temperature': 10.0,
                      'map_expansion_affinity_power': 8.0, 'map_expansion_radius': 8,
                      'map_expansion_eps': 0.01}
    # A config saved before the climbing fields existed: AdvCAM's published 27 steps.
    del config.eval['map_expansion_climb_steps'], config.eval['map_expansion_climb_classes']
    old = inference.transform_fields(config, {'map_expansion': 'advcam'})
    assert old['map_expansion_climb_steps'] == 27 and old['map_expansion_steps'] == 2

  @pytest.mark.parametrize('field, value', [('map_expansion', 'gradcam'),
                                            ('map_expansion', 'relative+erase'),
                                            ('map_expansion_steps', 0),
                                            ('map_expansion_threshold', 1.0),
                                            ('map_expansion_step_size', 0.0),
                                            ('map_expansion_weight', -1.0),
                                            ('map_expansion_climb_steps', 0),
                                            ('map_expansion_climb_classes', 0)])
  def test_bad_values_name_the_field(self, field, value):
    config = tiny.get_config()
    config.eval[field] = value
    with pytest.raises(ConfigError, match=f'config.eval.{field}='):
      config_schema.validate(config)
    with pytest.raises(ConfigError, match=f'config.eval.{field}='):
      inference.transform_fields(tiny.get_config(), {field: value})


def test_evaluate_with_each_transform(tmp_path, write_tiny_checkpoint):
  """One checkpoint scored four ways: the relative rule moves only the box metrics (it is
  monotone in each map), erasing moves the maps; the protocol names each."""
  write_tiny_checkpoint(tmp_path, 3)
  got = {}
  for kind in ('none', 'relative', 'erase', 'advcam'):
    out = checkpoint_eval.evaluate_checkpoint(str(tmp_path), figures=0, workers=0,
                                     output=str(tmp_path / kind),
                                     expansion={'map_expansion': kind, 'map_expansion_steps': 1,
                                                'map_expansion_climb_steps': 2})
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
                                           ('--map_expansion_threshold=1.5', 'in (0, 1)'),
                                           ('--map_expansion_climb_steps=0', 'an int >= 1')])
def test_evaluate_answers_a_bad_transform_flag(tmp_path, flag, allowed):
  (tmp_path / 'checkpoints').mkdir()
  code, _, lines = cli_util.run_command('excam_jax.evaluate', f'--workdir={tmp_path}', flag,
                                        '--map_expansion=advcam')
  cli_util.assert_one_error_line(code, lines, flag.split('=')[0][2:], allowed)


def test_outputs_cache_climbs_once_for_advcam_and_advcam_relative(tmp_path, write_tiny_checkpoint,
                                                                   monkeypatch):
  """With outputs_cache, 'advcam+relative' is scored from the climb 'advcam' kept: the metrics
  equal an uncached 'advcam+relative', and the climb does not run again."""
  write_tiny_checkpoint(tmp_path, 3)
  fields = {'map_expansion_climb_steps': 3}

  def evaluate(kind, out, cache=None):
    out = checkpoint_eval.evaluate_checkpoint(str(tmp_path), figures=0, output=str(tmp_path / out),
                                     outputs_cache=cache,
                                     expansion=dict(fields, map_expansion=kind))
    with open(os.path.join(out, 'metrics.json'), encoding='utf-8') as f:
      return json.load(f)

  plain = evaluate('advcam+relative', 'uncached')
  cache = str(tmp_path / 'outputs')
  climbed = evaluate('advcam', 'advcam', cache)
  assert len(os.listdir(cache)) == 1
  monkeypatch.setattr(map_transforms, 'adversarial_climbing',
                      lambda *a, **k: pytest.fail('climbed again'))
  cached = evaluate('advcam+relative', 'cached', cache)
  for key in ('corloc', 'maxboxaccv2', 'pxap', 'parts_body_coverage', 'classification_map'):
    assert cached[key] == pytest.approx(plain[key], abs=1e-6), key
  assert cached['protocol']['map_expansion'] == plain['protocol']['map_expansion']
  # Another transform's fields are another key: not served from the file.
  monkeypatch.undo()
  fields['map_expansion_climb_steps'] = 2
  evaluate('advcam', 'two_steps', cache)
  assert len(os.listdir(cache)) == 2 and climbed['protocol'] != cached['protocol']
  # A checkpoint written again at the same step (a run retrained in place) is another key too.
  saved = tmp_path / 'checkpoints' / '3'
  os.utime(saved, ns=(saved.stat().st_atime_ns, saved.stat().st_mtime_ns + 10**9))
  evaluate('advcam', 'rewritten', cache)
  assert len(os.listdir(cache)) == 3



class TestCluster:
  """'cluster': re-activation by the trunk's features, on literal features by hand."""

  # A 4 x 4 map: the object is the 2 x 3 block of rows 0-1, columns 0-2 (features (1, 0)); the
  # rest is background (features (0, 1)); the class map is positive at one object cell only
  # (its discriminative part).
  OBJECT = np.zeros((4, 4), bool)
  OBJECT[:2, :3] = True

  def _inputs(self, peak_cell=(0, 0)):
    features = np.where(self.OBJECT[..., None], [1.0, 0.0], [0.0, 1.0])[None].astype(np.float32)
    maps = np.full((1, 4, 4, 1), -1.0, np.float32)
    maps[0, peak_cell[0], peak_cell[1], 0] = 2.0
    return maps, features * 3.0  # The scale of the features does not matter (normalised).

  def test_one_step_by_hand(self):
    # w0 = 1 at the peak, 0 elsewhere: mu_fg = (1, 0); mu_bg = the mean of the 5 other object
    # cells and the 10 background cells = (5/15, 10/15). s = kappa (f . mu_fg - f . mu_bg):
    # object cells 10 (1 - 1/3) = 20/3, background cells 10 (0 - 2/3) = -20/3.
    maps, features = self._inputs()
    s = np.asarray(map_transforms.cluster_maps(maps, features, 1, 10.0))[0, :, :, 0]
    np.testing.assert_allclose(s, np.where(self.OBJECT, 20 / 3, -20 / 3), rtol=1e-5)

  def test_more_steps_keep_the_whole_object_and_an_empty_map_stays(self):
    maps, features = self._inputs(peak_cell=(1, 2))
    s = np.asarray(map_transforms.cluster_maps(maps, features, 3, 10.0))[0, :, :, 0]
    np.testing.assert_array_equal(s > 0, self.OBJECT)  # The whole block, from one cell.
    empty = np.full((1, 4, 4, 1), -0.5, np.float32)
    np.testing.assert_array_equal(map_transforms.cluster_maps(empty, features, 3, 10.0), empty)

  def test_through_the_transform_keeps_the_scores(self):
    maps, features = self._inputs()
    logits = np.array([[1.5]], np.float32)
    apply_fn = lambda x, with_features=False: ((logits, maps, features) if with_features
                                               else (logits, maps))
    fields = dict(map_transforms.DEFAULTS, map_expansion='cluster', map_expansion_steps=1)
    got_logits, got = map_transforms.transform(apply_fn, None, 'cluster', fields)
    np.testing.assert_array_equal(got_logits, logits)
    np.testing.assert_allclose(np.asarray(got)[0, :, :, 0],
                               np.where(self.OBJECT, 20 / 3, -20 / 3), rtol=1e-5)
    assert map_transforms.describe(fields).startswith('cluster: 1 re-weighting steps')


class TestAffinity:
  """'affinity': a random walk along the features' cosine affinities, on literal inputs by hand."""

  # Three cells in a row with features at 0, 60 and 90 degrees: cos(a, b) = 0.5, cos(b, c) =
  # sqrt(3)/2, cos(a, c) = 0. With beta = 2: A = [[1, .25, 0], [.25, 1, .75], [0, .75, 1]], row
  # sums 1.25, 2, 1.75.
  FEATURES = np.array([[[[1.0, 0.0], [0.5, 3 ** 0.5 / 2], [0.0, 1.0]]]], np.float32) * 2.0
  MAPS = np.array([4.0, -1.0, -2.0], np.float32).reshape(1, 1, 3, 1)

  def test_one_and_two_steps_by_hand(self):
    # z' = T z: a (4 - .25) / 1.25 = 3; b (1 - 1 - 1.5) / 2 = -0.75; c (-.75 - 2) / 1.75 = -11/7.
    one = np.asarray(map_transforms.affinity_maps(self.MAPS, self.FEATURES, 1, 2.0)).ravel()
    np.testing.assert_allclose(one, [3.0, -0.75, -11 / 7], rtol=1e-5)
    # Again: a (3 - .1875) / 1.25 = 2.25; b (.75 - .75 - 33/28) / 2 = -33/56;
    # c (-.5625 - 11/7) / 1.75.
    two = np.asarray(map_transforms.affinity_maps(self.MAPS, self.FEATURES, 2, 2.0)).ravel()
    np.testing.assert_allclose(two, [2.25, -33 / 56, (-0.5625 - 11 / 7) / 1.75], rtol=1e-5)

  def test_a_block_of_alike_cells_shares_its_evidence_and_the_scores_stay(self):
    # Object cells (features (1, 0)) and background cells ((0, 1)) have affinity 0 across: one
    # step replaces each cell by its block's mean, whatever beta. The object's one strong cell
    # (7, the part) lifts its 5 weak cells (-1) to (7 - 5) / 6 = 1/3 > 0; background stays -1.
    obj = np.zeros((4, 4), bool)
    obj[:2, :3] = True
    features = np.where(obj[..., None], [1.0, 0.0], [0.0, 1.0])[None].astype(np.float32)
    maps = np.full((1, 4, 4, 1), -1.0, np.float32)
    maps[0, 0, 0, 0] = 7.0
    logits = np.array([[1.5]], np.float32)
    apply_fn = lambda x, with_features=False: ((logits, maps, features) if with_features
                                               else (logits, maps))
    fields = dict(map_transforms.DEFAULTS, map_expansion='affinity', map_expansion_steps=1,
                  map_expansion_affinity_power=5.0)
    got_logits, got = map_transforms.transform(apply_fn, None, 'affinity', fields)
    np.testing.assert_array_equal(got_logits, logits)
    np.testing.assert_allclose(np.asarray(got)[0, :, :, 0], np.where(obj, 1 / 3, -1.0), rtol=1e-5)
    assert map_transforms.describe(fields).startswith('affinity: 1 random-walk steps')


class TestGuided:
  """'guided': the colour guided filter of the image on the upsampled maps, by hand."""

  def test_window_means_are_clipped_at_the_border(self):
    x = np.arange(1.0, 10.0, dtype=np.float32).reshape(1, 3, 3, 1)
    got = np.asarray(map_transforms._box_mean(x, 1))[0, :, :, 0]  # pylint: disable=protected-access
    # Corner: (1 + 2 + 4 + 5) / 4; edge: (1 + ... + 6) / 6; centre: the mean of all, 5.
    np.testing.assert_allclose(got, [[3.0, 3.5, 4.0], [4.5, 5.0, 5.5], [6.0, 6.5, 7.0]],
                               rtol=1e-6)

  def _inputs(self):
    # A 4 x 16 image, columns 0-7 black and 8-15 white; the map (at the image's size, so the
    # upsampling is the identity) is the ramp p_j = j - 6.5, positive from column 7: one column
    # of the black side.
    images = np.zeros((1, 4, 16, 3), np.float32)
    images[:, :, 8:] = 1.0
    maps = np.broadcast_to(np.arange(16, dtype=np.float32) - 6.5, (1, 4, 16))[..., None].copy()
    return images, maps

  def test_the_maps_edge_moves_to_the_images_edge(self):
    # Radius 3, eps -> 0: in a window the fit is p = a I + b with b the mean of p on its black
    # columns and a + b the mean on its white ones. Column 7 (black) is the mean over the 7
    # windows centred on 4..10 of the black means -2.5, -2, -1.5, -1, -0.5, 0, 0.5: -1.
    # Column 8 (white): the white means over the windows centred on 5..11, 1.5, 2, ..., 4.5: 3.
    images, maps = self._inputs()
    q = np.asarray(map_transforms.guided_maps(maps, images, 3, 1e-6))[0, :, :, 0]
    np.testing.assert_allclose(q[:, 7], -1.0, rtol=1e-3)
    np.testing.assert_allclose(q[:, 8], 3.0, rtol=1e-3)
    np.testing.assert_array_equal(q > 0, images[0, :, :, 0] > 0)  # Positive exactly on white.
    assert maps[0, 0, 7, 0] > 0  # Before: positive on a black column too.

  def test_through_the_transform_maps_at_the_images_size_and_the_scores_stay(self):
    images, _ = self._inputs()
    low = np.array([[-2.0, 2.0]], np.float32).reshape(1, 1, 2, 1)  # (1, h=1, w=2, C=1)
    logits = np.array([[0.7]], np.float32)
    fields = dict(map_transforms.DEFAULTS, map_expansion='guided', map_expansion_radius=2)
    got_logits, got = map_transforms.transform(lambda x: (logits, low), images, 'guided', fields)
    np.testing.assert_array_equal(got_logits, logits)
    assert got.shape == (1, 4, 16, 1)
    got = np.asarray(got)[0, :, :, 0]
    assert (got[:, :8] < 0).all() and (got[:, 8:] > 0).all()  # The colour edge splits the map.
    constant = np.full((1, 1, 2, 1), 1.25, np.float32)  # A flat map stays flat, on its scale.
    np.testing.assert_allclose(map_transforms.guided_maps(constant, images, 2, 0.01), 1.25,
                               rtol=1e-5)
    assert map_transforms.describe(fields).startswith('guided: each class map upsampled')
