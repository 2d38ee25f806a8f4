r"""oneDNN convolutions (conv_impl='onednn') against 'auto' and 'xla', alternated in one process.

  python experiments/bench_onednn.py                        # calls, layers, both train steps
  python experiments/bench_onednn.py --parts=layers --rounds=5
  python experiments/bench_onednn.py --parts=steps --works=default --rounds=3 --steps=10
  python experiments/bench_onednn.py --smoke                # tiny sizes: does it run (no timing)

Part `calls`: the gradient of 20 chained tiny 3x3 convolutions, i.e. the fixed cost of 60 calls.
oneDNN's OpenMP team wakes up for each call and the call waits for all of it: on a busy 2-core
machine (load 5-6) a call took 2.8 ms with 2 threads and 0.02 ms with 1 (XLA: 0.02 ms), and 8 ms
with libgomp's default spinning instead of passive waiting. Compare in separate processes with
EXCAM_ONEDNN_THREADS=1 (team of one) and OMP_WAIT_POLICY=active (spinning), quiet and loaded.
Part `layers`: the per-layer probe of /work/shared/PERF_PROBE.md (batch 8, float32, NHWC/HWIO)
plus the 7x7 stem and two 1x1 layers. For each layer and variant: forward, input gradient alone
(dX), weight gradient alone (dW) and forward plus both gradients in one jitted call (fwd+vjp),
each the median of --steps calls. Variants:
  xla         `lax.conv_general_dilated` and its autodiff gradients;
  auto        the package default (`fastconv.AUTO_CPU`: 1x1 as matmuls, k x k XLA's);
  onednn      conv_impl='onednn' (k x k in oneDNN; 1x1 stays a matmul);
  onednn_ffi  oneDNN for every layer, 1x1 included (to decide where 1x1 layers should go);
  onednn_any  as onednn_ffi, with oneDNN choosing the activations' layout (blocked) too, which
              reorders them on every call (the default keeps XLA's NHWC: no activation reorder).
Part `steps`: the jitted, donated train step of `default` (configs/synthetic.py's model, batch
32, 96 px) and `r101` (configs/voc12.py's ResNet-101 ex-CAM, batch 8, 224 px) with
conv_impl in ('onednn', 'onednn_mixed', 'auto', 'xla') ('onednn_mixed': oneDNN only where the
layer timings favoured it, fastconv.mixed_plan).

Every variant is compiled first, then the variants are timed in the order A B C A B C ...
(--rounds times) and the median over rounds of each variant's per-round median is printed with
its ratio to 'onednn' (> 1: oneDNN is faster). Timings need a quiet machine. ONEDNN_VERBOSE=1
prints the oneDNN implementation each primitive runs (e.g. brgconv:avx2, jit:avx2, gemm:jit).
"""

import argparse
import functools
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from excam_jax.models import fastconv  # pylint: disable=wrong-import-position
from excam_jax.models import onednn  # pylint: disable=wrong-import-position

# (name, size, in, out, kernel, stride, dilation): PERF_PROBE.md's layers, the stem, two 1x1s.
LAYERS = [('56x64->64 d1 s1', 56, 64, 64, 3, 1, 1), ('28x128->128 d1 s1', 28, 128, 128, 3, 1, 1),
          ('14x256->256 d1 s1', 14, 256, 256, 3, 1, 1), ('28x256->256 d2 s1', 28, 256, 256, 3, 1, 2),
          ('56x128->128 d1 s2', 56, 128, 128, 3, 2, 1), ('stem 224x3->64 7x7 s2', 224, 3, 64, 7, 2, 1),
          ('56x256->64 1x1', 56, 256, 64, 1, 1, 1), ('28x512->1024 1x1 s2', 28, 512, 1024, 1, 2, 1)]
