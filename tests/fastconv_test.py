"""Tests of the convolution implementations (models/fastconv.py) and the XLA set-up."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from excam_jax.runtime import xla
from excam_jax.models import fastconv
from excam_jax.models import losses
from excam_jax.models import network

FAST = ('dot1x1', 'matmul')
# (kernel, stride, dilation, padding, height): every layer kind of the ResNets, odd sizes too.
LAYERS = [(3, 1, 1, 1, 9), (3, 2, 1, 1, 9), (3, 2, 1, 1, 8), (3, 1, 2, 2, 10), (3, 1, 4, 4, 12),
          (7, 2, 1, 3, 15), (1, 2, 1, 0, 9), (1, 1, 1, 0, 7)]


def _rel(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(a))))


@pytest.mark.parametrize('impl', FAST + ('xla',))
def test_hand_computed_3x3(impl):
  # Input 1..9 on a 3x3 grid, all-ones 3x3 kernel, padding 1: each output is the sum of its
  # in-bounds neighbourhood. loss = sum(y): dW[i, j] sums the input cells that tap (i, j) meets.
  x = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
  w = jnp.ones((3, 3, 1, 1))
  y = fastconv.conv(x, w, 1, 1, 1, impl)
  np.testing.assert_allclose(y[0, :, :, 0], [[12, 21, 16], [27, 45, 33], [24, 39, 28]])
  dw = jax.grad(lambda w: fastconv.conv(x, w, 1, 1, 1, impl).sum())(w)
  # Tap (0, 0) meets x[r-1, c-1] for outputs r, c >= 1: 1 + 2 + 4 + 5 = 12; the centre tap all.
  np.testing.assert_allclose(dw[:, :, 0, 0], [[12, 21, 16], [27, 45, 33], [24, 39, 28]])
  dx = jax.grad(lambda x: fastconv.conv(x, w, 1, 1, 1, impl).sum())(x)
  # Each input cell feeds the outputs within one cell of it: 4 at corners, 6 at edges, 9 inside.
  np.testing.assert_allclose(dx[0, :, :, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


@pytest.mark.parametrize('impl', FAST)
def test_hand_computed_strided_1x1(impl):
  # 1x1 stride 2 keeps the even cells: weights 2 (channel 0) and 3 (channel 1) summed.
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  w = jnp.array([[[[2.0, 3.0]]]])
  y = fastconv.conv(x, w, 2, 1, 0, impl)
  np.testing.assert_allclose(y[0, :, :, 0], [[0, 4], [16, 20]])
  np.testing.assert_allclose(y[0, :, :, 1], [[0, 6], [24, 30]])
  dx = jax.grad(lambda x: fastconv.conv(x, w, 2, 1, 0, impl).sum())(x)
  expected = np.zeros((4, 4))
  expected[::2, ::2] = 5.0
  np.testing.assert_allclose(dx[0, :, :, 0], expected)


@pytest.mark.parametrize('impl', FAST)
@pytest.mark.parametrize('kernel,stride,dilation,padding,height', LAYERS)
def test_matches_xla(impl, kernel, stride, dilation, padding, height):
  rng = np.random.default_rng(kernel * 100 + stride * 10 + dilation + height)
  x = jnp.asarray(rng.normal(size=(2, height, height + 1, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 5, 6)), jnp.float32)

  def run(which):
    loss = lambda x, w: jnp.sum(jnp.sin(fastconv.conv(x, w, stride, dilation, padding, which)))
    return fastconv.conv(x, w, stride, dilation, padding, which), jax.grad(loss, (0, 1))(x, w)

  (y_ref, (dx_ref, dw_ref)), (y, (dx, dw)) = run('xla'), run(impl)
  assert y.shape == y_ref.shape
  assert _rel(y_ref, y) < 1e-5
  assert _rel(dx_ref, dx) < 1e-5
  assert _rel(dw_ref, dw) < 1e-5


def test_bfloat16_gradients_accumulate_in_float32():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 16, 16, 8)), jnp.bfloat16)
  w = jnp.asarray(rng.normal(size=(3, 3, 8, 8)), jnp.bfloat16)
  loss = lambda w, x, impl: jnp.sum(fastconv.conv(x, w, 2, 1, 1, impl).astype(jnp.float32) ** 2)
  # The same bfloat16 values in float32 arithmetic.
  reference = jax.grad(loss)(w.astype(jnp.float32), x.astype(jnp.float32), 'xla')
  got = jax.grad(loss)(w, x, 'matmul')
  assert got.dtype == jnp.bfloat16
  assert _rel(reference, got.astype(jnp.float32)) < 2e-2


def test_same_parameters_as_flax_conv():
  x = jnp.ones((1, 6, 6, 3))
  ours = fastconv.Conv(4, 3, stride=2, padding=1, use_bias=True, impl='matmul')
  theirs = nn.Conv(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  a, b = ours.init(jax.random.PRNGKey(3), x), theirs.init(jax.random.PRNGKey(3), x)
  assert jax.tree.map(np.shape, a) == jax.tree.map(np.shape, b)
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(leaf_a, leaf_b)
  np.testing.assert_allclose(ours.apply(a, x), theirs.apply(b, x), rtol=1e-6)


def test_resolve_impl():
  assert fastconv.resolve_impl('auto') == ('dot1x1' if jax.default_backend() == 'cpu' else 'xla')
  assert fastconv.resolve_impl('matmul') == 'matmul'
  with pytest.raises(ValueError, match='conv implementation'):
    fastconv.resolve_impl('fast')


@pytest.mark.parametrize('depth,tolerance', [(18, 1e-5)])
def test_fast_and_plain_networks_agree(depth, tolerance):
  """Loss and a sample of gradients of a small ResNet + WILDCAT head, fast paths against XLA's.

  float32 round-off grows with depth (at depth 50 the stem's gradients differ by 3e-5): the
  bottleneck nets are checked in float64 below, where round-off does not hide a wrong formula.
  """
  config = synthetic.get_config()
  config.model.update(depth=depth, width=4, head='wildcat')
  rng = np.random.default_rng(depth)
  images = jnp.asarray(rng.normal(size=(4, 48, 48, 3)), jnp.float32)
  labels = jnp.asarray(rng.random((4, 6)) < 0.3, jnp.float32)
  results = {}
  for impl in ('xla', 'dot1x1'):  # The CPU default against XLA's; 'matmul': float64 test.
    config.model.conv_impl = impl
    model = network.create_model(config.model, 6)
    variables = model.init(jax.random.PRNGKey(0), images[:1])

    def loss_fn(params, model=model, stats=variables['batch_stats']):
      (logits, _), _ = model.apply({'params': params, 'batch_stats': stats}, images, train=True,
                                   mutable=['batch_stats'])
      return losses.bce_loss(logits, labels, jnp.ones(4))

    results[impl] = jax.value_and_grad(loss_fn)(variables['params'])
  loss_ref, grads_ref = results['xla']
  sample = ['trunk/conv1/kernel', 'trunk/layer2_0/conv1/kernel', 'trunk/layer2_0/downsample_conv/kernel',
            'trunk/layer4_1/conv2/kernel', 'head/classifier/kernel', 'head/classifier/bias']
  flat_ref = {'/'.join(k.key for k in path): v
              for path, v in jax.tree_util.tree_flatten_with_path(grads_ref)[0]}
  for impl in ('dot1x1',):
    loss, grads = results[impl]
    assert abs(float(loss - loss_ref)) <= 1e-5 * abs(float(loss_ref))
    flat = {'/'.join(k.key for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(grads)[0]}
    assert flat.keys() == flat_ref.keys()
    for name in sample:
      assert _rel(flat_ref[name], flat[name]) < tolerance, (impl, name)


def test_fast_paths_equal_xla_in_float64():
  """In float64 the matmul path gives XLA's loss and gradients to 1e-10 (bottleneck blocks)."""
  code = '''
import functools, flax.linen as nn, jax, jax.numpy as jnp, numpy as np
jax.config.update('jax_enable_x64', True)
from excam_jax.models import resnet
images = np.random.default_rng(0).normal(size=(2, 17, 17, 6))
out = {}
for impl in ('xla', 'matmul'):  # 'matmul' holds the 1x1 path of 'dot1x1' too.
  block = functools.partial(resnet.Bottleneck, features=3, use_running_average=False,
                            dtype=jnp.float64, conv_impl=impl)
  model = nn.Sequential([block(stride=2, downsample=True), block(dilation=2, first_dilation=2)])
  v = jax.tree.map(lambda a: a.astype(np.float64), model.init(jax.random.PRNGKey(0), images))
  def f(p):
    y = model.apply({'params': p, 'batch_stats': v['batch_stats']}, images,
                    mutable=['batch_stats'])[0]
    return jnp.sum(jnp.sin(y))
  out[impl] = jax.value_and_grad(f)(v['params'])
loss = abs(float(out['matmul'][0] - out['xla'][0])) / abs(float(out['xla'][0]))
grad = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in
           zip(jax.tree.leaves(out['xla'][1]), jax.tree.leaves(out['matmul'][1])))
print(len(jax.tree.leaves(out['xla'][1])), loss, grad)
'''
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, timeout=300)
  tensors, loss, grad = out.stdout.split()
  assert int(tensors) == 21  # 2 blocks x (3 convs + 3 BNs x 2), + the downsample conv and BN.
  assert float(loss) < 1e-10 and float(grad) < 1e-10


