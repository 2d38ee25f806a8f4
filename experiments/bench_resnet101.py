r"""Benchmark of the ResNet-101 ex-CAM train and eval steps, and XLA memory of the train step.

  python experiments/bench_resnet101.py                      # whatever devices exist
  python experiments/bench_resnet101.py --steps=20 --out=experiments/resnet101_benchmark.md
  python experiments/bench_resnet101.py --json   # one JSON line: train/eval seconds per step
  python experiments/bench_resnet101.py --json --size=448 --batch=64 --dtype=bfloat16 [--remat]

Part 1 times the jitted, donated train step and the eval step (VOC config: 20 classes, M = 8) at
batch 8, 224 px, after one warm-up call, on all devices of a 'data' mesh. Part 2 compiles (does
not run) the train step at batch 16 for 224 and 448 px, float32 and bfloat16, remat off and on,
and prints `compiled.memory_analysis()`. On CPU the memory compiles skip LLVM optimisation
(xla_backend_optimization_level=0): buffer assignment, which the figures come from, is done
before it. Figures from a CPU compile describe XLA:CPU's fusion decisions, not a GPU's.
"""

import argparse
import functools
import json
import os
import sys
import time

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import voc12  # pylint: disable=wrong-import-position
from excam_jax.training import parallel  # pylint: disable=wrong-import-position
from excam_jax.training import optim as optim_lib
from excam_jax.training import start as start_lib
from excam_jax.training import steps as steps_lib
from excam_jax.models import network  # pylint: disable=wrong-import-position

NUM_CLASSES = 20
GIB = 2 ** 30
NOTES = """
Reading the memory table: 'arguments' is the donated state (ResNet-101 + head parameters and
SGD momentum, float32); 'aliased' is the part of the outputs that reuses it (donation works when
it equals 'outputs'); 'temporaries' holds the activations kept for the backward pass and the
scratch buffers. On XLA:CPU neither remat nor bfloat16 lowers the figure (remat is in the
program: the jaxpr holds one remat per residual block). Untested explanations: XLA:CPU may
compute bfloat16 convolutions in float32 with conversion buffers, and its scheduler may not
exploit the recomputation. Measure on a GPU with the same command before relying on either.
"""


def build(dtype='float32', remat=False, total_steps=1000):
  config = voc12.get_config()
  config.model.dtype = dtype
  config.model.remat = remat
  model = network.create_model(config.model, NUM_CLASSES)
  tx, _ = optim_lib.create_optimizer(config.optim, total_steps)
  return config, model, tx


def fake_batch(batch, size, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(batch, size, size, 3)).astype(np.float32),
          'label': (rng.random((batch, NUM_CLASSES)) < 0.1).astype(np.float32),
          'mask': np.ones(batch, np.float32)}


def _timed(fn, calls):
  jax.block_until_ready(fn())  # Warm-up: compilation and the first run.
  start = time.perf_counter()
  for _ in range(calls):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / calls


def time_steps(batch, size, steps, dtype='float32', remat=False):
  """Seconds per train step and per eval step."""
  config, model, tx = build(dtype, remat)
  mesh = parallel.data_mesh()
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  state = start_lib.compile_once(  # pylint: disable=protected-access
      functools.partial(steps_lib.create_state, model=model, tx=tx, image_size=size), replicated,
      jax.random.PRNGKey(0))
  data = parallel.global_batch(fake_batch(batch, size), sharded)
  step = steps_lib.make_train_step(config.optim, model, tx, mesh)
  holder = {'state': state}

  def train_once():
    holder['state'], metrics = step(holder['state'], data)
    return metrics['loss']

  train_s = _timed(train_once, steps)
  evaluate = steps_lib.make_eval_step(model, mesh)
  variables = {'params': holder['state'].params, 'batch_stats': holder['state'].batch_stats}
  eval_s = _timed(lambda: evaluate(variables, data['image']), steps)
  return train_s, eval_s


