"""Convolutions with two implementations: XLA's, and one whose gradients are matmuls.

On XLA:CPU a forward convolution takes a fast path, but the convolutions that autodiff makes for
the backward pass (batch/feature-swapped ones for the weight gradient, lhs-dilated ones for the
input gradient of a strided conv) do not, while matrix products do. `conv` therefore has two
implementations, picked by `impl`:

* 'xla': `lax.conv_general_dilated` and its autodiff gradients (what `flax.linen.Conv` does).
* 'dot1x1': a 1x1 convolution is a `dot_general` over the channels (after subsampling for a
  stride), forward and backward; a k x k convolution is XLA's.
* 'matmul': 1x1 as in 'dot1x1'; a k x k convolution runs XLA's forward convolution, its weight
  gradient is one matmul per kernel tap (the tap's shifted input contracted with the output
  gradient) and its input gradient is XLA's forward convolution of the output gradient with the
  flipped, transposed kernel at stride 1, or one matmul per tap placed with an interior pad at
  stride > 1.
* 'onednn': 1x1 as in 'dot1x1'; a float32 k x k convolution runs oneDNN's forward,
  backward-data and backward-weights primitives through the XLA FFI (`onednn`, CPU only, built on
  first use). Where the extension is unavailable (logged once), or on another backend, or in
  another dtype, XLA's convolution instead.
* 'onednn_mixed': oneDNN only where its per-layer timings beat XLA's on a 2-core AVX2 CPU
  (PERFORMANCE.md section 8; `mixed_plan`): the forward of stems (7 x 7) and dilated layers, the
  input gradient of stems, strided and dilated layers; XLA's forward elsewhere and XLA's weight
  gradient everywhere. Falls back as 'onednn' does.
* 'auto': `AUTO_CPU` ('dot1x1') on CPU, 'xla' on every other backend (decided when the model is
  traced).

Measured on a 2-core AVX-512 CPU (experiments/PERFORMANCE.md): 'dot1x1' makes the ResNet-101
train step 1.7x faster than 'xla'; 'matmul' is no faster than 'dot1x1' there, and on the small
default model (tiny channel counts) it is slower than XLA's own gradients.

Both compute the same function; tests check that loss and gradients agree. `Conv` is a drop-in
for `flax.linen.Conv` with square kernels and symmetric integer padding: same parameter names,
shapes, dtypes and initial values, so checkpoints and ImageNet weights load into either.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from excam_jax import config_schema
from excam_jax.models import onednn

IMPLS = config_schema.CONV_IMPLS  # ('auto', 'xla', 'dot1x1', 'matmul', 'onednn', 'onednn_mixed')
_DIMS = ('NHWC', 'HWIO', 'NHWC')
# What 'auto' is on CPU. 'onednn' waits for experiments/bench_onednn.py's timings.
AUTO_CPU = 'dot1x1'


def resolve_impl(impl):
  """The implementation `impl` stands for on the default backend.

  'auto' -> `AUTO_CPU` on CPU, 'xla' elsewhere; 'onednn' and 'onednn_mixed' -> 'xla' off CPU and
  'dot1x1' on a CPU where the extension is unavailable (building it here on first use); others
  as they are.
  """
  if impl not in IMPLS:
    raise ValueError(f'conv implementation must be one of {IMPLS}, got {impl!r}.')
  on_cpu = jax.default_backend() == 'cpu'
  if impl == 'auto':
    impl = AUTO_CPU if on_cpu else 'xla'
  if impl in ('onednn', 'onednn_mixed'):
    if not on_cpu:
      return 'xla'
    return impl if onednn.unavailable_reason() is None else 'dot1x1'
  return impl


def xla_conv(x, kernel, stride=1, dilation=1, padding=0):
  """NHWC x HWIO convolution through `lax.conv_general_dilated`, symmetric padding."""
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation), dimension_numbers=_DIMS)


def _matmul(a, b):
  """(N, K) @ (K, M), accumulated in float32 when the inputs are narrower."""
  return jnp.dot(a, b, preferred_element_type=jnp.promote_types(a.dtype, jnp.float32))


def conv_1x1(x, kernel, stride=1):
  """1x1 convolution (no padding) as a contraction over channels: (B,H,W,I) x (1,1,I,O)."""
  if stride > 1:
    x = x[:, ::stride, ::stride, :]
  return lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())))


def _taps(kernel_shape):
  kh, kw = kernel_shape[:2]
  return [(i, j) for i in range(kh) for j in range(kw)]


def _tap_window(xp, i, j, stride, dilation, out_hw):
  """The input cells that kernel tap (i, j) meets for every output cell: (B, Ho, Wo, I)."""
  b, _, _, c = xp.shape
  ho, wo = out_hw
  start = (0, i * dilation, j * dilation, 0)
  limit = (b, i * dilation + (ho - 1) * stride + 1, j * dilation + (wo - 1) * stride + 1, c)
  return lax.slice(xp, start, limit, (1, stride, stride, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_matmul_grads(x, kernel, stride, dilation, padding):
  """XLA's forward convolution with the weight and input gradients computed as matmuls."""
  return xla_conv(x, kernel, stride, dilation, padding)