def test_default_flags_only_where_they_help():
  assert xla.default_cpu_flags({'avx2', 'fma'}) == [xla.YNN_FLAG]
  assert xla.default_cpu_flags({'avx2', 'avx512f'}) == []
  assert xla.default_cpu_flags(set()) == []


def test_apply_default_flags_respects_the_user(monkeypatch):
  monkeypatch.setattr(xla, '_backends_started', lambda: False)
  env = {'XLA_FLAGS': '--xla_cpu_enable_fast_math=false'}
  assert xla.apply_default_flags(env, {'avx2'}) == [xla.YNN_FLAG]
  assert env['XLA_FLAGS'] == f'--xla_cpu_enable_fast_math=false {xla.YNN_FLAG}'
  assert xla.apply_default_flags(env, {'avx2'}) == []  # Already there: not repeated.
  mine = {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=+individual_convolution'}
  assert xla.apply_default_flags(mine, {'avx2'}) == []
  assert mine['XLA_FLAGS'] == '--xla_cpu_experimental_ynn_fusion_type=+individual_convolution'
  off = {'EXCAM_XLA_DEFAULTS': '0'}
  assert xla.apply_default_flags(off, {'avx2'}) == [] and 'XLA_FLAGS' not in off
  monkeypatch.setattr(xla, '_backends_started', lambda: True)  # Too late: XLA has read it.
  late = {}
  assert xla.apply_default_flags(late, {'avx2'}) == [] and 'XLA_FLAGS' not in late


def test_cache_dir_precedence(tmp_path):
  assert xla.cache_dir({'EXCAM_CACHE_DIR': str(tmp_path)}) == str(tmp_path)
  assert xla.cache_dir({'EXCAM_CACHE_DIR': 'off'}) is None
  assert xla.cache_dir({'XDG_CACHE_HOME': str(tmp_path)}) == str(
      tmp_path / 'excam_jax' / 'xla')
  assert xla.cache_dir({}).endswith(os.path.join('.cache', 'excam_jax', 'xla'))


def test_compilation_cache_is_used_and_an_unwritable_one_is_skipped(tmp_path):
  code = '''
import os, sys, jax, jax.numpy as jnp
from excam_jax.runtime import xla
print(xla.enable_compilation_cache({'EXCAM_CACHE_DIR': '/dev/null/cache'}))
folder = xla.enable_compilation_cache({'EXCAM_CACHE_DIR': sys.argv[1]})
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
print(folder, jax.config.jax_compilation_cache_dir, len(os.listdir(folder)) > 0)
'''
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  out = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'cache')], env=env,
                       capture_output=True, text=True, check=True, timeout=120)
  lines = out.stdout.split('\n')
  assert lines[0] == 'None'
  assert lines[1] == f'{tmp_path / "cache"} {tmp_path / "cache"} True'


