r"""excam-jax against the same network in plain PyTorch, on the same CPU, alternated in one sitting.

  pip install -r requirements-bench.txt       # torch and torchvision; the package never needs them
  python experiments/bench_vs_torch.py                     # every work, 2 rounds
  python experiments/bench_vs_torch.py --works=default --rounds=3
  python experiments/bench_vs_torch.py --check             # fast path against plain path only

Works (each a train step with SGD update and an eval forward pass, inputs random, timed after
warm-up):
  r101       ResNet-101 ex-CAM (configs/voc12.py: output stride 32, M = 8, 20 classes), batch 8,
             224 px, float32.
  r101_bf16  the same in bfloat16: model.dtype='bfloat16' here, torch.autocast(bfloat16) there.
  default    configs/synthetic.py's model (ResNet-18, width 8, output stride 8, M = 2, 6
             classes), batch 32, 96 px, float32.

Variants: `jax` (the package's defaults: model.conv_impl='auto', i.e. 1x1 convolutions as
matmuls on CPU, and the XLA flags the package sets on this CPU), `jax_plain` (conv_impl='xla', XLA_FLAGS empty, EXCAM_XLA_DEFAULTS=0) and `torch`
(torchvision's resnet101 for r101; for the width-8, dilated ResNet-18, which torchvision cannot
build, a torchvision-layout BasicBlock ResNet written here), each with the same WILDCAT head:
1x1 conv to C*M maps, ex-CAM sequential dropout (self_drop as configured, hard masks with the
sigmoid straight-through gradient), class-wise mean, top-k/bottom-k pooling, sigmoid BCE.
torch uses `--threads` intra-op threads (default: the number of cores, as XLA:CPU does).

Every (work, variant) runs in its own process, in the order A B C A B C ..., `--rounds` times;
the medians of each variant's per-process medians and the ratios to torch are printed. `--check`
(also run before the timings) compares the fast and the plain path in one process on a small
ResNet (loss and gradients, largest relative error printed).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKS = ('r101', 'r101_bf16', 'default')
VARIANTS = ('jax', 'jax_plain', 'torch')


def work_settings(work):
  """(config module, batch, image size, num classes, dtype) of a work."""
  return {'r101': ('voc12', 8, 224, 20, 'float32'),
          'r101_bf16': ('voc12', 8, 224, 20, 'bfloat16'),
          'default': ('synthetic', 32, 96, 6, 'float32')}[work]


def _config(work):
  from configs import synthetic, voc12  # pylint: disable=g-import-not-at-top
  name, *_ = work_settings(work)
  return (voc12 if name == 'voc12' else synthetic).get_config()


def fake_batch(batch, size, classes, seed=0):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(batch, size, size, 3)).astype(np.float32),
          (rng.random((batch, classes)) < 0.3).astype(np.float32))


def _timed(fn, steps, warmup):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


# ------------------------------------------------------------------------------------------------
# JAX worker.

def jax_worker(work, steps, warmup, plain):
  """Median s/step of the train and eval steps of our model, and the first step's loss."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from excam_jax.training import parallel  # pylint: disable=g-import-not-at-top
  from excam_jax.training import optim as optim_lib
  from excam_jax.training import steps as steps_lib
  from excam_jax.models import network  # pylint: disable=g-import-not-at-top
  _, batch, size, classes, dtype = work_settings(work)
  config = _config(work)
  config.model.dtype = dtype
  if plain:
    config.model.conv_impl = 'xla'
  model = network.create_model(config.model, classes)
  tx, _ = optim_lib.create_optimizer(config.optim, 1000)
  mesh = parallel.data_mesh()
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  state = jax.jit(functools.partial(steps_lib.create_state, model=model, tx=tx, image_size=size),
                  out_shardings=replicated)(jax.random.PRNGKey(0))
  images, labels = fake_batch(batch, size, classes)
  data = parallel.global_batch({'image': images, 'label': labels,
                                'mask': np.ones(batch, np.float32)}, sharded)
  step = steps_lib.make_train_step(config.optim, model, tx, mesh)
  holder = {'state': state}
  start = time.perf_counter()
  holder['state'], metrics = step(state, data)
  first_loss = float(metrics['loss'])
  compile_s = time.perf_counter() - start

  def train_once():
    holder['state'], out = step(holder['state'], data)
    jax.block_until_ready(out)

  train_s = _timed(train_once, steps, warmup)
  evaluate = steps_lib.make_eval_step(model, mesh)
  variables = {'params': holder['state'].params, 'batch_stats': holder['state'].batch_stats}
  eval_s = _timed(lambda: jax.block_until_ready(evaluate(variables, data['image'])), steps,
                  warmup + 1)
  return {'train_s': train_s, 'eval_s': eval_s, 'first_loss': first_loss,
          'first_call_s': compile_s}


