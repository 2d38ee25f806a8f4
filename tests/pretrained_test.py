"""Tests of the ImageNet weight import against an independent numpy NCHW forward pass."""

import jax
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.numpy import save_file

from excam_jax.training import pretrained
from excam_jax.errors import UserError
from excam_jax.models import resnet

DEPTH, WIDTH = 50, 8  # A bottleneck ResNet small enough for a test; ResNet-101 only adds blocks.
BLOCKS = (3, 4, 6, 3)


def _bn(rng, name, channels):
  return {f'{name}.weight': rng.uniform(0.5, 1.5, channels),
          f'{name}.bias': rng.normal(0, 0.1, channels),
          f'{name}.running_mean': rng.normal(0, 0.1, channels),
          f'{name}.running_var': rng.uniform(0.5, 1.5, channels),
          f'{name}.num_batches_tracked': np.array(7)}


def _conv(rng, name, out, inp, k):
  return {name: rng.normal(0, np.sqrt(2.0 / (inp * k * k)), (out, inp, k, k))}


def torchvision_state_dict(seed=0):
  """A random ResNet-50 (stem width 8) state dict with torchvision names and OIHW kernels."""
  rng = np.random.default_rng(seed)
  state = {**_conv(rng, 'conv1.weight', WIDTH, 3, 7), **_bn(rng, 'bn1', WIDTH)}
  inp = WIDTH
  for stage, num_blocks in enumerate(BLOCKS, start=1):
    w = WIDTH * 2 ** (stage - 1)
    for i in range(num_blocks):
      p = f'layer{stage}.{i}'
      state.update(_conv(rng, f'{p}.conv1.weight', w, inp, 1) | _bn(rng, f'{p}.bn1', w))
      state.update(_conv(rng, f'{p}.conv2.weight', w, w, 3) | _bn(rng, f'{p}.bn2', w))
      state.update(_conv(rng, f'{p}.conv3.weight', 4 * w, w, 1) | _bn(rng, f'{p}.bn3', 4 * w))
      if i == 0:
        state.update(_conv(rng, f'{p}.downsample.0.weight', 4 * w, inp, 1))
        state.update(_bn(rng, f'{p}.downsample.1', 4 * w))
      inp = 4 * w
  state['fc.weight'] = rng.normal(size=(1000, inp))
  state['fc.bias'] = rng.normal(size=(1000,))
  return {k: np.asarray(v, np.float32 if v.ndim else np.int64) for k, v in state.items()}


# Independent reference: PyTorch semantics on NCHW arrays with OIHW kernels.
def ref_conv(x, w, stride=1, pad=0):
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  win = sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
  return np.einsum('nchwij,ocij->nohw', win, w, optimize=True)


def ref_bn(x, sd, name, eps=1e-5):
  def c(v):
    return sd[f'{name}.{v}'][None, :, None, None]
  return (x - c('running_mean')) / np.sqrt(c('running_var') + eps) * c('weight') + c('bias')


def ref_maxpool(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  return sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(-1, -2))


def ref_stem_and_first_bottleneck(x, sd):
  relu = lambda v: np.maximum(v, 0)
  x = ref_maxpool(relu(ref_bn(ref_conv(x, sd['conv1.weight'], 2, 3), sd, 'bn1')))
  y = relu(ref_bn(ref_conv(x, sd['layer1.0.conv1.weight']), sd, 'layer1.0.bn1'))
  y = relu(ref_bn(ref_conv(y, sd['layer1.0.conv2.weight'], 1, 1), sd, 'layer1.0.bn2'))
  y = ref_bn(ref_conv(y, sd['layer1.0.conv3.weight']), sd, 'layer1.0.bn3')
  shortcut = ref_bn(ref_conv(x, sd['layer1.0.downsample.0.weight']), sd, 'layer1.0.downsample.1')
  return relu(y + shortcut)


@pytest.fixture(scope='module')
def state_dict():
  return torchvision_state_dict()


@pytest.fixture(scope='module')
def weights_file(tmp_path_factory, state_dict):
  path = str(tmp_path_factory.mktemp('weights') / 'resnet.safetensors')
  save_file(state_dict, path)
  return path