def test_importing_the_package_configures_nothing():
  code = ('import os\nimport excam_jax, excam_jax.train, excam_jax.inference\n'
          'import jax\nprint(os.environ.get("XLA_FLAGS"), jax.config.jax_compilation_cache_dir)')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_COMPILATION_CACHE_DIR')}
  out = subprocess.run([sys.executable, '-c', code], env=dict(env, JAX_PLATFORMS='cpu'),
                       capture_output=True, text=True, check=True, timeout=120)
  assert out.stdout.split() == ['None', 'None']


def test_configure_is_the_flags_then_the_cache(monkeypatch):
  monkeypatch.setattr(xla, '_backends_started', lambda: False)
  env = {'EXCAM_CACHE_DIR': 'off'}
  assert xla.configure(env) == (xla.default_cpu_flags(), None)
  assert env.get('XLA_FLAGS', '') == ' '.join(xla.default_cpu_flags())


def test_configure_sets_the_cache_without_importing_jax(tmp_path):
  code = ('import sys\nfrom excam_jax.runtime import xla\nprint(xla.configure()[1])\n'
          'print("jax" in sys.modules)\nimport jax\nprint(jax.config.jax_compilation_cache_dir)')
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  out = subprocess.run([sys.executable, '-c', code],
                       env=dict(env, JAX_PLATFORMS='cpu', EXCAM_CACHE_DIR=str(tmp_path)),
                       capture_output=True, text=True, check=True, timeout=120)
  assert out.stdout.split() == [str(tmp_path), 'False', str(tmp_path)]
