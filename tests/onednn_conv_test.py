"""Tests of the oneDNN convolutions (models/onednn.py, onednn_conv.cc, fastconv 'onednn').

Every test but the fallback one needs the built extension and a CPU backend and is skipped, with
the reason, where either is missing. References: hand-computed values and XLA's own convolution
(`lax.conv_general_dilated` and its autodiff gradients).
"""

import concurrent.futures
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from excam_jax.training import parallel
from excam_jax.training import optim as optim_lib
from excam_jax.training import steps as steps_lib
from excam_jax.models import fastconv
from excam_jax.models import losses
from excam_jax.models import network
from excam_jax.models import onednn
from excam_jax.models import resnet

# Builds the extension on first use (seconds; cached in ~/.cache/excam_jax/onednn).
_REASON = ('the default backend is not CPU' if jax.default_backend() != 'cpu'
           else onednn.unavailable_reason())
needs_onednn = pytest.mark.skipif(_REASON is not None,
                                  reason=f'oneDNN extension unavailable: {_REASON}')

# Every distinct convolution of ResNet-18/50/101 at output strides 32, 16 and 8:
# (kernel, in, out, stride, dilation); padding is resnet's dilation * (kernel - 1) // 2.
RESNET_CONVS = [
    (7, 3, 64, 2, 1),
    (3, 64, 64, 1, 1), (3, 64, 128, 2, 1), (3, 128, 128, 1, 1), (3, 128, 128, 2, 1),
    (3, 128, 256, 1, 1), (3, 128, 256, 2, 1), (3, 256, 256, 1, 1), (3, 256, 256, 1, 2),
    (3, 256, 256, 2, 1), (3, 256, 512, 1, 1), (3, 256, 512, 1, 2), (3, 256, 512, 2, 1),
    (3, 512, 512, 1, 1), (3, 512, 512, 1, 2), (3, 512, 512, 1, 4), (3, 512, 512, 2, 1),
    (1, 64, 64, 1, 1), (1, 64, 128, 2, 1), (1, 64, 256, 1, 1), (1, 128, 256, 1, 1),
    (1, 128, 256, 2, 1), (1, 128, 512, 1, 1), (1, 256, 64, 1, 1), (1, 256, 128, 1, 1),
    (1, 256, 512, 1, 1), (1, 256, 512, 2, 1), (1, 256, 1024, 1, 1), (1, 512, 128, 1, 1),
    (1, 512, 256, 1, 1), (1, 512, 1024, 1, 1), (1, 512, 1024, 2, 1), (1, 512, 2048, 1, 1),
    (1, 1024, 256, 1, 1), (1, 1024, 512, 1, 1), (1, 1024, 2048, 1, 1), (1, 1024, 2048, 2, 1),
    (1, 2048, 512, 1, 1)]
# (batch, height, width, in, out, kernel, stride, dilation, padding): batch 1, non-square,
# one channel, rows and columns no window reaches (stride 2 or 3 without padding), padding as
# wide as the image, dilated kernels larger than the image.
ODD_CONVS = [(1, 9, 5, 4, 3, 3, 1, 1, 1), (1, 10, 7, 3, 5, 3, 2, 1, 0),
             (2, 11, 8, 1, 1, 3, 3, 1, 0), (1, 4, 3, 6, 2, 3, 1, 4, 4),
             (3, 5, 9, 2, 7, 5, 2, 2, 4), (1, 8, 6, 5, 4, 1, 2, 1, 0), (2, 3, 3, 8, 8, 3, 1, 1, 3)]


def _rel(a, b):
  """Largest difference relative to the largest magnitude of the reference a."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def _xla_and_onednn(x, w, stride, dilation, padding, seed=0):
  """(y, dx, dw) of XLA's convolution and of `conv_onednn` for one random output gradient."""
  results = []
  for conv in (fastconv.xla_conv, fastconv.conv_onednn):
    y, vjp = jax.vjp(lambda x, w, conv=conv: conv(x, w, stride, dilation, padding), x, w)
    g = jnp.asarray(np.random.default_rng(seed).normal(size=y.shape), jnp.float32)
    results.append((y, *vjp(g)))
  return results


