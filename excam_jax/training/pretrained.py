"""ImageNet ResNet weights from a torchvision/timm state dict, read with numpy only.

The reference file is timm's `resnet101.tv_in1k` (torchvision's ImageNet weights), saved as
safetensors or as an .npz of the state dict. Names map one to one onto
`excam_jax.models.resnet.ResNet`:

  conv1.weight                      -> params/conv1/kernel          (OIHW -> HWIO)
  bn1.{weight,bias}                 -> params/bn1/{scale,bias}
  bn1.{running_mean,running_var}    -> batch_stats/bn1/{mean,var}
  layer2.0.conv3.weight             -> params/layer2_0/conv3/kernel
  layer2.0.downsample.0.weight      -> params/layer2_0/downsample_conv/kernel
  layer2.0.downsample.1.*           -> .../layer2_0/downsample_bn/*

fc.* (the ImageNet classifier) and *.num_batches_tracked are known and skipped. Loading is strict:
every Flax leaf must be filled exactly once with the right shape, and any other key is an error.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from excam_jax.errors import UserError
from excam_jax.models import resnet

# Keys of a torchvision state dict that the trunk does not use.
_SKIPPED = re.compile(r'^(fc\.(weight|bias)|.*num_batches_tracked)$')
_BN_LEAVES = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
              'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}


def read_state_dict(path):
  """Reads a .safetensors or .npz state dict into {name: numpy array}.

  Raises:
    UserError: the file is missing, of another format, or unreadable.
  """
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise UserError(f'pretrained weights {path!r} do not exist; set config.model.pretrained to a '
                    '.safetensors or .npz ResNet state dict, or to "" to train from scratch.')
  try:
    if path.endswith('.safetensors'):
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
      return dict(load_file(path))
    if path.endswith('.npz'):
      with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
  except Exception as err:  # Truncated or foreign files raise many different types.
    raise UserError(f'cannot read pretrained weights {path!r} ({err}); '
                    'download the file again.') from err
  raise UserError(f'pretrained weights {path!r} must end in .safetensors or .npz.')


def flax_path(name):
  """Maps a torchvision parameter name to (collection, path tuple), or None if unknown."""
  parts = name.split('.')
  if len(parts) == 2 and parts[0] == 'conv1' and parts[1] == 'weight':
    return 'params', ('conv1', 'kernel')
  if len(parts) == 2 and parts[0] == 'bn1' and parts[1] in _BN_LEAVES:
    collection, leaf = _BN_LEAVES[parts[1]]
    return collection, ('bn1', leaf)
  match = re.fullmatch(r'layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(\w+)', name)
  if not match:
    return None
  stage, index, layer, leaf = match.groups()
  block = f'layer{stage}_{index}'
  layer = {'downsample.0': 'downsample_conv', 'downsample.1': 'downsample_bn'}.get(layer, layer)
  if layer.startswith('conv') or layer == 'downsample_conv':
    return ('params', (block, layer, 'kernel')) if leaf == 'weight' else None
  if leaf not in _BN_LEAVES:
    return None
  collection, flax_leaf = _BN_LEAVES[leaf]
  return collection, (block, layer, flax_leaf)


def expected_shapes(depth, width=64):
  """{(collection, path): shape} of every leaf of ResNet(depth, width), from its abstract init."""
  model = resnet.ResNet(depth=depth, width=width)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  shapes = {}
  for collection in ('params', 'batch_stats'):
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(abstract[collection]):
      shapes[(collection, tuple(k.key for k in key_path))] = tuple(leaf.shape)
  return shapes


def _convert(array, collection, path):
  array = np.asarray(array, dtype=np.float32)
  if collection == 'params' and path[-1] == 'kernel':
    return np.transpose(array, (2, 3, 1, 0))  # OIHW -> HWIO.
  return array


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _problem_list(names, limit=5):
  names = sorted(names)
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def load_resnet_weights(path, depth=101, width=64):
  """Loads an ImageNet ResNet state dict for `excam_jax.models.resnet.ResNet`.

  Args:
    path: .safetensors or .npz file with torchvision/timm names (e.g. timm resnet101.tv_in1k).
      A leading 'module.' (DataParallel) on every name is accepted.
    depth: ResNet depth the file must match (18, 34, 50, 101 or 152).
    width: stem width of the target model (64 for every published ResNet).

  Returns:
    {'params': ..., 'batch_stats': ...}: nested dicts of float32 numpy arrays, the trunk's
    variables (conv kernels in HWIO).

  Raises:
    UserError: unreadable file, a name the trunk does not have, a missing leaf or a shape that
      differs from the model's.
  """
  state = read_state_dict(path)
  if state and all(name.startswith('module.') for name in state):
    state = {name[len('module.'):]: value for name, value in state.items()}
  shapes = expected_shapes(depth, width)
  variables = {'params': {}, 'batch_stats': {}}
  unknown, misfits, filled = [], [], set()
  for name, value in state.items():
    if _SKIPPED.match(name):
      continue
    target = flax_path(name)
    if target is None or target not in shapes:
      unknown.append(name)
      continue
    if target in filled:  # Only possible with a non-injective name map: guard the contract.
      raise UserError(f'{path}: two keys fill {"/".join(target[1])}; remove the duplicate.')
    array = _convert(value, *target)
    if array.shape != shapes[target]:
      misfits.append(f'{name} has shape {tuple(np.shape(value))} but '
                     f'{"/".join(target[1])} needs {shapes[target]}')
    filled.add(target)
    _set(variables[target[0]], target[1], array)
  # Unknown names say most about a wrong file (other depth or architecture): report them first.
  if unknown:
    raise UserError(f'{path}: unknown keys for ResNet-{depth}: {_problem_list(unknown)}; '
                    'use a torchvision/timm ResNet state dict of the configured depth.')
  if misfits:
    raise UserError(f'{path}: shapes do not fit ResNet-{depth}: {_problem_list(misfits, 2)}; '
                    'use weights of the configured depth and width.')
  missing = ['/'.join((c,) + p) for c, p in set(shapes) - filled]
  if missing:
    raise UserError(f'{path}: missing weights for ResNet-{depth}: {_problem_list(missing)}; '
                    'use a complete torchvision/timm ResNet state dict of the configured depth.')
  return variables
