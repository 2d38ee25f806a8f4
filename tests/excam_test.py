"""ex-CAM sequential dropout against a direct numpy formula, straight-through gradients, scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from excam_jax.models import excam
from excam_jax.models import wildcat


def reference(f, t, self_drop):
  """The thesis's formula written directly: F'_1 = (1-D_1)F_1; F'_j = prod_{i<=j or i<j} D_i F_j."""
  f = np.asarray(f, np.float64)
  d = (f <= t).astype(np.float64)
  out = np.empty_like(f)
  out[..., 0] = (1 - d[..., 0]) * f[..., 0]
  for j in range(1, f.shape[-1]):
    last = j + 1 if self_drop else j
    out[..., j] = np.prod(d[..., :last], axis=-1) * f[..., j]
  return out


def random_maps(m, seed=0, shape=(2, 3, 4, 5)):
  return jax.random.normal(jax.random.key(seed), shape + (m,))


@pytest.mark.parametrize('m', [1, 2, 3, 8])
@pytest.mark.parametrize('self_drop', [True, False])
@pytest.mark.parametrize('straight_through', [True, False])
def test_matches_direct_formula(m, self_drop, straight_through):
  f = random_maps(m, seed=m)
  out = excam.sequential_dropout(f, 0.0, self_drop=self_drop, straight_through=straight_through)
  np.testing.assert_allclose(out, reference(f, 0.0, self_drop), rtol=1e-6, atol=1e-7)


def test_threshold_in_logit_units_and_per_class():
  f = random_maps(3, seed=7)
  t = jnp.array([-0.5, 0.0, 0.3, 1.0, -1.2])  # One per class (C = 5).
  out = excam.sequential_dropout(f, t, self_drop=True)
  expected = np.stack([reference(f[..., c, :], float(t[c]), True) for c in range(5)], axis=-2)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_hand_worked_single_cell():
  # One cell, one class, M = 3, t = 0: F = (2, -1, 3).
  f = jnp.array([2., -1., 3.]).reshape(1, 1, 1, 1, 3)
  # D = (0, 1, 0). self_drop: F'_1 = 2, F'_2 = D1*D2*(-1) = 0, F'_3 = 0.
  np.testing.assert_allclose(excam.sequential_dropout(f, 0.0, True).ravel(), [2., 0., 0.])
  # Cell important in map 1, so every later map is dropped there too, self_drop or not.
  np.testing.assert_allclose(excam.sequential_dropout(f, 0.0, False).ravel(), [2., 0., 0.])
  # F = (-2, -1, 3): D = (1, 1, 0). self_drop: (0, -1, 0); without: (0, -1, 3).
  g = jnp.array([-2., -1., 3.]).reshape(1, 1, 1, 1, 3)
  np.testing.assert_allclose(excam.sequential_dropout(g, 0.0, True).ravel(), [0., -1., 0.])
  np.testing.assert_allclose(excam.sequential_dropout(g, 0.0, False).ravel(), [0., -1., 3.])


def test_self_drop_makes_later_maps_non_positive():
  f = random_maps(8, seed=3)
  out = excam.sequential_dropout(f, 0.0, self_drop=True)
  assert float(out[..., 1:].max()) <= 0.0
  np.testing.assert_allclose(out[..., 0], jax.nn.relu(f[..., 0]))


def test_fully_dropped_first_map_zeroes_later_maps():
  f = jnp.abs(random_maps(4, seed=5)) + 0.1  # Every cell important in every map.
  for self_drop in (True, False):
    out = excam.sequential_dropout(f, 0.0, self_drop=self_drop)
    np.testing.assert_array_equal(out[..., 1:], 0.0)


def _masked(f, d, self_drop):
  """The formula with the masks as explicit inputs, for the chain rule by hand."""
  outs = [(1 - d[..., 0]) * f[..., 0]]
  for j in range(1, f.shape[-1]):
    last = j + 1 if self_drop else j
    outs.append(jnp.prod(d[..., :last], axis=-1) * f[..., j])
  return jnp.stack(outs, axis=-1)


@pytest.mark.parametrize('self_drop', [True, False])
@pytest.mark.parametrize('temperature', [1.0, 0.5])
def test_straight_through_gradient_is_sigmoid_surrogate(self_drop, temperature):
  f = random_maps(4, seed=11)
  t = 0.2
  w = random_maps(4, seed=12)  # A random cotangent.
  loss = lambda x: jnp.sum(w * excam.sequential_dropout(
      x, t, self_drop=self_drop, straight_through=True, temperature=temperature))
  got = jax.grad(loss)(f)
  hard = (f <= t).astype(f.dtype)
  # Chain rule: dL/dF = dg/dF|_D=hard + dg/dD|_D=hard * dD_soft/dF, D_soft = 1 - sigmoid((F-t)/tau).
  _, vjp = jax.vjp(lambda x, d: _masked(x, d, self_drop), f, hard)
  g_f, g_d = vjp(w)
  s = jax.nn.sigmoid((f - t) / temperature)
  expected = g_f + g_d * (-s * (1 - s) / temperature)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # The forward value is the hard one.
  np.testing.assert_allclose(excam.sequential_dropout(f, t, self_drop, True, temperature),
                             _masked(f, hard, self_drop), rtol=1e-6)