def _random(rng, *shape):
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


@needs_onednn
def test_hand_computed_3x3():
  # Input 1..9 on a 3x3 grid, all-ones kernel, padding 1: each output sums its in-bounds
  # neighbourhood; dW[i, j] sums the cells tap (i, j) meets; dX counts the outputs a cell feeds.
  x = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
  w = jnp.ones((3, 3, 1, 1))
  sums = [[12, 21, 16], [27, 45, 33], [24, 39, 28]]
  np.testing.assert_allclose(fastconv.conv_onednn(x, w, 1, 1, 1)[0, :, :, 0], sums)
  dw = jax.grad(lambda w: fastconv.conv_onednn(x, w, 1, 1, 1).sum())(w)
  np.testing.assert_allclose(dw[:, :, 0, 0], sums)
  dx = jax.grad(lambda x: fastconv.conv_onednn(x, w, 1, 1, 1).sum())(x)
  np.testing.assert_allclose(dx[0, :, :, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


@needs_onednn
def test_hand_computed_strided_cells_no_window_reaches():
  # 3x3 stride 2 without padding on 4x4: one output, the top-left 3x3 window; the last row and
  # column meet no tap, so their input gradient is 0 (oneDNN must write those zeros).
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  w = jnp.arange(9.0).reshape(3, 3, 1, 1)
  y = fastconv.conv_onednn(x, w, 2, 1, 0)
  assert y.shape == (1, 1, 1, 1)
  # x[r, c] = 4r + c meets w[r, c] = 3r + c: 5 (row 0) + 62 (row 1) + 191 (row 2).
  assert float(y[0, 0, 0, 0]) == 258.0
  dx = jax.grad(lambda x: fastconv.conv_onednn(x, w, 2, 1, 0).sum())(x)
  expected = np.zeros((4, 4))
  expected[:3, :3] = np.arange(9.0).reshape(3, 3)
  np.testing.assert_array_equal(dx[0, :, :, 0], expected)
  dw = jax.grad(lambda w: fastconv.conv_onednn(x, w, 2, 1, 0).sum())(w)
  np.testing.assert_array_equal(dw[:, :, 0, 0], np.asarray(x[0, :3, :3, 0]))


@needs_onednn
@pytest.mark.parametrize('kernel,cin,cout,stride,dilation', RESNET_CONVS)
def test_resnet_convolutions_match_xla(kernel, cin, cout, stride, dilation):
  rng = np.random.default_rng(kernel + cin + cout + stride + dilation)
  # Small batch, reduced and non-square spatial size; the stem sees a small image.
  height, width = (23, 18) if kernel == 7 else (7, 6)
  x = _random(rng, 2, height, width, cin)
  w = _random(rng, kernel, kernel, cin, cout) / np.sqrt(kernel * kernel * cin)
  (y_ref, dx_ref, dw_ref), (y, dx, dw) = _xla_and_onednn(
      x, w, stride, dilation, dilation * (kernel - 1) // 2)
  assert y.shape == y_ref.shape and dx.shape == x.shape and dw.shape == w.shape
  assert _rel(y_ref, y) < 1e-5
  assert _rel(dx_ref, dx) < 1e-5
  assert _rel(dw_ref, dw) < 1e-5


@needs_onednn
@pytest.mark.parametrize('batch,height,width,cin,cout,kernel,stride,dilation,padding', ODD_CONVS)
def test_odd_convolutions_match_xla(batch, height, width, cin, cout, kernel, stride, dilation,
                                    padding):
  rng = np.random.default_rng(height * width + cin)
  x = _random(rng, batch, height, width, cin)
  w = _random(rng, kernel, kernel, cin, cout)
  (y_ref, dx_ref, dw_ref), (y, dx, dw) = _xla_and_onednn(x, w, stride, dilation, padding)
  assert y.shape == y_ref.shape
  assert _rel(y_ref, y) < 1e-5
  assert _rel(dx_ref, dx) < 1e-5
  assert _rel(dw_ref, dw) < 1e-5


def test_table_holds_every_resnet_convolution(monkeypatch):
  """RESNET_CONVS is complete: every conv the trunks make at every output stride is in it."""
  seen = set()
  xla_conv = fastconv.xla_conv

  def record(x, kernel, stride=1, dilation=1, padding=0, impl='auto'):
    del impl
    k, cin, cout = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    assert padding == dilation * (k - 1) // 2
    seen.add((k, cin, cout, stride, dilation))
    return xla_conv(x, kernel, stride, dilation, padding)

  monkeypatch.setattr(fastconv, 'conv', record)
  for depth in (18, 50, 101):
    for output_stride in resnet.OUTPUT_STRIDES:
      model = resnet.ResNet(depth=depth, output_stride=output_stride)
      jax.eval_shape(lambda x, model=model: model.init(jax.random.PRNGKey(0), x),
                     jnp.zeros((1, 64, 64, 3)))
  assert seen == set(RESNET_CONVS)


@needs_onednn
def test_conv_routes_by_kernel_and_dtype():
  """'onednn' runs k x k float32 convs in oneDNN, 1x1 as matmuls, other dtypes in XLA."""
  def targets(x, w, padding):
    text = str(jax.make_jaxpr(lambda x, w: fastconv.conv(x, w, 1, 1, padding, 'onednn'))(x, w))
    return 'excam_onednn_conv_forward' in text, 'conv_general_dilated' in text
  x, w3, w1 = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 4, 2)), jnp.ones((1, 1, 4, 2))
  assert fastconv.resolve_impl('onednn') == 'onednn'
  assert targets(x, w3, 1) == (True, False)
  assert targets(x, w1, 0) == (False, False)  # dot_general.
  assert targets(x.astype(jnp.bfloat16), w3.astype(jnp.bfloat16), 1) == (False, True)
  assert fastconv.resolve_impl('auto') == fastconv.AUTO_CPU


def _tiny_resnet_loss_and_grads(impl, images, labels, variables=None):
  """Loss and parameter gradients of a width-4 ResNet-18 + WILDCAT head, and its variables."""
  config = tiny.get_config()
  config.model.update(depth=18, width=4, head='wildcat', conv_impl=impl)
  model = network.create_model(config.model, labels.shape[1])
  if variables is None:  # The same for every impl: their parameters are the same.
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])

  def loss_fn(params):
    (logits, _), _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                 images, train=True, mutable=['batch_stats'])
    return losses.bce_loss(logits, labels, jnp.ones(images.shape[0]))

  return jax.jit(jax.value_and_grad(loss_fn))(variables['params']), variables


