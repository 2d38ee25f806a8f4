"""ResNet trunk: parameter counts (shape-only), output shapes, BatchNorm modes, dtype, remat."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from excam_jax.models import fastconv
from excam_jax.models import resnet


def abstract_variables(model, size=224):
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                        jnp.zeros((1, size, size, 3)))


# torchvision's totals minus the fc layer (in_features * 1000 + 1000).
@pytest.mark.parametrize('depth, count', [
    (18, 11_689_512 - 513_000), (34, 21_797_672 - 513_000), (50, 25_557_032 - 2_049_000),
    (101, 42_500_160), (152, 60_192_808 - 2_049_000)])
def test_parameter_count(depth, count):
  variables = abstract_variables(resnet.ResNet(depth=depth))
  assert sum(x.size for x in jax.tree.leaves(variables['params'])) == count


@pytest.mark.parametrize('size, output_stride, hw', [(224, 32, 7), (448, 32, 14),
                                                     (224, 16, 14), (224, 8, 28)])
def test_resnet101_output_shape(size, output_stride, hw):
  model = resnet.ResNet(depth=101, output_stride=output_stride)
  variables = abstract_variables(model)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables,
                       jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
  assert out.shape == (2, hw, hw, 2048)


def _convs(model, size=224):
  """{module path: (stride, dilation, padding)} of every conv the model calls."""
  seen = {}

  def record(call, args, kwargs, context):
    if isinstance(context.module, fastconv.Conv) and context.method_name == '__call__':
      m = context.module
      seen['/'.join(m.scope.path)] = (m.stride, m.dilation, m.padding)
    return call(*args, **kwargs)

  with nn.intercept_methods(record):
    abstract_variables(model, size)
  return seen


@pytest.mark.parametrize('output_stride, hw, layer3, layer4', [
    (16, 14, (2, 1, 1), (1, 1, 1)),  # wsolevaluation's ResNet50.
    (8, 28, (1, 1, 1), (1, 1, 1))])  # ... with large_feature_map.
def test_undilated_stride_one_stages_as_wsolevaluation(output_stride, hw, layer3, layer4):
  """dilate=False: the last stages lose their stride and keep dilation 1 (padding 1), as
  wsolevaluation's wsol/resnet.py ResNetCam; the parameters are the stride-32 net's (ImageNet
  weights load)."""
  model = resnet.ResNet(depth=50, output_stride=output_stride, dilate=False)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), abstract_variables(model),
                       jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert out.shape == (1, hw, hw, 2048)
  convs = _convs(model)
  assert convs['layer3_0/conv2'] == layer3 and convs['layer4_0/conv2'] == layer4
  assert convs['layer4_0/downsample_conv'] == (1, 1, 0)  # 1 x 1, stride 1: as theirs.
  assert {convs[f'layer4_{i}/conv2'] for i in range(3)} == {(1, 1, 1)}
  dilated = _convs(resnet.ResNet(depth=50, output_stride=output_stride))
  assert dilated['layer4_1/conv2'] == (1, 32 // output_stride, 32 // output_stride)
  shapes = lambda m: jax.tree.map(lambda x: x.shape, abstract_variables(m))
  assert shapes(model) == shapes(resnet.ResNet(depth=50))


def test_torchvision_names():
  variables = abstract_variables(resnet.ResNet(depth=50), size=64)
  params = variables['params']
  assert {'conv1', 'bn1', 'layer1_0', 'layer4_2'} <= set(params)
  assert set(params['layer1_0']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3',
                                     'downsample_conv', 'downsample_bn'}
  assert 'downsample_conv' not in params['layer1_1']
  # The stride sits on the 3x3 conv: layer2_0's conv2 kernel is 3x3, conv1 is 1x1.
  assert params['layer2_0']['conv2']['kernel'].shape == (3, 3, 128, 128)
  assert params['layer2_0']['conv1']['kernel'].shape == (1, 1, 256, 128)
  assert set(variables['batch_stats']['bn1']) == {'mean', 'var'}


@pytest.fixture(scope='module')
def small():
  model = resnet.ResNet(depth=18, width=8)
  x = jax.random.normal(jax.random.key(0), (4, 64, 64, 3))
  return model, model.init(jax.random.key(1), x), x


def test_small_forward_shape(small):
  model, variables, x = small
  assert model.apply(variables, x).shape == (4, 2, 2, 64)


def test_batchnorm_train_updates_statistics_eval_does_not_depend_on_batch(small):
  model, variables, x = small
  _, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
  before = variables['batch_stats']['bn1']['mean']
  after = state['batch_stats']['bn1']['mean']
  assert not np.allclose(before, after)
  # Running mean after one step: 0.9 * 0 + 0.1 * batch mean.
  conv = jax.lax.conv_general_dilated(
      x, variables['params']['conv1']['kernel'], (2, 2), ((3, 3), (3, 3)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(after, 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  # Eval: an example's features do not depend on the rest of the batch.
  full = model.apply(variables, x)
  alone = model.apply(variables, x[:1])
  np.testing.assert_allclose(full[:1], alone, rtol=1e-5, atol=1e-5)


def test_frozen_batchnorm_uses_running_statistics(small):
  _, variables, x = small
  frozen = resnet.ResNet(depth=18, width=8, freeze_bn=True)
  out, state = frozen.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(out, frozen.apply(variables, x), rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, state['batch_stats'], variables['batch_stats'])


def test_bfloat16_compute_float32_params(small):
  _, variables, x = small
  model = resnet.ResNet(depth=18, width=8, dtype=jnp.bfloat16)
  params = model.init(jax.random.key(1), x)['params']
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  out = model.apply(variables, x)
  assert out.dtype == jnp.bfloat16
  ref = resnet.ResNet(depth=18, width=8).apply(variables, x)
  np.testing.assert_allclose(out.astype(jnp.float32), ref, rtol=0.1, atol=0.1)


def test_remat_same_values_and_gradients(small):
  _, variables, x = small
  def loss(model, params):
    out, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                         train=True, mutable=['batch_stats'])
    return jnp.mean(out ** 2)
  plain = jax.value_and_grad(functools.partial(loss, resnet.ResNet(depth=18, width=8)))
  remat = jax.value_and_grad(functools.partial(loss, resnet.ResNet(depth=18, width=8,
                                                                   remat=True)))
  (v1, g1), (v2, g2) = plain(variables['params']), remat(variables['params'])
  np.testing.assert_allclose(v1, v2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)


def test_symmetric_padding_keeps_mirror_symmetry():
  # On odd sizes (65 -> 33 -> 17 -> 9 -> 5 -> 3) every stride-2 grid is centred, so with
  # left-right symmetric kernels and input, symmetric padding keeps the output symmetric.
  model = resnet.ResNet(depth=18, width=8)
  x = jax.random.normal(jax.random.key(3), (1, 65, 65, 3))
  x = x + x[:, :, ::-1]
  variables = model.init(jax.random.key(4), x)
  sym = lambda k: (k + k[:, ::-1]) / 2 if k.ndim == 4 else k
  variables = {'params': jax.tree.map(sym, variables['params']),
               'batch_stats': variables['batch_stats']}
  out = model.apply(variables, x)
  assert out.shape == (1, 3, 3, 64)
  np.testing.assert_allclose(out, out[:, :, ::-1], rtol=1e-4, atol=1e-5)


def test_stride_two_stem_pads_symmetrically_on_even_sizes():
  # On an even size 'SAME' would pad (2, 3) for the 7x7 stride-2 stem; PyTorch pads (3, 3).
  stem = resnet.ResNet(depth=18, width=8)
  x = jax.random.normal(jax.random.key(5), (1, 32, 32, 3))
  variables = stem.init(jax.random.key(6), x)
  kernel = variables['params']['conv1']['kernel']
  conv = lambda pad: jax.lax.conv_general_dilated(
      x, kernel, (2, 2), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  intermediates = stem.apply(variables, x, capture_intermediates=lambda m, _: m.name == 'conv1',
                             mutable=['intermediates'])[1]['intermediates']
  stem_out = intermediates['conv1']['__call__'][0]
  np.testing.assert_allclose(stem_out, conv(((3, 3), (3, 3))), rtol=1e-5, atol=1e-5)
  assert not np.allclose(stem_out, conv('SAME'), atol=1e-3)


def test_unknown_depth():
  with pytest.raises(ValueError, match='depth'):
    abstract_variables(resnet.ResNet(depth=42), size=64)


def test_tap_returns_a_stage_output_beside_the_same_features(small):
  model, variables, x = small
  tapped_model = resnet.ResNet(depth=18, width=8, tap=3)
  (features, tapped), state = tapped_model.apply(variables, x, capture_intermediates=True,
                                                 mutable=['intermediates'])
  np.testing.assert_array_equal(features, model.apply(variables, x))
  layer3 = state['intermediates']['layer3_1']['__call__'][0]  # The stage's last block.
  assert tapped.shape == (4, 4, 4, 32)
  np.testing.assert_array_equal(tapped, layer3)