def test_hard_masks_pass_no_gradient():
  f = random_maps(3, seed=13)
  w = random_maps(3, seed=14)
  got = jax.grad(lambda x: jnp.sum(w * excam.sequential_dropout(x, 0.0, True, False)))(f)
  hard = (f <= 0).astype(f.dtype)
  expected = jax.grad(lambda x: jnp.sum(w * _masked(x, hard, True)))(f)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  grad_t = jax.grad(lambda t: jnp.sum(w * excam.sequential_dropout(f, t, True, False)))(0.0)
  assert float(grad_t) == 0.0


def test_scan_equals_unrolled_python_loop():
  f = random_maps(8, seed=21)
  for self_drop in (True, False):
    d = excam.drop_mask(f, 0.0)
    outs = [(1 - d[..., 0]) * f[..., 0]]
    product = d[..., 0]
    for j in range(1, 8):
      if self_drop:
        product = product * d[..., j]
        outs.append(product * f[..., j])
      else:
        outs.append(product * f[..., j])
        product = product * d[..., j]
    loop = jnp.stack(outs, axis=-1)
    scan = jax.jit(lambda x: excam.sequential_dropout(x, 0.0, self_drop))(f)
    np.testing.assert_array_equal(scan, loop)


def excam_head(num_classes=3, num_maps=3, **knobs):
  return wildcat.WildcatHead(num_classes=num_classes, num_maps=num_maps,
                             transform=excam.SequentialDropout(**knobs))


@pytest.mark.parametrize('learn', ['scalar', 'per_class'])
def test_learned_threshold_gets_gradient_only_through_straight_through(learn):
  features = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
  for straight_through, expect_nonzero in ((True, True), (False, False)):
    head = excam_head(learn_threshold=learn, straight_through=straight_through)
    params = head.init(jax.random.key(1), features)['params']
    np.testing.assert_allclose(params['threshold'], 0.0)  # logit(0.5)
    grads = jax.grad(lambda p: head.apply({'params': p}, features)[0].sum())(params)
    assert grads['threshold'].shape == ((3,) if learn == 'per_class' else ())
    assert bool(jnp.any(grads['threshold'] != 0)) == expect_nonzero


def test_head_threshold_from_delta():
  features = jax.random.normal(jax.random.key(0), (1, 3, 3, 4))
  head = excam_head(num_classes=2, drop_threshold=0.7)
  variables = head.init(jax.random.key(1), features)
  _, aux = head.apply(variables, features)
  t = np.log(0.7 / 0.3)
  np.testing.assert_allclose(aux['dropped_maps'], reference(aux['maps'], t, True),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux['class_maps'], aux['dropped_maps'].mean(-1), rtol=1e-6)
  assert 'class_maps_undropped' not in aux


@pytest.mark.parametrize('self_drop, dropped, logit', [
    # F per cell (map 0, map 1): (2, -0.5) and (-2, 1.5); t = 0 gives D = (0, 1) and (1, 0).
    (True, [[2., 0.], [0., 0.]], (1.0 + 0.0) / 2),      # F'_2 = D_1 D_2 F_2 = 0 in both cells.
    (False, [[2., 0.], [0., 1.5]], (1.0 + 0.75) / 2),   # F'_2 = D_1 F_2: (0, 1.5).
])
def test_head_with_sequential_dropout_literal(self_drop, dropped, logit):
  # Two cells with feature 1 and -1; conv kernel (2, -1), bias (0, 0.5); C = 1, M = 2.
  head = wildcat.WildcatHead(num_classes=1, num_maps=2, kmax=1, kmin=1, alpha=1.0,
                             transform=excam.SequentialDropout(self_drop=self_drop))
  features = jnp.array([1., -1.]).reshape(1, 1, 2, 1)
  params = {'classifier': {'kernel': jnp.array([2., -1.]).reshape(1, 1, 1, 2),
                           'bias': jnp.array([0., 0.5])}}
  logits, aux = head.apply({'params': params}, features)
  np.testing.assert_array_equal(aux['maps'].reshape(2, 2), [[2., -0.5], [-2., 1.5]])
  np.testing.assert_array_equal(aux['dropped_maps'].reshape(2, 2), dropped)
  np.testing.assert_array_equal(
      aux['dropped_maps'], excam.sequential_dropout(aux['maps'], 0.0, self_drop=self_drop))
  np.testing.assert_array_equal(aux['class_maps'].ravel(), np.mean(dropped, axis=-1))
  np.testing.assert_array_equal(logits, [[logit]])  # (max + min) / 2 of the class map.