def check_fast_path(depths=(18, 50), size=64, batch=4):
  """Loss and gradients of the fast paths against conv_impl='xla' on small ResNets.

  The WILDCAT head, not ex-CAM's: ex-CAM's hard drop masks flip where a map crosses the
  threshold, so float32 round-off alone changes its gradients; the trunk is what differs.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  from excam_jax.models import losses, network  # pylint: disable=g-import-not-at-top
  images, labels = fake_batch(batch, size, 6)
  rows = []
  for depth in depths:
    config = synthetic.get_config()
    config.model.update(depth=depth, head='wildcat')
    results = {}
    for impl in ('xla', 'dot1x1', 'matmul'):
      config.model.conv_impl = impl
      model = network.create_model(config.model, 6)
      variables = model.init(jax.random.PRNGKey(0), images[:1])

      def loss_fn(params, model=model, variables=variables):
        (logits, _), _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                     images, train=True, mutable=['batch_stats'])
        return losses.bce_loss(logits, labels, jnp.ones(batch))

      results[impl] = jax.value_and_grad(loss_fn)(variables['params'])
    loss_a, grad_a = results['xla']
    for impl in ('dot1x1', 'matmul'):
      loss_b, grad_b = results[impl]
      errors = [float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
                for a, b in zip(jax.tree.leaves(grad_a), jax.tree.leaves(grad_b))]
      rows.append({'depth': depth, 'impl': impl,
                   'loss_rel_error': abs(float(loss_a - loss_b)) / abs(float(loss_a)),
                   'grad_max_rel_error': max(errors),
                   'grad_median_rel_error': statistics.median(errors), 'tensors': len(errors)})
  return rows


# ------------------------------------------------------------------------------------------------
# PyTorch worker.

def torch_worker(work, steps, warmup, threads):
  """The same model and step in PyTorch: median s/step of train and eval, first loss."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  _, batch, size, classes, dtype = work_settings(work)
  m = _config(work).model

  class BasicBlock(nn.Module):
    """torchvision's BasicBlock, with the dilation it refuses."""

    def __init__(self, cin, cout, stride, dilation, first_dilation):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, first_dilation, first_dilation, bias=False)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.down = None
      if stride != 1 or cin != cout:
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout))

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return torch.relu(y + (x if self.down is None else self.down(x)))

  def small_resnet18(width, output_stride):
    dilate = {32: (), 16: (4,), 8: (3, 4)}[output_stride]
    layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin, dilation = width, 1
    for stage in range(1, 5):
      cout, stride = width * 2 ** (stage - 1), 1 if stage == 1 else 2
      first = dilation
      if stage in dilate:
        dilation, stride = dilation * stride, 1
      layers += [BasicBlock(cin, cout, stride, dilation, first),
                 BasicBlock(cout, cout, 1, dilation, dilation)]
      cin = cout
    return nn.Sequential(*layers), cin

  if m.depth == 101:
    dilate = {32: [False, False, False], 16: [False, False, True],
              8: [False, True, True]}[m.output_stride]
    net = torchvision.models.resnet101(weights=None, replace_stride_with_dilation=dilate)
    trunk, features = nn.Sequential(*list(net.children())[:-2]), 2048
  else:
    trunk, features = small_resnet18(m.width, m.output_stride)
  num_maps, t = m.num_maps, 0.0  # t = logit(0.5)

  class Head(nn.Module):
    def __init__(self):
      super().__init__()
      self.classifier = nn.Conv2d(features, classes * num_maps, 1)

    def forward(self, x):
      maps = self.classifier(x).float()
      b, _, h, w = maps.shape
      maps = maps.view(b, classes, num_maps, h, w)
      hard = (maps <= t).float()
      soft = 1 - torch.sigmoid(maps - t)
      masks = soft + (hard - soft).detach()
      out = [(1 - masks[:, :, 0]) * maps[:, :, 0]]
      product = masks[:, :, 0]
      for j in range(1, num_maps):
        if m.self_drop:
          product = product * masks[:, :, j]
          out.append(product * maps[:, :, j])
        else:
          out.append(product * maps[:, :, j])
          product = product * masks[:, :, j]
      cells = torch.stack(out, 2).mean(2).view(b, classes, h * w)
      k = max(1, int(round(m.kmax * h * w)))
      top = cells.topk(k, -1).values.mean(-1)
      bottom = -(-cells).topk(k, -1).values.mean(-1)
      return (top + m.alpha * bottom) / 2

  model = nn.Sequential(trunk, Head()).to(memory_format=torch.channels_last)
  images, labels = fake_batch(batch, size, classes)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  y = torch.from_numpy(labels)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
  loss_fn = nn.BCEWithLogitsLoss()
  autocast = dtype == 'bfloat16'

  def train_once():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
      logits = model(x)
    loss = loss_fn(logits.float(), y)
    loss.backward()
    optimizer.step()
    return float(loss)

  model.train()
  start = time.perf_counter()
  first_loss = train_once()
  first_s = time.perf_counter() - start
  train_s = _timed(train_once, steps, warmup)
  model.eval()

  def eval_once():
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
      model(x).float().sum().item()

  eval_s = _timed(eval_once, steps, warmup + 1)
  return {'train_s': train_s, 'eval_s': eval_s, 'first_loss': first_loss,
          'first_call_s': first_s, 'threads': threads}