@needs_onednn
def test_tiny_resnet_loss_and_gradients_match_xla():
  rng = np.random.default_rng(18)
  images = _random(rng, 4, 48, 40, 3)
  labels = jnp.asarray(rng.random((4, 5)) < 0.3, jnp.float32)
  (loss_ref, grads_ref), variables = _tiny_resnet_loss_and_grads('xla', images, labels)
  (loss, grads), _ = _tiny_resnet_loss_and_grads('onednn', images, labels, variables)
  assert abs(float(loss - loss_ref)) <= 1e-5 * abs(float(loss_ref))
  flat_ref = jax.tree_util.tree_leaves_with_path(grads_ref)
  flat = dict(jax.tree_util.tree_leaves_with_path(grads))
  assert len(flat) == len(flat_ref) == 62  # 20 trunk convs, 20 BatchNorms x 2, the classifier x 2.
  errors = {'/'.join(k.key for k in path): _rel(ref, flat[path]) for path, ref in flat_ref}
  # fastconv_test's sample and tolerance for depth 18.
  for name in ('trunk/conv1/kernel', 'trunk/layer2_0/conv1/kernel',
               'trunk/layer2_0/downsample_conv/kernel', 'trunk/layer4_1/conv2/kernel',
               'head/classifier/kernel', 'head/classifier/bias'):
    assert errors[name] < 1e-5, (name, errors[name])
  # Every tensor, a little looser: oneDNN's float32 kernels sum long reductions in fewer partial
  # sums than XLA's (a 56x56x64 layer's weight gradient: 2.8e-6 rms from float64 against
  # XLA's 3.2e-7), and BatchNorm's backward cancels; measured worst here 1.1e-5.
  assert max(errors.values()) < 3e-5, errors


