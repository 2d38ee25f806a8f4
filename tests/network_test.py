"""The network (trunk + head and transform by config) and the config checks."""

from flax import errors as flax_errors
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cub
from configs import ilsvrc
from configs import openimages
from configs import synthetic
from configs import tiny
from configs import voc07
from configs import voc12
from excam_jax import config_schema
from excam_jax.errors import ConfigError
from excam_jax.models import adl
from excam_jax.models import cam
from excam_jax.models import excam
from excam_jax.models import losses
from excam_jax.models import network
from excam_jax.models import resnet
from excam_jax.models import wildcat


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
  parts = {'a', 'b'} if head == 'acol' else {'trunk', 'head'}  # ACoL: two classifiers.
  assert set(state) == {'batch_stats'} and set(variables['params']) == parts
  if head not in ('cam', 'acol'):
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
  # ResNet-18 at stem width 8: layer4 has 8 * 8 = 64 channels.
  assert kernel.shape == (1, 1, 64, 4 * config.model.num_maps)


@pytest.mark.parametrize('head, head_type, transform_type', [
    ('excam', wildcat.WildcatHead, excam.SequentialDropout),
    ('wildcat', wildcat.WildcatHead, type(None)),
    ('adl', wildcat.WildcatHead, adl.AttentionDropout),
    ('cam', cam.CAMHead, None)])
def test_create_model_builds_head_and_transform(head, head_type, transform_type):
  assert head in network.HEADS
  config = small_config(head)
  config.model.update({'kmax': 3, 'kmin': 0.5, 'alpha': 0.4, 'num_maps': 5,
                       'drop_threshold': 0.3, 'self_drop': False, 'straight_through': False,
                       'temperature': 0.7, 'learn_threshold': 'scalar', 'adl_gamma': 0.8,
                       'adl_drop_rate': 0.25})
  model = network.create_model(config.model, num_classes=4)
  assert type(model.head) is head_type and model.head.num_classes == 4
  assert model.trunk.depth == 18 and model.trunk.width == 8
  if head_type is cam.CAMHead:
    return
  h = model.head
  assert (h.num_maps, h.kmax, h.kmin, h.alpha) == (5, 3, 0.5, 0.4)
  assert type(h.transform) is transform_type
  if head == 'excam':
    t = h.transform
    assert (t.drop_threshold, t.self_drop, t.straight_through, t.temperature,
            t.learn_threshold) == (0.3, False, False, 0.7, 'scalar')
  if head == 'adl':
    assert (h.transform.gamma, h.transform.drop_rate) == (0.8, 0.25)


@pytest.mark.parametrize('head', ['wildcat', 'excam', 'adl', 'acol'])
def test_class_pooling_reaches_every_wildcat_family_head(head):
  config = small_config(head)
  model = network.create_model(config.model, num_classes=3)
  heads = [model.a.head, model.b.head] if head == 'acol' else [model.head]
  assert [h.class_pooling for h in heads] == ['mean'] * len(heads)  # The default.
  config.model.class_pooling = 'max'
  config_schema.validate_model(config)
  model = network.create_model(config.model, num_classes=3)
  heads = [model.a.head, model.b.head] if head == 'acol' else [model.head]
  assert [h.class_pooling for h in heads] == ['max'] * len(heads)
  if head == 'acol':
    return
  x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
  _, aux = model.apply(model.init(jax.random.key(0), x), x)
  assert bool(jnp.all(jnp.isfinite(aux['class_maps'])))
  # ex-CAM: z = max_j F'_j, the dropped maps' max; WILDCAT and ADL (identity at test): max_m F_m.
  np.testing.assert_array_equal(aux['class_maps'], aux['dropped_maps'].max(axis=-1))


def test_configs_without_class_pooling_mean_the_class_wise_mean():
  config = small_config('wildcat')
  del config.model['class_pooling']  # A config saved before the field existed.
  config_schema.validate_model(config)
  assert network.create_model(config.model, num_classes=3).head.class_pooling == 'mean'


def test_class_wise_max_is_refused_for_cam():
  config = small_config('cam')
  config.model.class_pooling = 'max'
  with pytest.raises(ConfigError, match="config.model.class_pooling='max'.*'mean' with a CAM"):
    config_schema.validate_model(config)
  with pytest.raises(ValueError, match="class_pooling must be 'mean' with a CAM head"):
    network.create_model(config.model, num_classes=3)
  config.model.head, config.model.acol_head = 'acol', 'cam'  # ACoL of two CAM classifiers.
  with pytest.raises(ConfigError, match="config.model.class_pooling='max'.*'mean' with a CAM"):
    config_schema.validate_model(config)


def test_create_model_rejects_unknown_head():
  with pytest.raises(ValueError, match="model.head must be one of .*'gradcam'"):
    network.create_model(small_config('gradcam').model, num_classes=3)