LAYER_VARIANTS = ('onednn', 'auto', 'xla', 'onednn_ffi', 'onednn_any')
STEP_VARIANTS = ('onednn', 'onednn_mixed', 'auto', 'xla')
# work: (config module, batch, image size, classes).
WORKS = {'default': ('synthetic', 32, 96, 6), 'r101': ('voc12', 8, 224, 20)}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_any_layout(x, kernel, stride, dilation, padding):
  return onednn.conv_forward(x, kernel, stride, dilation, padding, any_layout=True)


def _any_fwd(x, kernel, stride, dilation, padding):
  return _conv_any_layout(x, kernel, stride, dilation, padding), (x, kernel)


def _any_bwd(stride, dilation, padding, residuals, g):
  x, kernel = residuals
  return (onednn.conv_backward_data(g, kernel, x.shape, stride, dilation, padding, True),
          onednn.conv_backward_weights(x, g, kernel.shape, stride, dilation, padding, True))


_conv_any_layout.defvjp(_any_fwd, _any_bwd)


def layer_conv(variant, stride, dilation, padding):
  """f(x, w) for one variant of a layer."""
  if variant == 'onednn_ffi':
    return lambda x, w: fastconv.conv_onednn(x, w, stride, dilation, padding)
  if variant == 'onednn_any':
    return lambda x, w: _conv_any_layout(x, w, stride, dilation, padding)
  return lambda x, w: fastconv.conv(x, w, stride, dilation, padding, variant)


def layer_ops(conv):
  """The four jitted measurements of a layer: name -> f(x, w, g). Unused outputs (the forward
  in dX and dW, the other gradient) are dead code that XLA removes, oneDNN's calls included."""
  def dx(x, w, g):
    return jax.vjp(lambda x: conv(x, w), x)[1](g)[0]

  def dw(x, w, g):
    return jax.vjp(lambda w: conv(x, w), w)[1](g)[0]

  def both(x, w, g):
    y, vjp = jax.vjp(conv, x, w)
    return y, vjp(g)
  return {'fwd': jax.jit(lambda x, w, g: conv(x, w)), 'dX': jax.jit(dx), 'dW': jax.jit(dw),
          'fwd+vjp': jax.jit(both)}


def _median_time(fn, steps):
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def alternate(calls, rounds, steps):
  """calls: variant -> f(); each warmed up, then timed A B C A B C; variant -> median s."""
  for fn in calls.values():
    jax.block_until_ready(fn())
  samples = {name: [] for name in calls}
  for _ in range(rounds):
    for name, fn in calls.items():
      samples[name].append(_median_time(fn, steps))
  return {name: statistics.median(times) for name, times in samples.items()}