@needs_onednn
def test_train_steps_match_xla_and_call_onednn():
  """Three jitted train steps of the tiny model: the same losses and parameters as XLA's."""
  config = tiny.get_config()
  rng = np.random.default_rng(3)
  batches = [{'image': rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
              'label': (rng.random((8, 3)) < 0.5).astype(np.float32),
              'mask': np.ones(8, np.float32)} for _ in range(3)]
  mesh = parallel.data_mesh()
  results = {}
  for impl in ('xla', 'onednn'):
    config.model.conv_impl = impl
    model = network.create_model(config.model, 3)
    tx, _ = optim_lib.create_optimizer(config.optim, total_steps=10)
    state = steps_lib.create_state(jax.random.PRNGKey(0), model=model, tx=tx, image_size=32)
    state = jax.device_put(state, parallel.replicated(mesh))
    step = steps_lib.make_train_step(config.optim, model, tx, mesh)
    if impl == 'onednn':
      hlo = step.lower(state, batches[0]).as_text()
      assert 'excam_onednn_conv_backward_weights' in hlo
    step_losses = []
    for batch in batches:
      state, metrics = step(state, batch)
      step_losses.append(float(metrics['loss']))
    results[impl] = step_losses, state.params
  np.testing.assert_allclose(results['onednn'][0], results['xla'][0], rtol=1e-5)
  for ref, got in zip(jax.tree.leaves(results['xla'][1]), jax.tree.leaves(results['onednn'][1])):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


@needs_onednn
def test_concurrent_calls_from_threads():
  """Calls from several threads at once (shared primitive cache, per-thread buffers) agree."""
  rng = np.random.default_rng(7)
  cases = [(_random(rng, 2, 9, 9, 8), _random(rng, 3, 3, 8, 16), s) for s in (1, 2)]
  fns = [jax.jit(jax.grad(lambda x, w, s=s: jnp.sum(fastconv.conv_onednn(x, w, s, 1, 1) ** 2),
                          (0, 1))) for _, _, s in cases]
  expected = [f(x, w) for f, (x, w, _) in zip(fns, cases)]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    futures = [pool.submit(fns[i % 2], *cases[i % 2][:2]) for i in range(16)]
    for i, future in enumerate(futures):
      for got, ref in zip(future.result(), expected[i % 2]):
        np.testing.assert_array_equal(got, ref)


@needs_onednn
def test_loads_beside_tensorflow_and_runs_single_threaded():
  """A fresh process: TensorFlow (another oneDNN inside) imported first, oneDNN's team forced to
  one thread (EXCAM_ONEDNN_THREADS=1); the extension loads and agrees with XLA."""
  code = '''
import tensorflow as tf, jax, jax.numpy as jnp, numpy as np
from excam_jax.models import fastconv, onednn
assert onednn.unavailable_reason() is None
x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 7, 16)), jnp.float32)
w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 16, 8)), jnp.float32)
f = lambda conv: jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w, 2, 1, 1))), (0, 1))(x, w)
print(max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
          for a, b in zip(f(fastconv.xla_conv), f(fastconv.conv_onednn))))
'''
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', EXCAM_ONEDNN_THREADS='1')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=300, check=True)
  assert float(out.stdout.split()[-1]) < 1e-5


