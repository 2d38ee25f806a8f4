"""oneDNN's float32 convolutions on XLA:CPU through the XLA FFI (`conv_impl='onednn'`).

XLA:CPU's backward k x k convolutions are the part of the train step where PyTorch, which runs
oneDNN's backward-data and backward-weights primitives, is faster (experiments/PERFORMANCE.md).
`onednn_conv.cc` wraps oneDNN's forward, backward-data and backward-weights convolutions (NHWC
activations, HWIO kernels) as three XLA FFI handlers; this module builds, loads and calls them.

Build: on first use, with the C++ compiler ($CXX, else g++) against jaxlib's FFI headers and the
pinned oneDNN wheels (onednn-cpu-gomp for libdnnl.so.3, onednn-devel-cpu-gomp for its headers),
into $EXCAM_CACHE_DIR/onednn, else $XDG_CACHE_HOME/excam_jax/onednn, else
~/.cache/excam_jax/onednn (a temporary folder with EXCAM_CACHE_DIR=off), under a name that hashes
the source, the command and the versions. Not at `pip install` time: pip builds in an isolated
environment without jaxlib, whose headers the build needs. Compiling takes a few seconds, once.

Where it cannot be built or loaded (not Linux x86-64, no compiler, no oneDNN wheel, a failed
compile, EXCAM_ONEDNN=0) `unavailable_reason()` says why in one INFO log line and the callers
keep XLA's convolutions. Only the CPU platform has the targets: GPU and TPU never use them.

Threads: oneDNN's OpenMP team has as many threads as XLA's intra-op pool (at most the CPUs this
process may use); EXCAM_ONEDNN_THREADS=n sets it (1: no waiting for a team on a machine busy with
other work, where that wait costs milliseconds per call). Its idle threads wait passively
(OMP_WAIT_POLICY=passive, unless the user set a policy) instead of spinning on XLA's cores.

jaxlib carries its own oneDNN (3.7, statically linked, symbols not exported) and TensorFlow
another; the wheel's libdnnl.so.3 (3.2, OpenMP threads) is loaded beside them with RTLD_LOCAL.
Checked with LD_DEBUG=bindings: no oneDNN symbol binds across the libraries.
"""

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp

from excam_jax.runtime import xla

_LOG = logging.getLogger(__name__)
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'onednn_conv.cc')
# FFI target name -> the handler's symbol in the built library.
TARGETS = {'excam_onednn_conv_forward': 'ExcamOnednnConvForward',
           'excam_onednn_conv_backward_data': 'ExcamOnednnConvBackwardData',
           'excam_onednn_conv_backward_weights': 'ExcamOnednnConvBackwardWeights'}
_OFF = ('0', 'false', 'no', 'off')


class Unavailable(Exception):
  """Why the extension cannot be used here (one sentence)."""


def cache_folder(environ=None):
  """Where the built library lives; None when EXCAM_CACHE_DIR turns caching off: the folder
  'onednn' beside XLA's compilation cache (xla.cache_dir), or inside EXCAM_CACHE_DIR."""
  environ = os.environ if environ is None else environ
  xla_cache = xla.cache_dir(environ)
  if xla_cache is None:
    return None
  chosen = environ.get('EXCAM_CACHE_DIR', '').strip()
  return os.path.join(xla_cache if chosen else os.path.dirname(xla_cache), 'onednn')


def _wheel_file(distribution, name):
  """(absolute path of `name` in an installed wheel, the wheel's version)."""
  try:
    dist = importlib.metadata.distribution(distribution)
  except importlib.metadata.PackageNotFoundError as err:
    raise Unavailable(f'the {distribution} wheel is not installed') from err
  for file in dist.files or ():
    if '/'.join(file.parts[-len(name.split('/')):]) == name:
      return os.path.realpath(file.locate()), dist.version
  raise Unavailable(f'{name} is missing from the {distribution} wheel')


def build_command(output):
  """The compiler command that builds the extension into `output`; raises Unavailable."""
  if os.environ.get('EXCAM_ONEDNN', '1').strip().lower() in _OFF:
    raise Unavailable('EXCAM_ONEDNN turns it off')
  if not sys.platform.startswith('linux') or platform.machine() != 'x86_64':
    raise Unavailable(f'it is built for Linux x86-64 only, not {sys.platform} {platform.machine()}')
  compiler = shutil.which(os.environ.get('CXX', 'g++'))
  if compiler is None:
    raise Unavailable('no C++ compiler ($CXX or g++) on the PATH')
  header, _ = _wheel_file('onednn-devel-cpu-gomp', 'oneapi/dnnl/dnnl.hpp')
  library, _ = _wheel_file('onednn-cpu-gomp', 'libdnnl.so.3')
  lib_dir = os.path.dirname(library)
  return [compiler, '-std=c++17', '-O2', '-shared', '-fPIC', '-I', jax.ffi.include_dir(),
          '-I', os.path.dirname(os.path.dirname(os.path.dirname(header))), _SOURCE, '-o', output,
          '-L', lib_dir, '-l:libdnnl.so.3', f'-Wl,-rpath,{lib_dir}', '-lgomp']