def _conv_fwd(x, kernel, stride, dilation, padding):
  return xla_conv(x, kernel, stride, dilation, padding), (x, kernel)


def _conv_bwd(stride, dilation, padding, residuals, g):
  x, kernel = residuals
  kh, kw, cin, cout = kernel.shape
  b, ho, wo, _ = g.shape
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  rows = g.reshape(-1, cout)
  # Weight gradient: tap (i, j) contracts its shifted input with the output gradient over the
  # batch and the output cells.
  accumulate = jnp.promote_types(g.dtype, jnp.float32)
  dkernel = jnp.stack([
      lax.dot_general(_tap_window(xp, i, j, stride, dilation, (ho, wo)), g,
                      (((0, 1, 2), (0, 1, 2)), ((), ())), preferred_element_type=accumulate)
      for i, j in _taps(kernel.shape)]).reshape(kh, kw, cin, cout)
  if stride == 1 and dilation * (kh - 1) >= padding and dilation * (kw - 1) >= padding:
    # Input gradient at stride 1: a forward convolution with the flipped, transposed kernel.
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    back = dilation * (kh - 1) - padding
    dx = lax.conv_general_dilated(
        g, flipped.astype(g.dtype), (1, 1), ((back, back), (dilation * (kw - 1) - padding,) * 2),
        rhs_dilation=(dilation, dilation), dimension_numbers=_DIMS)
  else:
    # Strided: each tap's contribution is a matmul, spread back over the padded input with an
    # interior pad of stride - 1 zeros between its cells.
    hp, wp = xp.shape[1:3]
    dxp = jnp.zeros(xp.shape, jnp.promote_types(g.dtype, jnp.float32))
    for i, j in _taps(kernel.shape):
      part = _matmul(rows, kernel[i, j].T.astype(g.dtype)).reshape(b, ho, wo, cin)
      top, left = i * dilation, j * dilation
      dxp = dxp + lax.pad(part, jnp.zeros((), part.dtype), (
          (0, 0, 0),
          (top, hp - top - (ho - 1) * stride - 1, stride - 1),
          (left, wp - left - (wo - 1) * stride - 1, stride - 1),
          (0, 0, 0)))
    dx = dxp[:, padding:hp - padding, padding:wp - padding, :]
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


conv_matmul_grads.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_onednn(x, kernel, stride, dilation, padding):
  """float32 convolution whose forward and both gradients are oneDNN's (CPU, first order)."""
  return onednn.conv_forward(x, kernel, stride, dilation, padding)


def _onednn_fwd(x, kernel, stride, dilation, padding):
  # Saves what XLA's autodiff of a convolution saves: its two inputs.
  return onednn.conv_forward(x, kernel, stride, dilation, padding), (x, kernel)


def _onednn_bwd(stride, dilation, padding, residuals, g):
  x, kernel = residuals
  return (onednn.conv_backward_data(g, kernel, x.shape, stride, dilation, padding),
          onednn.conv_backward_weights(x, g, kernel.shape, stride, dilation, padding))


