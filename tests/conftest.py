"""Shared test fixtures."""

from excam_jax.runtime import xla

xla.configure()  # As the commands do: the measured CPU flags and the compilation cache.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from excam_jax.training import checkpoints
from excam_jax.models import network


def random_variables(model, size):
  """He-initialised variables in numpy: op-by-op model.init is slow on a busy CPU."""
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                          jnp.zeros((1, size, size, 3)))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name in ('scale', 'var'):
      return np.ones(leaf.shape, leaf.dtype)
    if name in ('bias', 'mean'):
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
    return (rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(name='write_tiny_checkpoint', scope='session')
def fixture_write_tiny_checkpoint():
  """Returns f(path, step): writes an untrained tiny model's checkpoint and config in path."""
  def write(path, step):
    config = tiny.get_config()
    model = network.create_model(config.model, config.data.parts.num_classes)
    variables = random_variables(model, config.data.image_size)
    ckpt = checkpoints.Checkpoints(str(path), async_save=False)
    ckpt.save(step, {'params': variables['params'], 'batch_stats': variables['batch_stats']},
              config)
    ckpt.close()
    return config
  return write