@pytest.mark.parametrize('knobs', [
    {}, {'self_drop': False}, {'straight_through': False, 'drop_threshold': 0.3},
    {'temperature': 0.5, 'learn_threshold': 'scalar'}, {'learn_threshold': 'per_class'}])
def test_head_equals_sequential_dropout_on_the_conv_maps(knobs):
  features = jax.random.normal(jax.random.key(3), (2, 4, 4, 6))
  head = excam_head(num_classes=3, num_maps=4, **knobs)
  variables = head.init(jax.random.key(4), features)
  logits, aux = head.apply(variables, features)
  delta = knobs.get('drop_threshold', 0.5)
  t = variables['params'].get('threshold', np.log(delta / (1 - delta)))
  expected = excam.sequential_dropout(
      aux['maps'], t, self_drop=knobs.get('self_drop', True),
      straight_through=knobs.get('straight_through', True),
      temperature=knobs.get('temperature', 1.0))
  np.testing.assert_array_equal(aux['dropped_maps'], expected)
  np.testing.assert_array_equal(logits, wildcat.wildcat_pool(expected.mean(-1), 0.2, None, 0.6))


@pytest.mark.parametrize('learn, shape', [('none', None), ('scalar', ()), ('per_class', (5,))])
def test_sequential_dropout_module_threshold_parameter(learn, shape):
  maps = random_maps(3, seed=31)  # C = 5.
  module = excam.SequentialDropout(drop_threshold=0.8, learn_threshold=learn)
  variables = module.init(jax.random.key(0), maps)
  if shape is None:
    assert not variables
  else:
    assert variables['params']['threshold'].shape == shape
    np.testing.assert_allclose(variables['params']['threshold'], np.log(4.0), rtol=1e-6)
  out = module.apply(variables, maps, train=True)
  np.testing.assert_array_equal(out, module.apply(variables, maps, train=False))
  np.testing.assert_allclose(out, reference(maps, np.log(4.0), True), rtol=1e-6, atol=1e-7)


def test_sequential_dropout_module_rejects_unknown_learn_threshold():
  with pytest.raises(ValueError, match='learn_threshold'):
    excam.SequentialDropout(learn_threshold='yes').init(jax.random.key(0), random_maps(2))


@pytest.mark.parametrize('self_drop, class_map', [
    # The maps of test_head_with_sequential_dropout_literal: F'_j per cell (map 0, map 1) is
    # (2, 0), (0, 0) with self_drop and (2, 0), (0, 1.5) without; z = max_j F'_j per cell.
    (True, [2., 0.]), (False, [2., 1.5])])
def test_head_with_sequential_dropout_and_class_wise_max(self_drop, class_map):
  head = wildcat.WildcatHead(num_classes=1, num_maps=2, kmax=1, kmin=1, alpha=1.0,
                             class_pooling='max',
                             transform=excam.SequentialDropout(self_drop=self_drop))
  features = jnp.array([1., -1.]).reshape(1, 1, 2, 1)
  params = {'classifier': {'kernel': jnp.array([2., -1.]).reshape(1, 1, 1, 2),
                           'bias': jnp.array([0., 0.5])}}
  logits, aux = head.apply({'params': params}, features)
  np.testing.assert_array_equal(aux['class_maps'].ravel(), class_map)
  np.testing.assert_array_equal(logits, [[sum(class_map) / 2]])  # (max + min) / 2.


def test_two_maps_without_self_drop_are_positive_where_their_max_is():
  # Why the class-wise max is ex-CAM's control: at M = 2, delta = 0.5, self_drop=False,
  # z = (relu(F_1) + 1[F_1 <= 0] F_2) / 2 is > 0 exactly where max(F_1, F_2) > 0.
  f = random_maps(2, seed=11)
  z = excam.sequential_dropout(f, 0.0, self_drop=False).mean(-1)
  np.testing.assert_array_equal(np.asarray(z) > 0, np.asarray(f.max(-1)) > 0)
  with_self_drop = excam.sequential_dropout(f, 0.0, self_drop=True).mean(-1)
  assert np.any((np.asarray(with_self_drop) > 0) != (np.asarray(f.max(-1)) > 0))