def _build():
  """Compiles the extension unless the cache has it; returns the library's path."""
  with open(_SOURCE, 'rb') as f:
    source = f.read()
  versions = [importlib.metadata.version(name) for name in ('jaxlib', 'onednn-cpu-gomp')]
  folder = cache_folder() or tempfile.mkdtemp(prefix='excam_onednn_')
  probe = build_command('OUT')
  key = hashlib.sha256(repr((source, probe, versions)).encode()).hexdigest()[:16]
  path = os.path.join(folder, f'onednn_conv-{key}.so')
  if os.path.exists(path):
    return path
  os.makedirs(folder, exist_ok=True)
  # Written under a private name, then renamed: concurrent processes never load half a file.
  partial = f'{path}.{os.getpid()}.tmp'
  try:
    done = subprocess.run(build_command(partial), capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
      raise Unavailable(f'compiling {os.path.basename(_SOURCE)} failed: '
                        f'{done.stderr.strip()[-500:]}')
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return path


@functools.cache
def _load():
  """Builds, loads and registers the extension once per process; returns None or the reason."""
  try:
    path = _build()
    # libgomp's threads spin after each parallel region, holding cores XLA's own thread pool
    # needs: on a busy 2-core machine a tiny convolution took 8 ms instead of 0.04 ms. So they
    # wait passively unless the user chose; libgomp reads this when it loads, just below.
    if not {'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT'} & set(os.environ):
      os.environ['OMP_WAIT_POLICY'] = 'passive'
    library = ctypes.CDLL(path)  # RTLD_LOCAL: its symbols stay out of the global scope.
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform='cpu')
  except (Unavailable, OSError, AttributeError, RuntimeError, ValueError,
          subprocess.SubprocessError) as err:
    reason = str(err) or type(err).__name__
    _LOG.info("oneDNN convolutions unavailable (%s): conv_impl='onednn' keeps XLA's "
              'convolutions.', reason)
    return reason
  _LOG.debug('oneDNN convolutions loaded from %s.', library._name)  # pylint: disable=protected-access
  return None


def unavailable_reason():
  """None when the oneDNN targets are registered (building them on first call), else why not."""
  return _load()


def _call(target, shape, a, b, stride, dilation, padding, any_layout):
  reason = unavailable_reason()
  if reason is not None:
    raise RuntimeError(f'oneDNN convolutions are unavailable: {reason}.')
  # 'sequential': under vmap, one call per example (correct; nothing here vmaps convolutions).
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method='sequential')(
                              a, b, stride=int(stride), dilation=int(dilation),
                              padding=int(padding), any_layout=int(any_layout))


def output_shape(x_shape, kernel_shape, stride, dilation, padding):
  """(N, OH, OW, O) of an NHWC x HWIO convolution with symmetric padding (XLA's floor rule)."""
  n, h, w, _ = x_shape
  span = dilation * (kernel_shape[0] - 1) + 1
  return (n, (h + 2 * padding - span) // stride + 1, (w + 2 * padding - span) // stride + 1,
          kernel_shape[3])


def conv_forward(x, kernel, stride=1, dilation=1, padding=0, any_layout=False):
  """oneDNN's convolution: float32 x (N,H,W,C), kernel (K,K,C,O) -> (N,OH,OW,O)."""
  shape = output_shape(x.shape, kernel.shape, stride, dilation, padding)
  return _call('excam_onednn_conv_forward', shape, x, kernel, stride, dilation, padding,
               any_layout)


def conv_backward_data(g, kernel, x_shape, stride=1, dilation=1, padding=0, any_layout=False):
  """The input gradient of `conv_forward` for output gradient g: shape x_shape."""
  return _call('excam_onednn_conv_backward_data', tuple(x_shape), g, kernel, stride, dilation,
               padding, any_layout)


def conv_backward_weights(x, g, kernel_shape, stride=1, dilation=1, padding=0,
                          any_layout=False):
  """The kernel gradient of `conv_forward` for input x and output gradient g."""
  return _call('excam_onednn_conv_backward_weights', tuple(kernel_shape), x, g, stride,
               dilation, padding, any_layout)
