"""BatchNorm with a hand-written gradient that keeps no full-size intermediate but its input
(`model.norm_impl='fused'`; 'flax' is flax.linen.BatchNorm).

Flax's BatchNorm gradient, as XLA:CPU compiles it, materialises x - mean and two more full-size
products before its reductions. Here, with n the cells per channel, r = 1 / sqrt(var + eps) and
xhat = (x - mean) r:

  forward:  two sibling reductions give sum(x) and sum(x^2) (mean = sum x / n,
            var = max(sum x^2 / n - mean^2, 0), Flax's fast variance); one pass gives
            y = scale * xhat + bias;
  backward: two sibling reductions give sum(dy) and sum(dy * xhat) (xhat recomputed from x);
            one pass gives dx = scale r / n * (n dy - sum dy - xhat sum(dy xhat))
            (+ the cotangents of mean and var, 1/n and 2 (x - mean) / n, where a caller
            differentiates them).

The parameters and statistics have Flax's names, shapes and initial values (params 'scale',
'bias'; batch_stats 'mean', 'var'), and the running averages follow Flax's rule, so a checkpoint
written with either implementation restores into the other. Statistics are computed in float32
(float64 when x is) whatever the model's dtype, as Flax does. Whether it is faster depends on the
model and the CPU: experiments/PERFORMANCE.md.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLS = ('flax', 'fused')


def _sums(a, b, axes):
  """(sum a, sum b) over `axes`: two sibling reductions of one input, which XLA fuses into one
  loop where it can (a variadic reduce, one HLO op for both, ran slower on XLA:CPU: at 28 x 28 x
  512 it took 2.5x the time of this form, and the ResNet-101 step 1.8x Flax's)."""
  return jnp.sum(a, axes), jnp.sum(b, axes)


def _stats(x, axes):
  n = x.size // x.shape[-1]
  total, squares = _sums(x, x * x, axes)
  mean = total / n
  return mean, jnp.maximum(squares / n - mean * mean, 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x, scale, bias, epsilon):
  """(y, mean, var) of a training pass over x (..., C) in float32: the module docstring's maths."""
  return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  mean, var = _stats(x, axes)
  rstd = jax.lax.rsqrt(var + epsilon)
  y = (x - mean) * (scale * rstd) + bias
  return (y, mean, var), (x, mean, rstd, scale)


def _bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, rstd, scale = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  xhat = (x - mean) * rstd
  dbias, dscale = _sums(dy, dy * xhat, axes)
  dx = (scale * rstd / n) * (n * dy - dbias - xhat * dscale)
  dx = dx + dmean / n + dvar * (2.0 / n) * (x - mean)
  return dx, dscale, dbias


batch_norm.defvjp(_forward, _bwd)


class FusedBatchNorm(nn.Module):
  """flax.linen.BatchNorm's interface (the fields this package sets) over `batch_norm`."""
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32),
                            (features,))
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), (features,))
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float64 stays float64.
    if self.use_running_average:
      y = (x32 - ra_mean.value) * (scale * jax.lax.rsqrt(ra_var.value + self.epsilon)) + bias
      return y.astype(self.dtype)
    y, mean, var = batch_norm(x32, scale, bias, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(self.dtype)


def norm(impl, **fields):
  """The BatchNorm module of `impl` ('flax' or 'fused') with Flax's field names."""
  if impl == 'fused':
    return FusedBatchNorm(**fields)
  return nn.BatchNorm(**fields)
