"""WILDCAT pooling on literal maps with hand-worked answers, gradients and the head."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

from excam_jax.models import wildcat

# A 3x3 map with values 1..9 and a 4x4 map with values -8..7 (shuffled), as (1, h, w, 1).
MAP3 = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
MAP4 = jnp.array([3., -8., 7., 0., -1., 5., -5., 2., -3., 6., -7., -2., 1., -6., 4., -4.]
                 ).reshape(1, 4, 4, 1)


@pytest.mark.parametrize('k, n, expected', [
    (0.2, 49, 10), (0.2, 196, 39), (0.2, 9, 2), (0.01, 16, 1), (1, 49, 1), (1.0, 49, 1),
    (3, 9, 3), (20, 9, 9), (0, 9, 0), (-1, 9, 0), (0.5, 16, 8)])
def test_resolve_k(k, n, expected):
  assert wildcat.resolve_k(k, n) == expected


@pytest.mark.parametrize('maps, kmax, kmin, alpha, expected', [
    (MAP3, 0.2, 0.2, 0.6, (8.5 + 0.6 * 1.5) / 2),   # 2 top cells (9, 8), 2 bottom (1, 2).
    (MAP3, 1, 1, 0.6, (9 + 0.6 * 1) / 2),            # Counts: max and min.
    (MAP3, 3, 0, 0.6, 8.0),                          # kmin = 0: top-3 mean only, no /2.
    (MAP3, 0.2, 0.2, 0.0, 8.5),                      # alpha = 0: top mean only, no /2.
    (MAP3, 20, 20, 1.0, 5.0),                        # k larger than n: every cell.
    (MAP3, 0.2, None, 0.6, (8.5 + 0.6 * 1.5) / 2),   # kmin=None means kmin=kmax.
    (MAP4, 0.2, 0.5, 0.7, (6.0 + 0.7 * -4.5) / 2),   # top 3 of 16: 7, 6, 5; bottom 8: -8..-1.
    (MAP4, 0.01, 0, 0.6, 7.0),                       # a tiny fraction still takes one cell.
    (MAP4, 1, 2, 1.0, (7.0 + -7.5) / 2),
])
def test_wildcat_pool_literal(maps, kmax, kmin, alpha, expected):
  out = wildcat.wildcat_pool(maps, kmax=kmax, kmin=kmin, alpha=alpha)
  assert out.shape == (1, 1)
  np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def test_wildcat_pool_per_class_and_batch():
  maps = jnp.concatenate([MAP3, -MAP3, MAP3 * 2], axis=-1)  # (1, 3, 3, 3)
  maps = jnp.concatenate([maps, maps + 1], axis=0)  # (2, 3, 3, 3)
  out = wildcat.wildcat_pool(maps, kmax=1, kmin=1, alpha=1.0)
  # Per class: (max + min) / 2. Class 0: 5; class 1: (-1 + -9) / 2 = -5; class 2: 10.
  np.testing.assert_allclose(out, [[5, -5, 10], [6, -4, 11]], rtol=1e-6)


def test_wildcat_pool_gradient_by_hand():
  grad = jax.grad(lambda m: wildcat.wildcat_pool(m, 0.2, 0.2, 0.6).sum())(MAP3)
  expected = np.zeros(9)
  expected[[7, 8]] = 0.5 / 2       # 1/kmax, halved.
  expected[[0, 1]] = 0.6 / 2 / 2   # alpha/kmin, halved.
  np.testing.assert_allclose(grad.reshape(9), expected, rtol=1e-6)


@pytest.mark.parametrize('kmax, kmin, alpha', [(0.2, 0.2, 0.6), (3, 0, 0.6), (1, 5, 0.7)])
def test_wildcat_pool_check_grads(kmax, kmin, alpha):
  # Distinct values keep top-k away from ties, where it is not differentiable.
  maps = jax.random.permutation(jax.random.key(0), jnp.linspace(-2., 2., 2 * 5 * 5 * 3))
  maps = maps.reshape(2, 5, 5, 3)
  check_grads(lambda m: wildcat.wildcat_pool(m, kmax, kmin, alpha), (maps,), order=2,
              modes=('fwd', 'rev'), eps=1e-3)


def test_wildcat_pool_rejects_empty_kmax():
  with pytest.raises(ValueError, match='kmax'):
    wildcat.wildcat_pool(MAP3, kmax=0)


def test_class_wise_pool_channel_order():
  # Channel c*M + m is map m of class c: classes are contiguous blocks of M channels.
  maps = jnp.array([1., 2., 3., 10., 20., 30.]).reshape(1, 1, 1, 6)
  np.testing.assert_allclose(wildcat.class_wise_pool(maps, 3)[0, 0, 0], [2., 20.])
  np.testing.assert_allclose(wildcat.class_wise_pool(maps, 2)[0, 0, 0], [1.5, 6.5, 25.])
  with pytest.raises(ValueError):
    wildcat.class_wise_pool(maps, 4)


def test_class_wise_pool_max_by_hand():
  # Two cells, C = 2, M = 3; the max of each class's block of 3 channels, negatives included.
  maps = jnp.array([[1., 5., -2., -4., -1., -3.],
                    [7., 0., 7.5, 2., 2.5, -9.]]).reshape(1, 1, 2, 6)
  got = wildcat.class_wise_pool(maps, 3, 'max')
  np.testing.assert_array_equal(got[0, 0], [[5., -1.], [7.5, 2.5]])
  np.testing.assert_allclose(wildcat.class_wise_pool(maps, 3)[0, 0],
                             [[4 / 3, -8 / 3], [14.5 / 3, -4.5 / 3]], rtol=1e-6)  # Default: mean.
  with pytest.raises(ValueError, match="'mean' or 'max'.*'median'"):
    wildcat.class_wise_pool(maps, 3, 'median')


def test_class_wise_max_gradient_flows_to_the_argmax_map_only():
  # One cell, C = 2, M = 3: class 0's largest map is m = 1, class 1's is m = 0.
  maps = jnp.array([1., 5., -2., -1., -4., -3.]).reshape(1, 1, 1, 6)
  weights = jnp.array([2., 3.])  # Class c's map counts w_c times.
  grad = jax.grad(lambda x: (wildcat.class_wise_pool(x, 3, 'max') * weights).sum())(maps)
  np.testing.assert_array_equal(grad.ravel(), [0., 2., 0., 3., 0., 0.])
  mean_grad = jax.grad(lambda x: (wildcat.class_wise_pool(x, 3) * weights).sum())(maps)
  np.testing.assert_allclose(mean_grad.ravel(), [2 / 3] * 3 + [1.] * 3, rtol=1e-6)


def test_head_with_class_wise_max_literal():
  # Two cells with feature 1 and -1; kernel (2, -1), bias (0, 0.5); C = 1, M = 2: the maps are
  # F = (2, -0.5) in cell 0 and (-2, 1.5) in cell 1, so z = max = (2, 1.5) (the mean: 0.75, -0.25).
  head = wildcat.WildcatHead(num_classes=1, num_maps=2, kmax=1, kmin=1, alpha=1.0,
                             class_pooling='max')
  features = jnp.array([1., -1.]).reshape(1, 1, 2, 1)
  params = {'classifier': {'kernel': jnp.array([2., -1.]).reshape(1, 1, 1, 2),
                           'bias': jnp.array([0., 0.5])}}
  logits, aux = head.apply({'params': params}, features)
  np.testing.assert_array_equal(aux['class_maps'].ravel(), [2., 1.5])
  np.testing.assert_array_equal(logits, [[(2. + 1.5) / 2]])  # (max + min) / 2 of z.
  # The score's gradient reaches each cell's larger map only: the kernel's gradient is the sum
  # over cells of feature * dz/dF, with dlogit/dz = 1/2 per cell (top-1 and bottom-1, halved).
  grad = jax.grad(lambda p: head.apply({'params': p}, features)[0].sum())(params)['classifier']
  np.testing.assert_array_equal(grad['kernel'].ravel(), [0.5 * 1, 0.5 * -1])
  np.testing.assert_array_equal(grad['bias'], [0.5, 0.5])


def test_head_with_global_average_pooling_literal():
  # Three cells with feature 1, -1 and 2; kernel (2, -1), bias (0, 0.5); C = 1, M = 2: the maps
  # are F = (2, -0.5), (-2, 1.5), (4, -1.5), class-wise mean z = (0.75, -0.25, 1.25); 'gap'
  # scores their mean (0.75 - 0.25 + 1.25) / 3 = 7 / 12 whatever kmax, kmin and alpha say.
  head = wildcat.WildcatHead(num_classes=1, num_maps=2, kmax=1, kmin=1, alpha=1.0,
                             spatial_pooling='gap')
  features = jnp.array([1., -1., 2.]).reshape(1, 1, 3, 1)
  params = {'classifier': {'kernel': jnp.array([2., -1.]).reshape(1, 1, 1, 2),
                           'bias': jnp.array([0., 0.5])}}
  logits, aux = head.apply({'params': params}, features)
  np.testing.assert_allclose(aux['class_maps'].ravel(), [0.75, -0.25, 1.25])
  np.testing.assert_allclose(logits, [[7. / 12.]], rtol=1e-6)
  # d score / d kernel_m = mean over cells of feature / M = (1 - 1 + 2) / 3 / 2 for both maps.
  grad = jax.grad(lambda p: head.apply({'params': p}, features)[0].sum())(params)['classifier']
  np.testing.assert_allclose(grad['kernel'].ravel(), [1. / 3., 1. / 3.], rtol=1e-6)
  wildcat_score = wildcat.WildcatHead(num_classes=1, num_maps=2, kmax=1, kmin=1, alpha=1.0)
  np.testing.assert_allclose(wildcat_score.apply({'params': params}, features)[0],
                             [[(1.25 - 0.25) / 2]], rtol=1e-6)  # Not the mean: top and bottom.


def test_head_matches_pooling_functions():
  head = wildcat.WildcatHead(num_classes=3, num_maps=2, kmax=2, kmin=1, alpha=0.7)
  features = jax.random.normal(jax.random.key(1), (2, 4, 4, 5))
  variables = head.init(jax.random.key(2), features)
  logits, aux = head.apply(variables, features)
  p = variables['params']['classifier']
  raw = jnp.einsum('bhwk,kc->bhwc', features, p['kernel'][0, 0]) + p['bias']
  class_maps = wildcat.class_wise_pool(raw, 2)
  np.testing.assert_allclose(aux['class_maps'], class_maps, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logits, wildcat.wildcat_pool(class_maps, 2, 1, 0.7), rtol=1e-5)
  assert aux['maps'].shape == (2, 4, 4, 3, 2)
  np.testing.assert_array_equal(aux['dropped_maps'], aux['maps'])  # No transform: WILDCAT.
  assert set(aux) == {'class_maps', 'maps', 'dropped_maps'}


class ScaleFirstMap(nn.Module):
  """A fake transform of fixed arithmetic: map 0 of each class times 3 in training, 2 at eval."""

  @nn.compact
  def __call__(self, maps, train=False):
    return maps.at[..., 0].multiply(3.0 if train else 2.0)


@pytest.mark.parametrize('train, factor', [(False, 2.0), (True, 3.0)])
def test_head_applies_transform_between_maps_and_class_mean(train, factor):
  # One cell, C = 1, M = 2, features (1, 2): the conv gives F = (1*1 + 2*0 + 0.5, 1*1 + 2*1 - 1).
  head = wildcat.WildcatHead(num_classes=1, num_maps=2, kmax=1, kmin=0,
                             transform=ScaleFirstMap())
  features = jnp.array([1., 2.]).reshape(1, 1, 1, 2)
  params = {'classifier': {'kernel': jnp.array([[1., 1.], [0., 1.]]).reshape(1, 1, 2, 2),
                           'bias': jnp.array([0.5, -1.0])}}
  logits, aux = head.apply({'params': params}, features, train=train)
  np.testing.assert_array_equal(aux['maps'].ravel(), [1.5, 2.0])
  np.testing.assert_array_equal(aux['dropped_maps'].ravel(), [1.5 * factor, 2.0])
  class_map = (1.5 * factor + 2.0) / 2
  np.testing.assert_array_equal(aux['class_maps'].ravel(), [class_map])
  np.testing.assert_array_equal(logits, [[class_map]])  # One cell: its top-1 mean.


def test_head_keeps_transform_parameters_beside_the_conv():
  # The transform shares the head's scope: no 'transform' level in the parameter tree.
  class Offset(nn.Module):
    @nn.compact
    def __call__(self, maps, train=False):
      return maps + self.param('offset', nn.initializers.constant(0.25), ())

  head = wildcat.WildcatHead(num_classes=2, num_maps=3, transform=Offset())
  features = jnp.ones((1, 2, 2, 4))
  params = head.init(jax.random.key(0), features)['params']
  assert set(params) == {'classifier', 'offset'}
  _, aux = head.apply({'params': params}, features)
  np.testing.assert_array_equal(aux['dropped_maps'], aux['maps'] + 0.25)


OLD_UNION_FIELDS = ('method', 'drop_threshold', 'self_drop', 'straight_through', 'temperature',
                    'learn_threshold', 'adl_gamma', 'adl_drop_rate')


def test_head_has_no_method_fields():
  # A method's knobs live on its transform module, not on the head behind a string switch.
  fields = {f.name for f in dataclasses.fields(wildcat.WildcatHead)} - {'parent', 'name'}
  assert fields == {'num_classes', 'num_maps', 'kmax', 'kmin', 'alpha', 'class_pooling',
                    'spatial_pooling', 'transform', 'conv_impl', 'generator'}
  for name in OLD_UNION_FIELDS + ('threshold',):
    assert not hasattr(wildcat.WildcatHead, name), name


def test_generator_maps_localize_and_leave_the_classifier_unchanged():
  features = jax.random.normal(jax.random.key(0), (2, 3, 3, 4))
  plain = wildcat.WildcatHead(num_classes=3, num_maps=2, kmax=0.3, alpha=0.0)
  head = wildcat.WildcatHead(num_classes=3, num_maps=2, kmax=0.3, alpha=0.0, generator=True)
  params = head.init(jax.random.key(1), features)['params']
  assert params['generator']['kernel'].shape == (1, 1, 4, 3)
  logits, aux = head.apply({'params': params}, features)
  plain_logits, plain_aux = plain.apply({'params': {'classifier': params['classifier']}},
                                        features)
  np.testing.assert_allclose(logits, plain_logits, rtol=1e-6)
  np.testing.assert_allclose(aux['activation_maps'], plain_aux['class_maps'], rtol=1e-6)
  kernel, bias = params['generator']['kernel'][0, 0], params['generator']['bias']
  want = np.einsum('bhwk,kc->bhwc', np.asarray(features), np.asarray(kernel)) + np.asarray(bias)
  np.testing.assert_allclose(aux['class_maps'], want, rtol=1e-5, atol=1e-6)