def test_unavailable_extension_logs_once_and_keeps_xla(monkeypatch, caplog):
  """Where it cannot be built: one INFO line with the reason, then XLA's convolution."""
  def no_compiler(output):
    raise onednn.Unavailable(f'no C++ compiler for {os.path.basename(output)} in this test')

  monkeypatch.setattr(onednn, 'build_command', no_compiler)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  onednn._load.cache_clear()  # pylint: disable=protected-access
  try:
    with caplog.at_level(logging.INFO, logger=onednn.__name__):
      assert fastconv.resolve_impl('onednn') == 'dot1x1'
      x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 5, 3)), jnp.float32)
      w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 3, 4)), jnp.float32)
      f = jax.jit(jax.value_and_grad(
          lambda w, impl: jnp.sum(fastconv.conv(x, w, 1, 1, 1, impl) ** 2)), static_argnums=1)
      text = str(jax.make_jaxpr(f, static_argnums=1)(w, 'onednn'))
      loss, grad = f(w, 'onednn')
      loss_ref, grad_ref = f(w, 'xla')
    assert 'excam_onednn' not in text and 'conv_general_dilated' in text
    assert float(loss) == float(loss_ref)
    np.testing.assert_array_equal(grad, grad_ref)
    records = [r for r in caplog.records if r.name == onednn.__name__]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert 'no C++ compiler' in records[0].getMessage()
    assert "XLA's convolutions" in records[0].getMessage()
  finally:
    onednn._load.cache_clear()  # pylint: disable=protected-access


def test_mixed_plan_follows_the_per_layer_timings():
  # (forward by oneDNN, input gradient by oneDNN): stem both; strided 3x3 input gradient only;
  # dilated both; a plain stride-1 3x3 neither.
  assert fastconv.mixed_plan((7, 7, 3, 64), 2, 1) == (True, True)
  assert fastconv.mixed_plan((3, 3, 64, 128), 2, 1) == (False, True)
  assert fastconv.mixed_plan((3, 3, 256, 256), 1, 2) == (True, True)
  assert fastconv.mixed_plan((3, 3, 64, 64), 1, 1) == (False, False)


@needs_onednn
@pytest.mark.parametrize('kernel,cin,cout,stride,dilation', [
    (7, 3, 8, 2, 1), (3, 8, 16, 2, 1), (3, 16, 16, 1, 2), (3, 16, 16, 1, 1)])
def test_mixed_matches_xla_and_calls_onednn_where_planned(kernel, cin, cout, stride, dilation):
  rng = np.random.default_rng(kernel * cin + stride + dilation)
  height, width = (23, 18) if kernel == 7 else (9, 8)
  x = _random(rng, 2, height, width, cin)
  w = _random(rng, kernel, kernel, cin, cout) / np.sqrt(kernel * kernel * cin)
  padding = dilation * (kernel - 1) // 2
  outs = []
  for conv in (fastconv.xla_conv, fastconv.conv_mixed):
    y, vjp = jax.vjp(lambda x, w, conv=conv: conv(x, w, stride, dilation, padding), x, w)
    g = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32)
    outs.append((y, *vjp(g)))
  for ref, got in zip(*outs):
    assert _rel(ref, got) < 1e-5
  forward, data = fastconv.mixed_plan(w.shape, stride, dilation)
  fwd_text = str(jax.make_jaxpr(lambda x, w: fastconv.conv(x, w, stride, dilation, padding,
                                                           'onednn_mixed'))(x, w))
  assert ('excam_onednn_conv_forward' in fwd_text) == forward
  grad_text = str(jax.make_jaxpr(jax.grad(
      lambda x, w: fastconv.conv(x, w, stride, dilation, padding, 'onednn_mixed').sum(),
      argnums=(0, 1)))(x, w))
  assert ('excam_onednn_conv_backward_data' in grad_text) == data
  assert 'excam_onednn_conv_backward_weights' not in grad_text  # Always XLA's.