# ------------------------------------------------------------------------------------------------
# Orchestration.

def run_worker(work, variant, args):
  """One (work, variant) in its own process; returns its JSON figures."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  if variant == 'jax_plain':
    env.update(XLA_FLAGS='', EXCAM_XLA_DEFAULTS='0')
  command = [sys.executable, os.path.abspath(__file__), f'--worker={variant}', f'--works={work}',
             f'--steps={args.steps}', f'--warmup={args.warmup}', f'--threads={args.threads}']
  out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
  lines = [line for line in out.stdout.splitlines() if line.startswith('{')]
  if out.returncode or not lines:
    sys.exit(f'{variant} on {work} failed (exit {out.returncode}):\n{out.stderr[-3000:]}')
  return json.loads(lines[-1])


def table(results, works):
  lines = ['| work | step | jax s | jax_plain s | torch s | jax / torch | jax_plain / torch | '
           'plain / jax |', '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for work in works:
    for step in ('train_s', 'eval_s'):
      med = {v: statistics.median(r[step] for r in results[work][v]) for v in VARIANTS}
      lines.append(f'| {work} | {step[:-2]} | {med["jax"]:.3f} | {med["jax_plain"]:.3f} | '
                   f'{med["torch"]:.3f} | {med["jax"] / med["torch"]:.2f} | '
                   f'{med["jax_plain"] / med["torch"]:.2f} | '
                   f'{med["jax_plain"] / med["jax"]:.2f} |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--works', default=','.join(WORKS), help=f'comma list of {WORKS}')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--steps', type=int, default=5, help='timed steps per process')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps after the first')
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--check', action='store_true', help='only the fast/plain agreement check')
  parser.add_argument('--out', default='', help='also write the table to this markdown file')
  parser.add_argument('--worker', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  works = args.works.split(',')
  if set(works) - set(WORKS):
    parser.error(f'unknown works {sorted(set(works) - set(WORKS))}; choose from {WORKS}')
  if args.worker:
    work = works[0]
    if args.worker == 'torch':
      figures = torch_worker(work, args.steps, args.warmup, args.threads)
    else:
      figures = jax_worker(work, args.steps, args.warmup, plain=args.worker == 'jax_plain')
    print(json.dumps(figures))
    return
  print('fast paths against plain (conv_impl=xla), loss and every gradient tensor:')
  for row in check_fast_path():
    print('  ' + json.dumps(row), flush=True)
  if args.check:
    return
  results = {w: {v: [] for v in VARIANTS} for w in works}
  for round_ in range(args.rounds):
    for work in works:
      for variant in VARIANTS:
        figures = run_worker(work, variant, args)
        results[work][variant].append(figures)
        print(f'round {round_ + 1} {work} {variant}: {json.dumps(figures)}', flush=True)
  text = table(results, works)
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  header = (f'{os.cpu_count()} cores, load average at the end {load}; {args.rounds} rounds of '
            f'{args.steps} timed steps after {args.warmup + 1} untimed; torch threads '
            f'{args.threads}. Ratios > 1: slower than torch.')
  print(header + '\n\n' + text)
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      f.write(f'`python experiments/bench_vs_torch.py {" ".join(sys.argv[1:])}`\n\n{header}\n\n'
              f'{text}\n')


if __name__ == '__main__':
  from excam_jax.runtime import xla  # pylint: disable=g-import-not-at-top
  xla.configure()  # What the package's commands do: the measured CPU flags, the cache.
  main()