class TestLoadResnetWeights:

  def test_forward_matches_numpy_nchw_reference(self, weights_file, state_dict):
    variables = pretrained.load_resnet_weights(weights_file, depth=DEPTH, width=WIDTH)
    x = np.random.default_rng(1).normal(size=(2, 3, 29, 32)).astype(np.float32)
    model = resnet.ResNet(depth=DEPTH, width=WIDTH)
    _, inter = model.apply(variables, x.transpose(0, 2, 3, 1), train=False,
                           capture_intermediates=True, mutable=['intermediates'])
    got = np.asarray(inter['intermediates']['layer1_0']['__call__'][0]).transpose(0, 3, 1, 2)
    want = ref_stem_and_first_bottleneck(x.astype(np.float64), state_dict)
    assert got.shape == want.shape == (2, 4 * WIDTH, 8, 8)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

  def test_every_leaf_filled_with_converted_values(self, weights_file, state_dict):
    variables = pretrained.load_resnet_weights(weights_file, depth=DEPTH, width=WIDTH)
    p, s = variables['params'], variables['batch_stats']
    np.testing.assert_array_equal(p['conv1']['kernel'],
                                  state_dict['conv1.weight'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p['layer3_0']['downsample_bn']['scale'],
                                  state_dict['layer3.0.downsample.1.weight'])
    np.testing.assert_array_equal(s['layer4_2']['bn3']['var'],
                                  state_dict['layer4.2.bn3.running_var'])
    expected = pretrained.expected_shapes(DEPTH, WIDTH)
    count = sum(len(jax_leaves(variables[c])) for c in ('params', 'batch_stats'))
    assert count == len(expected)
    # Every state-dict tensor except fc and the counters is used: 5 per BN, 1 per conv.
    used = [k for k in state_dict if not k.startswith('fc.') and 'num_batches' not in k]
    assert count == len(used)

  def test_npz_and_module_prefix_give_the_same_variables(self, tmp_path, weights_file, state_dict):
    path = str(tmp_path / 'w.npz')
    np.savez(path, **{f'module.{k}': v for k, v in state_dict.items()})
    a = pretrained.load_resnet_weights(weights_file, depth=DEPTH, width=WIDTH)
    b = pretrained.load_resnet_weights(path, depth=DEPTH, width=WIDTH)
    for x, y in zip(jax_leaves(a), jax_leaves(b)):
      np.testing.assert_array_equal(x, y)


def jax_leaves(tree):
  return jax.tree_util.tree_leaves(tree)


class TestStrictness:

  def _write(self, tmp_path, state):
    path = str(tmp_path / 'w.safetensors')
    save_file(state, path)
    return path

  def test_unknown_key_is_reported(self, tmp_path, state_dict):
    path = self._write(tmp_path, {**state_dict, 'layer1.0.se.fc.weight': np.ones(3, np.float32)})
    with pytest.raises(UserError, match=r'unknown keys.*layer1\.0\.se\.fc\.weight'):
      pretrained.load_resnet_weights(path, depth=DEPTH, width=WIDTH)

  def test_missing_key_is_reported(self, tmp_path, state_dict):
    state = {k: v for k, v in state_dict.items() if k != 'layer2.1.bn2.running_mean'}
    path = self._write(tmp_path, state)
    with pytest.raises(UserError, match='missing weights.*batch_stats/layer2_1/bn2/mean'):
      pretrained.load_resnet_weights(path, depth=DEPTH, width=WIDTH)

  def test_wrong_shape_is_reported(self, tmp_path, state_dict):
    state = dict(state_dict, **{'layer1.0.conv2.weight': np.ones((8, 8, 1, 1), np.float32)})
    path = self._write(tmp_path, state)
    message = r'layer1\.0\.conv2\.weight has shape \(8, 8, 1, 1\) but .*conv2/kernel needs \(3, 3, 8, 8\)'
    with pytest.raises(UserError, match=message):
      pretrained.load_resnet_weights(path, depth=DEPTH, width=WIDTH)

  def test_other_depth_is_rejected(self, weights_file):
    with pytest.raises(UserError, match='missing weights for ResNet-101'):
      pretrained.load_resnet_weights(weights_file, depth=101, width=WIDTH)
    with pytest.raises(UserError, match=r'unknown keys for ResNet-18.*conv3'):
      pretrained.load_resnet_weights(weights_file, depth=18, width=WIDTH)

  def test_missing_and_corrupt_files(self, tmp_path):
    with pytest.raises(UserError, match='do not exist'):
      pretrained.load_resnet_weights(str(tmp_path / 'nope.safetensors'))
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    with pytest.raises(UserError, match='cannot read'):
      pretrained.load_resnet_weights(str(bad))
    other = tmp_path / 'w.pt'
    other.write_bytes(b'x')
    with pytest.raises(UserError, match='must end in'):
      pretrained.load_resnet_weights(str(other))