conv_onednn.defvjp(_onednn_fwd, _onednn_bwd)


def mixed_plan(kernel_shape, stride, dilation):
  """(forward by oneDNN, input gradient by oneDNN) of a k x k layer under 'onednn_mixed'; the
  weight gradient is always XLA's (oneDNN's stride-1 weight gradients ran at 0.57-0.79x XLA's).

  From bench_onednn.py's per-layer timings (PERFORMANCE.md section 8): oneDNN's forward won on
  the 7 x 7 stem (2x) and on dilated layers (1.2-1.3x); its input gradient on the stem (1.85x),
  on stride-2 layers (1.67x) and on dilated ones (1.2-1.3x).
  """
  stem = kernel_shape[0] >= 7
  return stem or dilation > 1, stem or stride > 1 or dilation > 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_mixed(x, kernel, stride, dilation, padding):
  """float32 convolution computed by oneDNN or XLA part by part, as `mixed_plan` says."""
  return _mixed_fwd(x, kernel, stride, dilation, padding)[0]


def _mixed_fwd(x, kernel, stride, dilation, padding):
  forward, _ = mixed_plan(kernel.shape, stride, dilation)
  y = (onednn.conv_forward(x, kernel, stride, dilation, padding) if forward
       else xla_conv(x, kernel, stride, dilation, padding))
  return y, (x, kernel)


def _mixed_bwd(stride, dilation, padding, residuals, g):
  x, kernel = residuals
  _, data = mixed_plan(kernel.shape, stride, dilation)
  # XLA's gradients of its own convolution; under jit the unused one is never computed.
  _, vjp = jax.vjp(lambda a, w: xla_conv(a, w, stride, dilation, padding), x, kernel)
  dx_xla, dkernel = vjp(g)
  dx = (onednn.conv_backward_data(g, kernel, x.shape, stride, dilation, padding) if data
        else dx_xla)
  return dx, dkernel


conv_mixed.defvjp(_mixed_fwd, _mixed_bwd)


def conv(x, kernel, stride=1, dilation=1, padding=0, impl='auto'):
  """NHWC x HWIO convolution with symmetric integer padding, by the chosen implementation."""
  impl = resolve_impl(impl)
  if impl == 'xla':
    return xla_conv(x, kernel, stride, dilation, padding)
  if kernel.shape[:2] == (1, 1) and padding == 0:
    # 'onednn' too (a matmul XLA runs well and can fuse); bench_onednn.py's 'onednn_ffi'
    # variant times oneDNN's 1x1 layers against it.
    return conv_1x1(x, kernel, stride)
  if impl == 'onednn' and x.dtype == kernel.dtype == jnp.float32:
    return conv_onednn(x, kernel, stride, dilation, padding)
  if impl == 'onednn_mixed' and x.dtype == kernel.dtype == jnp.float32:
    return conv_mixed(x, kernel, stride, dilation, padding)
  if impl in ('dot1x1', 'onednn', 'onednn_mixed'):
    return xla_conv(x, kernel, stride, dilation, padding)
  return conv_matmul_grads(x, kernel, stride, dilation, padding)


class Conv(nn.Module):
  """Square-kernel convolution, a drop-in for `flax.linen.Conv` (params 'kernel'[, 'bias']).

  Attributes:
    features: output channels.
    kernel_size: k of the k x k kernel.
    stride, dilation: the same in both spatial dimensions.
    padding: cells of zero padding on every side.
    use_bias: add a learned bias (initialised to zero).
    dtype: compute dtype; parameters stay float32, as in flax.
    kernel_init: initialiser of the (k, k, in, out) kernel.
    impl: one of `IMPLS` (see the module docstring).
  """
  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  padding: int = 0
  use_bias: bool = False
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.linear.default_kernel_init
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,),
                      jnp.float32) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv(x, kernel, self.stride, self.dilation, self.padding, self.impl)
    return y if bias is None else y + bias