@pytest.mark.parametrize('learn, shape', [('scalar', ()), ('per_class', (3,))])
def test_learned_threshold_gets_gradient_only_with_straight_through(learn, shape):
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  for straight_through in (True, False):
    config = small_config('excam')
    config.model.update({'learn_threshold': learn, 'straight_through': straight_through})
    model = network.create_model(config.model, num_classes=3)
    variables = model.init(jax.random.key(1), x)
    # The transform shares the head's scope: the threshold sits beside the conv.
    assert set(variables['params']['head']) == {'classifier', 'threshold'}

    def loss(params):
      return model.apply({**variables, 'params': params}, x)[0].sum()

    grad = jax.grad(loss)(variables['params'])['head']['threshold']
    assert grad.shape == shape
    assert bool(jnp.any(grad != 0)) == straight_through


def test_heads_without_learned_threshold_have_only_the_classifier():
  for head in ('excam', 'wildcat', 'adl'):
    model = network.create_model(small_config(head).model, num_classes=3)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert set(shapes['params']['head']) == {'classifier'}, head


def small_model(head):
  """A tiny network for 3 classes, its variables and a random 64-px batch of 2."""
  model = network.create_model(small_config(head).model, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  return model, model.init(jax.random.key(1), x), x


def test_adl_is_identity_at_test_time():
  model, variables, x = small_model('adl')
  _, aux = model.apply(variables, x)
  np.testing.assert_array_equal(aux['maps'], aux['dropped_maps'])


ADL_MAPS = jnp.array([1., 2., 10., -3.]).reshape(1, 2, 2, 1, 1)
ADL_DROP = np.array([1., 2., 0., -3.])  # Cells >= 0.9 * 10 dropped.
ADL_IMPORTANCE = np.asarray(ADL_MAPS).ravel() * np.asarray(jax.nn.sigmoid(ADL_MAPS)).ravel()


def _drop_or_importance(out):
  """Which of ADL's two outputs `out` is; fails if it is neither."""
  if np.array_equal(np.ravel(out), ADL_DROP):
    return 'drop'
  np.testing.assert_allclose(np.ravel(out), ADL_IMPORTANCE, rtol=1e-6)
  return 'importance'


def test_adl_training_applies_drop_or_importance_map():
  seen = {_drop_or_importance(adl.adl_per_map(ADL_MAPS, jax.random.key(seed), True,
                                                   gamma=0.9, drop_rate=0.75))
          for seed in range(20)}
  assert seen == {'drop', 'importance'}


def test_attention_dropout_is_identity_at_eval_without_rng():
  module = adl.AttentionDropout(gamma=0.9, drop_rate=1.0)
  assert not module.init(jax.random.key(0), ADL_MAPS)  # No parameters.
  np.testing.assert_array_equal(module.apply({}, ADL_MAPS), ADL_MAPS)
  np.testing.assert_array_equal(module.apply({}, ADL_MAPS, train=False), ADL_MAPS)


def test_attention_dropout_draws_from_the_dropout_rng_in_training():
  module = adl.AttentionDropout(gamma=0.9, drop_rate=0.75)
  with pytest.raises(flax_errors.InvalidRngError, match='dropout'):
    module.apply({}, ADL_MAPS, train=True)
  seen = set()
  for seed in range(20):
    out = module.apply({}, ADL_MAPS, train=True, rngs={'dropout': jax.random.key(seed)})
    again = module.apply({}, ADL_MAPS, train=True, rngs={'dropout': jax.random.key(seed)})
    np.testing.assert_array_equal(out, again)  # The draw is a function of the key.
    seen.add(_drop_or_importance(out))
  assert seen == {'drop', 'importance'}
  # drop_rate 1 and 0 always pick the drop mask and the importance map.
  key = {'dropout': jax.random.key(0)}
  np.testing.assert_array_equal(adl.AttentionDropout(0.9, 1.0).apply(
      {}, ADL_MAPS, train=True, rngs=key).ravel(), ADL_DROP)
  np.testing.assert_allclose(adl.AttentionDropout(0.9, 0.0).apply(
      {}, ADL_MAPS, train=True, rngs=key).ravel(), ADL_IMPORTANCE, rtol=1e-6)


def test_cam_maps_average_to_logits_minus_bias():
  model, variables, x = small_model('cam')
  logits, aux = model.apply(variables, x)
  bias = variables['params']['head']['classifier']['bias']
  np.testing.assert_allclose(aux['class_maps'].mean(axis=(1, 2)) + bias, logits, rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize('module', [voc12, voc07, synthetic, tiny, cub, ilsvrc, openimages])
def test_shipped_configs_are_valid(module):
  config = module.get_config()
  config_schema.validate_model(config)
  assert config.model.num_maps >= 1


def test_voc_configs_follow_spec_defaults():
  c12, c07 = voc12.get_config(), voc07.get_config()
  d12, d07 = c12.data, c07.data
  assert (d12.dataset, d12.train_split, d12.eval_split) == ('voc/2012', 'train', 'validation')
  assert (d07.dataset, d07.train_split, d07.eval_split) == ('voc/2007', 'trainval', 'test')
  m = c12.model
  assert (m.depth, m.num_maps, m.kmax, m.kmin, m.alpha) == (101, 8, 0.2, 0.2, 0.6)
  o, t = c12.optim, c12.train
  assert (t.batch_size, t.num_epochs, o.momentum, o.weight_decay) == (16, 20, 0.9, 1e-4)
  assert (o.head_learning_rate, o.trunk_learning_rate) == (0.01, 0.001)


def test_config_checks_know_the_trunks():
  assert config_schema.DEPTHS == tuple(sorted(resnet.STAGES))
  assert config_schema.OUTPUT_STRIDES == resnet.OUTPUT_STRIDES


@pytest.mark.parametrize('field, value', [
    ('model.num_maps', 0), ('model.kmax', 50), ('model.kmax', 0.0), ('model.kmin', -0.5),
    ('model.depth', 42), ('data.image_size', 230), ('model.head', 'gradcam'),
    ('model.output_stride', 4), ('model.drop_threshold', 1.0), ('model.learn_threshold', 'yes'),
    ('model.dtype', 'float16'), ('model.temperature', 0.0), ('optim.diversity_loss', 'l1'),
    ('model.class_pooling', 'median'), ('model.acol_fusion', 'max')])
def test_invalid_values_name_the_field(field, value):
  config = voc12.get_config()  # 224 px, stride 32: n = 49.
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ConfigError, match=f'config.{field}='):
    config_schema.validate_model(config)


def test_diversity_loss_needs_per_class_maps():
  config = voc12.get_config()
  config.optim.diversity_loss = 'cosine'
  config_schema.validate_model(config)
  config.model.head = 'cam'
  with pytest.raises(ConfigError, match="config.optim.diversity_loss='cosine'.*a CAM head"):
    config_schema.validate_model(config)
  config.model.head, config.model.acol_head = 'acol', 'cam'  # ACoL of two CAM classifiers.
  with pytest.raises(ConfigError, match="config.optim.diversity_loss='cosine'.*a CAM head"):
    config_schema.validate_model(config)
  config.model.acol_head = 'excam'
  config_schema.validate_model(config)


def test_kmax_count_limit_follows_map_size():
  config = voc12.get_config()
  config.model.kmax = 49
  config_schema.validate_model(config)
  config.data.image_size = 448  # 14 x 14 = 196 cells.
  config.model.kmax = 196
  config_schema.validate_model(config)


def test_spatial_pooling_is_checked_and_reaches_the_head():
  config = tiny.get_config()
  config.model.update(head='excam', spatial_pooling='gap')
  config_schema.validate_model(config)
  model = network.create_model(config.model, 3)
  assert model.head.spatial_pooling == 'gap'
  config.model.spatial_pooling = 'max'
  with pytest.raises(ConfigError, match=r"model\.spatial_pooling='max' is invalid"):
    config_schema.validate_model(config)
  config.model.update(head='cam', spatial_pooling='gap')
  with pytest.raises(ConfigError, match='CAM head'):
    config_schema.validate_model(config)


def test_map_generator_is_checked_and_reaches_the_head():
  config = tiny.get_config()
  config.model.update(head='excam', map_generator=True)
  config.optim.background_weight = 1.0
  config_schema.validate_model(config)
  config_schema.validate_training(config)
  model = network.create_model(config.model, 3)
  assert model.head.generator
  _, aux = model.apply(model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))),
                       jnp.zeros((2, 32, 32, 3)))
  assert aux['class_maps'].shape == aux['activation_maps'].shape == (2, 4, 4, 3)
  config.model.map_generator_stage = 3  # BAS's: the stage before the last (32 channels here).
  config_schema.validate_model(config)
  model = network.create_model(config.model, 3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert variables['params']['head']['generator']['kernel'].shape == (1, 1, 32, 3)
  assert model.apply(variables, jnp.zeros((2, 32, 32, 3)))[1]['class_maps'].shape == (2, 4, 4, 3)
  config.model.map_generator_stage = 1  # Stride 4: not the maps' resolution at output stride 8.
  with pytest.raises(ConfigError, match=r'model\.map_generator_stage=1 is invalid.*\(2, 3, 4\)'):
    config_schema.validate_model(config)
  config.model.map_generator_stage = 4
  for head in ('cam', 'acol'):
    config.model.head = head
    with pytest.raises(ConfigError, match=r'model\.map_generator=True is invalid'):
      config_schema.validate_model(config)
  config.model.head = 'wildcat'
  config.optim.background_weight = 0.0  # The generator would learn nothing.
  with pytest.raises(ConfigError, match=r'optim\.background_weight=0\.0 is invalid.*> 0'):
    config_schema.validate_training(config)
  config.model.map_generator, config.optim.background_weight = False, 1.0
  with pytest.raises(ConfigError, match=r'optim\.background_weight=1\.0 is invalid.*0 without'):
    config_schema.validate_training(config)
