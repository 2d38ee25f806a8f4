"""The fused BatchNorm (models/batchnorm.py) against hand values and against Flax's BatchNorm."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import voc12
from excam_jax import config_schema
from excam_jax.errors import ConfigError
from excam_jax.models import batchnorm
from excam_jax.models import resnet

EPS = 1e-5


@pytest.fixture
def x64():
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', False)


def test_forward_and_running_averages_by_hand():
  # One channel, cells 1, 3, 5, 7: mean 4, var (9 + 1 + 1 + 9) / 4 = 5.
  x = jnp.array([1.0, 3.0, 5.0, 7.0]).reshape(2, 2, 1)
  module = batchnorm.FusedBatchNorm(use_running_average=False, momentum=0.9, epsilon=EPS)
  variables = module.init(jax.random.PRNGKey(0), x)
  params = {'scale': jnp.array([2.0]), 'bias': jnp.array([0.5])}
  y, updated = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                            mutable=['batch_stats'])
  expected = 2.0 * (np.array([1.0, 3.0, 5.0, 7.0]) - 4.0) / np.sqrt(5.0 + EPS) + 0.5
  np.testing.assert_allclose(np.asarray(y).ravel(), expected, rtol=1e-6)
  # Flax's rule: running = 0.9 running + 0.1 batch, from mean 0 and var 1.
  np.testing.assert_allclose(updated['batch_stats']['mean'], [0.4], rtol=1e-6)
  np.testing.assert_allclose(updated['batch_stats']['var'], [0.9 + 0.5], rtol=1e-6)
  # Evaluation uses the running statistics.
  frozen = batchnorm.FusedBatchNorm(use_running_average=True, epsilon=EPS)
  y_eval = frozen.apply({'params': params, 'batch_stats': updated['batch_stats']}, x)
  np.testing.assert_allclose(np.asarray(y_eval).ravel(),
                             2.0 * (np.array([1.0, 3.0, 5.0, 7.0]) - 0.4) / np.sqrt(1.4 + EPS)
                             + 0.5, rtol=1e-6)


def _loss_and_grads(impl, x):
  module = batchnorm.norm(impl, use_running_average=False, momentum=0.9, epsilon=EPS,
                          dtype=x.dtype)
  stats = module.init(jax.random.PRNGKey(0), x)['batch_stats']
  params = {'scale': jnp.array([1.5, -0.5, 2.0]), 'bias': jnp.array([0.1, 0.2, -0.3])}
  weights = jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) / x.size

  def loss(params, x):
    y, updated = module.apply({'params': params, 'batch_stats': stats}, x,
                              mutable=['batch_stats'])
    return jnp.sum(jnp.sin(y) * weights), updated['batch_stats']
  (value, updated), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
  return value, updated, grads


def test_equals_flax_in_float64(x64):
  del x64
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 5, 6, 3), jnp.float64) * 3.0 + 1.0
  flax_value, flax_stats, flax_grads = _loss_and_grads('flax', x)
  value, stats, grads = _loss_and_grads('fused', x)
  assert abs(float(value - flax_value)) < 1e-12
  for got, want in zip(jax.tree.leaves((stats, grads)), jax.tree.leaves((flax_stats, flax_grads))):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_the_statistics_outputs_carry_their_own_gradients(x64):
  # A caller differentiating mean and var (not this package's loss, which uses only y) gets
  # d mean / dx = 1/n and d var / dx = 2 (x - mean) / n, as jnp's own mean and var give.
  del x64
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 2), jnp.float64)
  scale, bias = jnp.array([1.2, 0.7]), jnp.array([0.0, 1.0])

  def fused(x):
    y, mean, var = batchnorm.batch_norm(x, scale, bias, EPS)
    return jnp.sum(y ** 3) + jnp.sum(mean * jnp.array([2.0, -1.0])) + jnp.sum(var ** 2)

  def reference(x):
    mean, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
    y = (x - mean) / jnp.sqrt(var + EPS) * scale + bias
    return jnp.sum(y ** 3) + jnp.sum(mean * jnp.array([2.0, -1.0])) + jnp.sum(var ** 2)
  np.testing.assert_allclose(jax.grad(fused)(x), jax.grad(reference)(x), rtol=1e-10, atol=1e-12)


def test_a_block_with_either_norm_has_one_set_of_variables_and_one_function():
  # A residual block with a downsample holds three BatchNorms; float32 as the package trains.
  images = jax.random.normal(jax.random.PRNGKey(3), (4, 12, 12, 8))
  blocks = {impl: resnet.BasicBlock(features=8, stride=2, downsample=True, dtype=jnp.float32,
                                    use_running_average=False, norm_impl=impl)
            for impl in batchnorm.IMPLS}
  variables = blocks['flax'].init(jax.random.PRNGKey(4), images)
  assert jax.tree.structure(variables) == jax.tree.structure(
      blocks['fused'].init(jax.random.PRNGKey(4), images))

  def loss(block, params, images):
    out, updated = block.apply({'params': params, 'batch_stats': variables['batch_stats']},
                               images, mutable=['batch_stats'])
    return jnp.mean(jnp.sin(out)), updated
  results = {impl: jax.jit(jax.value_and_grad(
      lambda p, x, block=block: loss(block, p, x), argnums=(0, 1), has_aux=True))(
          variables['params'], images) for impl, block in blocks.items()}
  for got, want in zip(jax.tree.leaves(results['fused']), jax.tree.leaves(results['flax'])):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_the_resnet_passes_norm_impl_to_every_batchnorm():
  images = jnp.zeros((1, 32, 32, 3))
  net = resnet.ResNet(depth=18, width=4, output_stride=8, norm_impl='fused')
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), images, train=True))
  jaxpr = str(jax.make_jaxpr(lambda v: net.apply(v, images, train=True,
                                                 mutable=['batch_stats']))(variables))
  # ResNet-18: the stem's bn1, two per block (8 blocks), three downsample BNs.
  assert jaxpr.count('custom_vjp_call') == 1 + 16 + 3


def test_norm_impl_is_checked():
  assert config_schema.NORM_IMPLS == batchnorm.IMPLS
  config = voc12.get_config()
  config_schema.validate(config)
  config.model.norm_impl = 'fast'
  with pytest.raises(ConfigError, match='model.norm_impl'):
    config_schema.validate(config)
  assert isinstance(batchnorm.norm('flax'), nn.BatchNorm)
  assert isinstance(batchnorm.norm('fused'), batchnorm.FusedBatchNorm)
