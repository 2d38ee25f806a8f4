r"""Times a train step under XLA:CPU flag variants, alternated.

  python experiments/bench_xla_flags.py [--work=default|r101] [--rounds=2] [--steps=20]
      [--variants=default,onednn_dot,...]

Each variant, an XLA_FLAGS value, a config.model.conv_impl and a config.model.norm_impl, runs in its own process (XLA_FLAGS
must be set before JAX starts), in the order A B C A B C ... The script prints each measurement
and the median seconds per step, the first call (compile) time, the first-step loss (so a variant
that changes the numbers shows it) and what the flags changed in the compiled step: how many
oneDNN, YNNPACK and XNNPACK fusions and custom calls it holds and how many convolutions XLA still
runs itself. The first variant named is the reference of the ratios.

Works: `default` is configs/synthetic.py's model (ResNet-18, width 8, output stride 8, 96 px,
batch 32); `r101` is configs/voc12.py's (ResNet-101 ex-CAM, 224 px, batch 8). Inputs are random.

Variants whose name starts with `+` in VARIANTS below add their flags to the package's own
default flags for this CPU (`runtime.xla.default_cpu_flags()`) and run the default `conv_impl`
('auto'); the others set XLA_FLAGS exactly.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys

from excam_jax.runtime import xla

YNN = '--xla_cpu_experimental_ynn_fusion_type='
# name: (XLA_FLAGS, config.model.conv_impl[, config.model.norm_impl ('flax' when absent)]).
ONEDNN = '--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type='
VARIANTS = {
    # The package's defaults (flags for this CPU, conv_impl 'auto') and single changes to them.
    'default': ('+', 'auto'),
    'onednn_dot': ('+' + ONEDNN + 'dot', 'auto'),
    'onednn_dot_eltwise': ('+' + ONEDNN + 'dot,eltwise', 'auto'),
    'onednn_dot_eltwise_reduce': ('+' + ONEDNN + 'dot,eltwise,reduce', 'auto'),
    'onednn_custom_call': ('+--xla_cpu_experimental_onednn_custom_call=true', 'auto'),
    'fast_runtime': ('+--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME', 'auto'),
    'sched_concurrency': ('+--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED',
                          'auto'),
    'sched_memory': ('+--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED', 'auto'),
    'vector512': ('+--xla_cpu_prefer_vector_width=512', 'auto'),  # AVX-512 CPUs only.
    'xnn_graph_greedy': ('+--xla_cpu_experimental_xnn_graph_fusion_mode='
                         'XNN_GRAPH_FUSION_MODE_GREEDY', 'auto'),
    # The fused BatchNorm (config.model.norm_impl='fused', models/batchnorm.py).
    'fused_bn': ('+', 'auto', 'fused'),
    'fused_bn_onednn_mixed': ('+', 'onednn_mixed', 'fused'),
    # Exact flag sets (EXCAM_XLA_DEFAULTS=0), the first attempts' variants.
    'plain': ('', 'xla'),
    'ynn+individual_convolution': (YNN + '+individual_convolution', 'xla'),
    'ynn-individual_convolution': (YNN + '-individual_convolution', 'xla'),
    'dot1x1': ('', 'dot1x1'),
    'matmul': ('', 'matmul'),
    'matmul&ynn-individual_convolution': (YNN + '-individual_convolution', 'matmul'),
}

WORKER = r'''
import functools, json, re, sys, time
import jax, numpy as np
from configs import synthetic, voc12
from excam_jax.training import parallel
from excam_jax.training import optim as optim_lib
from excam_jax.training import steps as steps_lib
from excam_jax.models import network
steps, impl, work, norm = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
config = (voc12 if work == 'r101' else synthetic).get_config()
config.model.conv_impl = impl
config.model.norm_impl = norm
b, size = (8, 224) if work == 'r101' else (config.train.batch_size, config.data.image_size)
c = 20 if work == 'r101' else config.data.parts.num_classes
model = network.create_model(config.model, c)
tx, _ = optim_lib.create_optimizer(config.optim, 1000)
mesh = parallel.data_mesh()
replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
state = jax.jit(functools.partial(steps_lib.create_state, model=model, tx=tx, image_size=size),
                out_shardings=replicated)(jax.random.PRNGKey(0))
rng = np.random.default_rng(0)
batch = parallel.global_batch({
    'image': rng.normal(size=(b, size, size, 3)).astype(np.float32),
    'label': (rng.random((b, c)) < 0.3).astype(np.float32),
    'mask': np.ones(b, np.float32)}, sharded)
start = time.perf_counter()
step = steps_lib.make_train_step(config.optim, model, tx, mesh).lower(state, batch).compile()
text = step.as_text()
state, metrics = step(state, batch)
first_loss = float(metrics['loss'])
first = time.perf_counter() - start
for _ in range(2):
  state, metrics = step(state, batch)
jax.block_until_ready(metrics)
start = time.perf_counter()
for _ in range(steps):
  state, metrics = step(state, batch)
jax.block_until_ready(metrics)
ops = {name: len(re.findall(pattern, text)) for name, pattern in (
    ('onednn_fusions', r'%onednn_fusion[.0-9]* = '), ('ynn_fusions', r'%ynn_fusion[.0-9]* = '),
    ('xnn_fusions', r'%xnn_fusion[.0-9]* = '), ('custom_calls', r' custom-call\('),
    ('xla_convolutions', r' convolution\('))}
print(json.dumps({'s_per_step': (time.perf_counter() - start) / steps, 'first_call_s': first,
                  'first_loss': first_loss, 'loss': float(metrics['loss']), 'ops': ops}))
'''


def _signal_name(returncode):
  """'SIGILL' for a process killed by signal 4 (returncode -4); 'error' for a plain exit."""
  if returncode < 0:
    try:
      return signal.Signals(-returncode).name
    except ValueError:
      return f'signal {-returncode}'
  return 'error'


def variant_flags(name):
  """(XLA_FLAGS, conv_impl, norm_impl) of a variant, the package's defaults for this CPU put in
  for '+'."""
  flags, impl, norm = (VARIANTS[name] + ('flax',))[:3]
  if flags.startswith('+'):
    flags = ' '.join(xla.default_cpu_flags() + flags[1:].split())
  return flags, impl, norm


def cpu_model():
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      name = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')),
                  'unknown')
  except OSError:
    return 'unknown'
  flags = xla._cpu_flags()  # pylint: disable=protected-access
  return f'{name}, {"AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"}'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--work', default='default', choices=('default', 'r101'))
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help=f'comma list of: {", ".join(VARIANTS)} (the first is the reference)')
  args = parser.parse_args()
  names = args.variants.split(',')
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    parser.error(f'unknown variants {unknown}; choose from {list(VARIANTS)}')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  print(f'CPU: {cpu_model()}; package default flags here: {xla.default_cpu_flags() or "none"}')
  results = {name: [] for name in names}
  failed = {}
  for round_ in range(args.rounds):
    for name in names:
      flags, impl, norm = variant_flags(name)
      env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=flags, EXCAM_XLA_DEFAULTS='0')
      out = subprocess.run([sys.executable, '-c', WORKER, str(args.steps), impl, args.work, norm],
                           cwd=repo, env=env, capture_output=True, text=True, check=False)
      if out.returncode != 0:  # A variant that crashes is a result too; the others go on.
        why = (out.stderr.strip().splitlines() or [''])[-1][:200]
        failed[name] = f'exit {out.returncode} ({_signal_name(out.returncode)}): {why}'
        print(f'round {round_ + 1} {name}: failed, {failed[name]}', flush=True)
        continue
      figures = json.loads(out.stdout.strip().splitlines()[-1])
      results[name].append(figures)
      print(f'round {round_ + 1} {name}: {json.dumps(figures)}', flush=True)
  base_name = names[0]
  print(f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
  for name, why in failed.items():
    print(f'{name}: FAILED in at least one round, {why}; XLA_FLAGS="{variant_flags(name)[0]}"')
  if not results[base_name]:
    return 1
  base = statistics.median(r['s_per_step'] for r in results[base_name])
  for name, runs in results.items():
    if not runs:
      continue
    median = statistics.median(r['s_per_step'] for r in runs)
    loss = runs[0]['first_loss']
    ref = results[base_name][0]['first_loss']
    rel = abs(loss - ref) / abs(ref)
    print(f'{name}: {median:.3f} s/step ({base_name} / this = {base / median:.2f}), first-step '
          f'loss {loss:.7f} (relative difference from {base_name} {rel:.1e}), compiled step '
          f'{runs[0]["ops"]}; XLA_FLAGS="{variant_flags(name)[0]}"')


if __name__ == '__main__':
  sys.exit(main())