def memory(batch, size, dtype, remat):
  """compiled.memory_analysis() of the train step, from abstract inputs (nothing allocated)."""
  config, model, tx = build(dtype, remat)
  mesh = parallel.data_mesh()
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  abstract = jax.eval_shape(functools.partial(steps_lib.create_state, model=model, tx=tx,
                                              image_size=size), jax.random.PRNGKey(0))
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                       abstract)
  data = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharded)
          for k, v in fake_batch(batch, 32).items()}
  data['image'] = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32, sharding=sharded)
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else {}
  start = time.perf_counter()
  compiled = steps_lib.make_train_step(config.optim, model, tx, mesh).lower(state, data).compile(
      compiler_options=options)
  stats = compiled.memory_analysis()
  return stats, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--steps', type=int, default=3, help='timed calls after one warm-up')
  parser.add_argument('--memory_batch', type=int, default=16)
  parser.add_argument('--skip_memory', action='store_true')
  parser.add_argument('--out', default='', help='also write the tables to this markdown file')
  parser.add_argument('--json', action='store_true',
                      help='print only one JSON line with the step times (no memory tables)')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                      help='compute dtype of the timed steps (--json)')
  parser.add_argument('--remat', action='store_true', help='remat in the timed steps (--json)')
  args = parser.parse_args()
  if args.json:
    train_s, eval_s = time_steps(args.batch, args.size, args.steps, args.dtype, args.remat)
    stats = jax.devices()[0].memory_stats() or {}  # None on CPU.
    print(json.dumps({'train_s_per_step': train_s, 'eval_s_per_step': eval_s,
                      'train_images_per_s': args.batch / train_s,
                      'eval_images_per_s': args.batch / eval_s,
                      'batch': args.batch, 'size': args.size, 'dtype': args.dtype,
                      'remat': args.remat, 'timed_steps': args.steps,
                      'backend': jax.default_backend(), 'devices': jax.device_count(),
                      'device_kind': jax.devices()[0].device_kind,
                      'peak_device_gib': stats.get('peak_bytes_in_use', 0) / GIB or None,
                      'load_average': os.getloadavg()[0]}))
    return

  device = f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})'
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  lines = [f'Devices: {device}; jax {jax.__version__}; {os.cpu_count()} host cores, '
           f'load average at start {load}.', '',
           f'## Step time, ResNet-101 ex-CAM (M = 8, 20 classes), batch {args.batch}, '
           f'{args.size} px, float32', '',
           '| step | s / step | images / s |', '| --- | --- | --- |']
  train_s, eval_s = time_steps(args.batch, args.size, args.steps)
  for name, seconds in (('train', train_s), ('eval', eval_s)):
    lines.append(f'| {name} | {seconds:.3f} | {args.batch / seconds:.1f} |')
  print('\n'.join(lines), flush=True)

  if not args.skip_memory:
    table = ['', f'## XLA memory analysis of the train step, batch {args.memory_batch} (GiB)', '',
             '| px | dtype | remat | arguments | outputs | aliased | temporaries | '
             'peak (arg + out - alias + temp) | compile s |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    print('\n'.join(table), flush=True)
    for size in (224, 448):
      for dtype in ('float32', 'bfloat16'):
        for remat in (False, True):
          m, seconds = memory(args.memory_batch, size, dtype, remat)
          peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                  + m.temp_size_in_bytes)
          row = (f'| {size} | {dtype} | {"on" if remat else "off"} | '
                 f'{m.argument_size_in_bytes / GIB:.2f} | {m.output_size_in_bytes / GIB:.2f} | '
                 f'{m.alias_size_in_bytes / GIB:.2f} | {m.temp_size_in_bytes / GIB:.2f} | '
                 f'{peak / GIB:.2f} | {seconds:.0f} |')
          table.append(row)
          print(row, flush=True)
    lines += table
  command = 'python experiments/bench_resnet101.py ' + ' '.join(sys.argv[1:])
  if args.out:
    with open(args.out, 'w') as f:
      f.write('# ResNet-101 ex-CAM benchmark\n\nCommand: `' + command.strip() + '`\n\n')
      f.write('\n'.join(lines) + '\n' + NOTES)


if __name__ == '__main__':
  from excam_jax.runtime import xla  # pylint: disable=g-import-not-at-top
  xla.configure()  # What the package's commands do: the measured CPU flags, the cache.
  main()
