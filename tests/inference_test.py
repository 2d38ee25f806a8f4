"""excam_jax.inference: the one restore -> model -> predict path, and the maps' display scale."""

import numpy as np
import pytest

from excam_jax import inference
from excam_jax import visualize
from excam_jax.errors import UserError
from excam_jax.models import network
from excam_jax.training import checkpoints


@pytest.fixture(name='run', scope='module')
def fixture_run(tmp_path_factory, write_tiny_checkpoint):
  workdir = tmp_path_factory.mktemp('run')
  config = write_tiny_checkpoint(workdir, 3)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, config.data.image_size, config.data.image_size, 3))
  return str(workdir), config, images.astype(np.float32)


def test_load_predicts_what_the_restored_model_gives(run):
  workdir, config, images = run
  predictor = inference.load(workdir)
  assert predictor.step == 3 and predictor.image_size == config.data.image_size
  assert predictor.scale == 'logits' and predictor.heat is visualize.sigmoid
  _, variables, _ = checkpoints.restore(workdir)
  model = network.create_model(config.model, config.data.parts.num_classes)
  logits, aux = model.apply(variables, images, train=False)
  got_logits, got_maps = predictor(images)
  np.testing.assert_allclose(got_logits, np.asarray(logits, np.float32), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_maps, np.asarray(aux['class_maps'], np.float32), rtol=1e-5,
                             atol=1e-5)


def test_the_relative_transform_is_on_the_normalised_scale(run):
  workdir, _, images = run
  plain = inference.load(workdir)
  relative = inference.load(workdir, transform={'map_expansion': 'relative',
                                                'map_expansion_threshold': 0.25})
  assert inference.load(workdir, transform='relative').transform['map_expansion'] == 'relative'
  assert relative.scale == 'normalised' and relative.transform['map_expansion_threshold'] == 0.25
  _, z = plain(images)
  _, maps = relative(images)
  # Each map min-max normalised over its cells, then shifted by the threshold.
  low = z.min(axis=(1, 2), keepdims=True)
  high = z.max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(maps, (z - low) / (high - low) - 0.25, atol=1e-5)
  np.testing.assert_allclose(relative.heat(np.array([-0.5, 0.0, 0.5, 0.9])),
                             [0.0, 0.25, 0.75, 1.0])


def test_base_transform_leaves_the_relative_step_to_the_caller(run):
  workdir, _, images = run
  whole = inference.load(workdir, transform='relative')
  base = inference.load(workdir, transform='relative', base_transform=True)
  _, z = base(images)
  _, expected = whole(images)
  np.testing.assert_allclose(inference.relative_step(base.transform, z), expected, atol=1e-5)
  assert base.scale == 'normalised'  # The heat of the whole transform.


def test_relative_step_on_literal_maps():
  maps = np.array([[[[0.0], [2.0]], [[4.0], [1.0]]]])  # (1, 2, 2, C = 1)
  fields = {'map_expansion': 'advcam+relative', 'map_expansion_threshold': 0.5}
  np.testing.assert_allclose(inference.relative_step(fields, maps)[0, :, :, 0],
                             [[-0.5, 0.0], [0.5, -0.25]])
  assert inference.relative_step({'map_expansion': 'advcam'}, maps) is maps


def test_only_inference_fields_may_change(run):
  workdir, _, _ = run
  with pytest.raises(UserError, match=r'model\.num_maps cannot change at evaluation'):
    inference.load(workdir, model_overrides={'num_maps': 4})
  with pytest.raises(UserError, match='map_expansion'):
    inference.load(workdir, transform={'map_expansion': 'grow'})


def test_a_run_without_checkpoints_is_one_error(tmp_path):
  with pytest.raises(UserError):
    inference.load(str(tmp_path))


@pytest.mark.parametrize('kind', ['cluster', 'affinity'])
def test_feature_transforms_read_the_features(run, kind):
  workdir, _, images = run
  plain = inference.load(workdir)
  transformed = inference.load(workdir, transform={'map_expansion': kind,
                                                   'map_expansion_steps': 1})
  logits, z = plain(images)
  got_logits, maps = transformed(images)
  np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-6)  # Scores unchanged.
  assert maps.shape == z.shape and transformed.scale == 'logits'
  assert not np.allclose(maps, z)  # Re-weighted by the features.


def test_guided_transform_gives_maps_at_the_images_size(run):
  workdir, _, images = run
  logits, z = inference.load(workdir)(images)
  guided = inference.load(workdir, transform={'map_expansion': 'guided',
                                              'map_expansion_radius': 2})
  got_logits, maps = guided(images)
  np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-6)  # Scores unchanged.
  assert maps.shape == images.shape[:3] + z.shape[-1:] and guided.scale == 'logits'