def bench_layers(args):
  rows = []
  for name, size, cin, cout, kernel, stride, dilation in LAYERS:
    if args.smoke:
      size, cin, cout = max(size // 8, 9), min(cin, 8), min(cout, 8)
    rng = np.random.default_rng(0)
    padding = dilation * (kernel - 1) // 2
    x = jnp.asarray(rng.normal(size=(args.batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)) / np.sqrt(kernel ** 2 * cin),
                    jnp.float32)
    g = jnp.ones(onednn.output_shape(x.shape, w.shape, stride, dilation, padding), jnp.float32)
    ops = {v: layer_ops(layer_conv(v, stride, dilation, padding)) for v in LAYER_VARIANTS}
    for op in ('fwd', 'dX', 'dW', 'fwd+vjp'):
      calls = {v: functools.partial(ops[v][op], x, w, g) for v in LAYER_VARIANTS}
      times = alternate(calls, args.rounds, args.steps)
      rows.append((name, op, times))
      print(f'{name:24s} {op:8s} ' + '  '.join(
          f'{v} {1e3 * t:8.2f} ms ({t / times["onednn"]:.2f})' for v, t in times.items()),
            flush=True)
  return rows


def _step_calls(work, args):
  """variant -> f() running one train step of `work` (state carried, donated)."""
  from configs import synthetic, voc12  # pylint: disable=g-import-not-at-top
  from excam_jax.training import parallel  # pylint: disable=g-import-not-at-top
  from excam_jax.training import optim as optim_lib
  from excam_jax.training import steps as steps_lib
  from excam_jax.models import network  # pylint: disable=g-import-not-at-top
  module, batch, size, classes = WORKS[work]
  if args.smoke:
    batch, size = 2, 32
  mesh = parallel.data_mesh()
  rng = np.random.default_rng(0)
  data = parallel.global_batch(
      {'image': rng.normal(size=(batch, size, size, 3)).astype(np.float32),
       'label': (rng.random((batch, classes)) < 0.3).astype(np.float32),
       'mask': np.ones(batch, np.float32)}, parallel.batch_sharded(mesh))
  calls = {}
  for variant in STEP_VARIANTS:
    config = (voc12 if module == 'voc12' else synthetic).get_config()
    config.model.conv_impl = variant
    if args.smoke:
      config.model.update(depth=18, width=4)
    model = network.create_model(config.model, classes)
    tx, _ = optim_lib.create_optimizer(config.optim, 1000)
    state = jax.jit(functools.partial(steps_lib.create_state, model=model, tx=tx, image_size=size),
                    out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(0))
    step = steps_lib.make_train_step(config.optim, model, tx, mesh)
    holder = {'state': state}

    def once(step=step, holder=holder):
      holder['state'], metrics = step(holder['state'], data)
      return metrics['loss']
    calls[variant] = once
  return calls


def bench_calls(args):
  """Per-call cost: the gradient of a chain of 20 small 3x3 convolutions (60 oneDNN calls)."""
  x = jnp.ones((2, 8, 8, 8), jnp.float32)
  w = jnp.full((3, 3, 8, 8), 0.01, jnp.float32)

  def chain(variant):
    conv = layer_conv(variant, 1, 1, 1)

    def loss(x, w):
      for _ in range(20):
        x = jnp.tanh(conv(x, w))
      return x.sum()
    return functools.partial(jax.jit(jax.grad(loss, (0, 1))), x, w)
  times = alternate({v: chain(v) for v in STEP_VARIANTS}, args.rounds, args.steps * 5)
  print('20 tiny convs fwd+vjp  ' + '  '.join(
      f'{v} {1e3 * t:.2f} ms ({t / times["onednn"]:.2f})' for v, t in times.items()), flush=True)
  return [('calls', 'chain', times)]


def bench_steps(args):
  rows = []
  for work in args.works.split(','):
    times = alternate(_step_calls(work, args), args.rounds, args.steps)
    rows.append((work, 'train', times))
    print(f'{work:8s} train step  ' + '  '.join(
        f'{v} {t:.3f} s ({t / times["onednn"]:.2f})' for v, t in times.items()), flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--parts', default='calls,layers,steps')
  parser.add_argument('--works', default='default,r101')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=6)
  parser.add_argument('--batch', type=int, default=8, help='batch of the per-layer part')
  parser.add_argument('--smoke', action='store_true', help='tiny sizes, 1 round, 1 step')
  args = parser.parse_args()
  if args.smoke:
    args.rounds, args.steps, args.batch = 1, 1, 2
  reason = onednn.unavailable_reason()
  if reason is not None:
    sys.exit(f'oneDNN convolutions unavailable here: {reason}.')
  print(f'{jax.default_backend()} backend, {os.cpu_count()} CPUs; ratios are variant / onednn '
        '(> 1: oneDNN faster); auto = ' + fastconv.AUTO_CPU)
  if 'calls' in args.parts:
    bench_calls(args)
  if 'layers' in args.parts:
    bench_layers(args)
  if 'steps' in args.parts:
    bench_steps(args)


if __name__ == '__main__':
  from excam_jax.runtime import xla  # pylint: disable=g-import-not-at-top
  xla.configure()  # What the package's commands do: the measured CPU flags, the cache.
  main()
