"""The network (trunk + head by config), the losses and the config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from configs import tiny
from configs import voc07
from configs import voc12
from excam_jax import config_checks
from excam_jax.errors import ConfigError
from excam_jax.models import network
from excam_jax.models import resnet


def small_config(head='excam'):
  config = tiny.get_config()
  config.model.head = head
  return config


@pytest.mark.parametrize('head', network.HEADS)
def test_resnet18_64px_forward(head):
  config = small_config(head)
  config.model.width = 64  # A full-width ResNet-18 at 64 px: 2x2 maps.
  config.model.output_stride = 32
  model = network.create_model(config.model, num_classes=5)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  variables = model.init(jax.random.key(1), x)
  (logits, aux), state = model.apply(variables, x, train=True, mutable=['batch_stats'],
                                     rngs={'dropout': jax.random.key(2)})
  assert logits.shape == (2, 5) and bool(jnp.all(jnp.isfinite(logits)))
  assert aux['class_maps'].shape == (2, 2, 2, 5)
  assert set(state) == {'batch_stats'} and set(variables['params']) == {'trunk', 'head'}
  if head != 'cam':
    assert aux['maps'].shape == aux['dropped_maps'].shape == (2, 2, 2, 5, 2)
  logits_eval, _ = model.apply(variables, x)
  assert bool(jnp.all(jnp.isfinite(logits_eval)))


def test_jitted_forward_traces_once():
  config = small_config()
  model = network.create_model(config.model, num_classes=3)
  x = jnp.zeros((2, 64, 64, 3))
  variables = model.init(jax.random.key(0), x)
  traces = []

  @jax.jit
  def forward(variables, images):
    traces.append(1)
    return model.apply(variables, images)

  for seed in range(3):
    logits, aux = forward(variables, jax.random.normal(jax.random.key(seed), x.shape))
  assert len(traces) == 1
  assert aux['class_maps'].shape == (2, 8, 8, 3)


def test_trunk_output_feeds_head_with_right_width():
  config = small_config('wildcat')
  model = network.create_model(config.model, num_classes=4)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  kernel = variables['params']['head']['classifier']['kernel']
  assert kernel.shape == (1, 1, resnet.num_features(18, 8), 4 * config.model.num_maps)


def small_model(head):
  """A tiny network for 3 classes, its variables and a random 64-px batch of 2."""
  model = network.create_model(small_config(head).model, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  return model, model.init(jax.random.key(1), x), x


def test_adl_is_identity_at_test_time():
  model, variables, x = small_model('adl')
  _, aux = model.apply(variables, x)
  np.testing.assert_array_equal(aux['maps'], aux['dropped_maps'])


def test_adl_training_applies_drop_or_importance_map():
  from excam_jax.models import variants
  maps = jnp.array([1., 2., 10., -3.]).reshape(1, 2, 2, 1, 1)
  seen = set()
  for seed in range(20):
    out = variants.adl_per_map(maps, jax.random.key(seed), True, gamma=0.9, drop_rate=0.75)
    drop = np.array([1., 2., 0., -3.])  # Cells >= 0.9 * 10 dropped.
    importance = np.asarray(maps).ravel() * jax.nn.sigmoid(maps).ravel()
    if np.allclose(out.ravel(), drop):
      seen.add('drop')
    else:
      np.testing.assert_allclose(out.ravel(), importance, rtol=1e-6)
      seen.add('importance')
  assert seen == {'drop', 'importance'}


def test_cam_maps_average_to_logits_minus_bias():
  model, variables, x = small_model('cam')
  logits, aux = model.apply(variables, x)
  bias = variables['params']['head']['classifier']['bias']
  np.testing.assert_allclose(aux['class_maps'].mean(axis=(1, 2)) + bias, logits, rtol=1e-4,
                             atol=1e-5)


def test_bce_loss_literal():
  logits = jnp.array([[0.0, 2.0], [-1.0, 0.0]])
  labels = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  ln2 = np.log(2.0)
  per = np.array([(ln2 + np.log1p(np.exp(2.0))) / 2, (np.log1p(np.exp(-1.0)) + ln2) / 2])
  np.testing.assert_allclose(network.bce_loss(logits, labels), per.mean(), rtol=1e-6)
  np.testing.assert_allclose(network.bce_loss(logits, labels, jnp.array([1.0, 0.0])), per[0],
                             rtol=1e-6)


def test_diversity_loss_literal():
  # One image, one class, 2 cells, M = 2: F1 = (1, 0), F2 = (0, 1).
  maps = jnp.array([[1., 0.], [0., 1.]]).reshape(1, 1, 2, 1, 2)
  # Ordered pairs (1,2) and (2,1): ||F1 - F2||^2 = 2 each; the term is subtracted.
  np.testing.assert_allclose(network.diversity_loss(maps, 'pairwise_l2'), -4.0)
  np.testing.assert_allclose(network.diversity_loss(maps, 'cosine'), 0.0, atol=1e-7)
  same = jnp.array([[1., 1.], [2., 2.]]).reshape(1, 1, 2, 1, 2)
  np.testing.assert_allclose(network.diversity_loss(same, 'cosine'), 1.0, rtol=1e-6)
  # M = 3 with F3 = -F1: cosines (0, -1, 0) over the three pairs i < j.
  three = jnp.array([[1., 0., -1.], [0., 1., 0.]]).reshape(1, 1, 2, 1, 3)
  np.testing.assert_allclose(network.diversity_loss(three, 'cosine'), -1 / 3, rtol=1e-6)
  with pytest.raises(ValueError):
    network.diversity_loss(maps, 'l1')


@pytest.mark.parametrize('module', [voc12, voc07, synthetic, tiny])
def test_shipped_configs_are_valid(module):
  config = module.get_config()
  config_checks.validate_model(config)
  assert config.model.num_maps >= 1


def test_voc_configs_follow_spec_defaults():
  c12, c07 = voc12.get_config(), voc07.get_config()
  assert (c12.dataset, c12.train_split, c12.eval_split) == ('voc/2012', 'train', 'validation')
  assert (c07.dataset, c07.train_split, c07.eval_split) == ('voc/2007', 'trainval', 'test')
  m = c12.model
  assert (m.depth, m.num_maps, m.kmax, m.kmin, m.alpha) == (101, 8, 0.2, 0.2, 0.6)
  assert (c12.batch_size, c12.num_epochs, c12.momentum, c12.weight_decay) == (16, 20, 0.9, 1e-4)
  assert (c12.head_learning_rate, c12.trunk_learning_rate) == (0.01, 0.001)


@pytest.mark.parametrize('field, value', [
    ('model.num_maps', 0), ('model.kmax', 50), ('model.kmax', 0.0), ('model.kmin', -0.5),
    ('model.depth', 42), ('image_size', 230), ('model.head', 'gradcam'),
    ('model.output_stride', 4), ('model.drop_threshold', 1.0), ('model.learn_threshold', 'yes'),
    ('model.dtype', 'float16'), ('model.temperature', 0.0), ('diversity_loss', 'l1')])
def test_invalid_values_name_the_field(field, value):
  config = voc12.get_config()  # 224 px, stride 32: n = 49.
  section, _, name = field.rpartition('.')
  (config.model if section else config)[name] = value
  with pytest.raises(ConfigError, match=f'config.{field}='):
    config_checks.validate_model(config)


def test_diversity_loss_needs_per_class_maps():
  config = voc12.get_config()
  config.diversity_loss = 'cosine'
  config_checks.validate_model(config)
  config.model.head = 'cam'
  with pytest.raises(ConfigError, match="config.diversity_loss='cosine'.*model.head='cam'"):
    config_checks.validate_model(config)


def test_kmax_count_limit_follows_map_size():
  config = voc12.get_config()
  config.model.kmax = 49
  config_checks.validate_model(config)
  config.image_size = 448  # 14 x 14 = 196 cells.
  config.model.kmax = 196
  config_checks.validate_model(config)
