r"""Times the default synthetic model's train step under XLA:CPU flag variants, alternated.

  python experiments/bench_xla_flags.py [--rounds=2] [--steps=20] [--variants=plain,matmul]

Each variant, an XLA_FLAGS value and a config.model.conv_impl, runs in its own process (XLA_FLAGS
must be set before JAX starts), in the order A B C A B C ... The script prints each measurement
and the median seconds per step, the first call (compile) time and the loss after the timed
steps, so a variant that changes the numbers shows it. The model is configs/synthetic.py's (ResNet-18, width 8, output stride 8, 96 px,
batch 32) on random inputs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

YNN = '--xla_cpu_experimental_ynn_fusion_type='
# name: (XLA_FLAGS, config.model.conv_impl). 'plain' is the reference of the ratios.
VARIANTS = {
    'plain': ('', 'xla'),
    'ynn+individual_convolution': (YNN + '+individual_convolution', 'xla'),
    'ynn-individual_convolution': (YNN + '-individual_convolution', 'xla'),
    'dot1x1': ('', 'dot1x1'),
    'matmul': ('', 'matmul'),
    'matmul&ynn-individual_convolution': (YNN + '-individual_convolution', 'matmul'),
}

WORKER = r'''
import functools, json, sys, time
import jax, numpy as np
from configs import synthetic
from excam_jax.training import parallel
from excam_jax import train
from excam_jax.training import optim as optim_lib
from excam_jax.training import steps as steps_lib
from excam_jax.models import network
steps = int(sys.argv[1])
config = synthetic.get_config()
config.model.conv_impl = sys.argv[2]
model = network.create_model(config.model, config.data.parts.num_classes)
tx, _ = optim_lib.create_optimizer(config.optim, 1000)
mesh = parallel.data_mesh()
replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
size, b, c = config.data.image_size, config.train.batch_size, config.data.parts.num_classes
state = jax.jit(functools.partial(steps_lib.create_state, model=model, tx=tx, image_size=size),
                out_shardings=replicated)(jax.random.PRNGKey(0))
rng = np.random.default_rng(0)
batch = parallel.global_batch({
    'image': rng.normal(size=(b, size, size, 3)).astype(np.float32),
    'label': (rng.random((b, c)) < 0.3).astype(np.float32),
    'mask': np.ones(b, np.float32)}, sharded)
step = steps_lib.make_train_step(config.optim, model, tx, mesh)
start = time.perf_counter()
state, metrics = step(state, batch)
first_loss = float(metrics['loss'])
first = time.perf_counter() - start
for _ in range(3):
  state, metrics = step(state, batch)
jax.block_until_ready(metrics)
start = time.perf_counter()
for _ in range(steps):
  state, metrics = step(state, batch)
jax.block_until_ready(metrics)
print(json.dumps({'s_per_step': (time.perf_counter() - start) / steps, 'first_call_s': first,
                  'first_loss': first_loss, 'loss': float(metrics['loss'])}))
'''


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help=f'comma list of: {", ".join(VARIANTS)} (give "plain" first)')
  args = parser.parse_args()
  names = args.variants.split(',')
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    parser.error(f'unknown variants {unknown}; choose from {list(VARIANTS)}')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  results = {name: [] for name in names}
  for round_ in range(args.rounds):
    for name in names:
      flags, impl = VARIANTS[name]
      env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=flags, EXCAM_XLA_DEFAULTS='0')
      out = subprocess.run([sys.executable, '-c', WORKER, str(args.steps), impl], cwd=repo, env=env,
                           capture_output=True, text=True, check=True)
      figures = json.loads(out.stdout.strip().splitlines()[-1])
      results[name].append(figures)
      print(f'round {round_ + 1} {name}: {json.dumps(figures)}', flush=True)
  base_name = names[0]
  base = statistics.median(r['s_per_step'] for r in results[base_name])
  print(f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
  for name, runs in results.items():
    median = statistics.median(r['s_per_step'] for r in runs)
    loss = runs[0]['first_loss']
    ref = results[base_name][0]['first_loss']
    rel = abs(loss - ref) / abs(ref)
    print(f'{name}: {median:.3f} s/step ({base_name} / this = {base / median:.2f}), first-step '
          f'loss {loss:.7f} (relative difference from {base_name} {rel:.1e})')


if __name__ == '__main__':
  main()
