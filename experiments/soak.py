r"""Soak test of resuming: kill -9 a training run at random moments, resume, compare bitwise.

  python experiments/soak.py --workdir=/tmp/soak --kills=10 [--seed=0] [--epochs=10]

Trains configs/tiny.py (4 steps an epoch, 40 steps by default, a checkpoint every 2) once
without interruption in <workdir>/reference, then again in <workdir>/killed, sending SIGKILL
--kills times, in turn: at a random moment of the start-up (restore, compilation), right after a
random training step, and while a checkpoint is being written (as soon as Orbax's temporary
folder appears). After each kill the same command resumes. When the killed run has finished, its
final parameters, batch statistics and optimizer state must equal the reference's bit for bit.
Prints one JSON line with the figures; exit status 0 when equal, 1 otherwise.
Both runs share a JAX compilation cache in <workdir>/cache; rerunning the script reuses a
finished reference.
"""

import argparse
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ARGS = ['--config=configs/tiny.py', '--config.train.checkpoint_every_steps=2',
        '--config.train.eval_every_steps=1000', '--config.train.log_every_steps=1',
        '--config.train.keep_checkpoints=2']


def _env(cache):
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
             XLA_FLAGS='--xla_backend_optimization_level=0')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


STEPS_PER_EPOCH = 4  # configs/tiny.py: 32 images at batch 8.
_EPOCHS = [10]  # Set by --epochs.


def _last_step():
  return STEPS_PER_EPOCH * _EPOCHS[0]


def _start(workdir, env, log):
  return subprocess.Popen([sys.executable, '-m', 'excam_jax.main', *ARGS,
                           f'--config.train.num_epochs={_EPOCHS[0]}', f'--workdir={workdir}'],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)


def _finished(workdir):
  return os.path.isdir(os.path.join(workdir, 'checkpoints', str(_last_step())))


def _wait_for_save(workdir, proc, timeout):
  """Polls until a checkpoint is being written (its temporary folder exists) or the run ends."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if glob.glob(os.path.join(workdir, 'checkpoints', '*.orbax-checkpoint-tmp*')):
      return True
    time.sleep(0.005)
  return False


def _run_reference(workdir, env):
  if _finished(workdir):
    return 0.0
  start = time.time()
  with open(os.path.join(os.path.dirname(workdir), 'reference.log'), 'ab') as log:
    code = _start(workdir, env, log).wait()
  if code != 0:
    raise SystemExit(f'error: the reference run failed with status {code}; see reference.log.')
  return time.time() - start


def _log_text(path, offset):
  with open(path, 'rb') as f:
    f.seek(offset)
    return f.read().decode('utf-8', errors='replace')


def _wait_for_step(log_path, offset, step, proc, timeout):
  """Polls the run's log until it reports training step `step` (or the run ends)."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if re.search(rf'step {step}: ', _log_text(log_path, offset)):
      return True
    time.sleep(0.01)
  return False


def _kill_once(kind, workdir, proc, log_path, offset, rng, duration):
  """Waits for the moment of a `kind` kill, then sends SIGKILL; False if the run ended first."""
  if kind == 'startup':
    deadline = time.time() + rng.uniform(0.2, 6.0)
    while time.time() < deadline and proc.poll() is None:
      if 'Starting from' in _log_text(log_path, offset):
        break
      time.sleep(0.01)
  else:
    # After the start-up: a killed save's leftover temporary folder is cleaned by then.
    text = ''
    deadline = time.time() + duration
    while 'Starting from' not in text and time.time() < deadline and proc.poll() is None:
      text = _log_text(log_path, offset)
      time.sleep(0.01)
  if kind == 'during_save':
    _wait_for_save(workdir, proc, timeout=duration)
  elif kind == 'after_step':
    found = re.search(r'step (\d+) of \d+', text)
    first = int(found.group(1)) + 1 if found else 1
    last = max(first, min(first + 8, _last_step() - 1))
    _wait_for_step(log_path, offset, rng.randint(first, last), proc, duration)
    time.sleep(rng.uniform(0.0, 0.3))
  if proc.poll() is not None:
    return False
  proc.send_signal(signal.SIGKILL)
  return True


def _soak(workdir, env, kills, rng, duration):
  """Kills the run `kills` times, resumes after each; returns the figures of the kills."""
  kinds = ('startup', 'after_step', 'during_save')
  figures = {'kills': 0, **{f'kills_{k}': 0 for k in kinds}, 'starts': 0,
             'resumed_from_steps': []}
  log_path = os.path.join(os.path.dirname(workdir), 'killed.log')
  while not _finished(workdir):
    with open(log_path, 'ab') as log:
      log.write(f'\n--- start {figures["starts"] + 1}\n'.encode())
      log.flush()
      offset = log.tell()
      proc = _start(workdir, env, log)
      figures['starts'] += 1
      if figures['kills'] < kills:
        kind = kinds[figures['kills'] % len(kinds)]
        if _kill_once(kind, workdir, proc, log_path, offset, rng, duration):
          figures['kills'] += 1
          figures[f'kills_{kind}'] += 1
      code = proc.wait()
    if code not in (0, -signal.SIGKILL):
      raise SystemExit(f'error: a resumed run failed with status {code}; see {log_path}.')
    found = re.search(r'Starting from checkpoint at step (\d+)', _log_text(log_path, offset))
    if found:
      figures['resumed_from_steps'].append(int(found.group(1)))
  return figures


def _compare(reference, killed):
  from excam_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  ckpt_a = checkpoints.Checkpoints(reference, async_save=False)
  ckpt_b = checkpoints.Checkpoints(killed, async_save=False)
  try:
    want, got = ckpt_a.restore_numpy(_last_step()), ckpt_b.restore_numpy(_last_step())
  finally:
    ckpt_a.close()
    ckpt_b.close()
  leaves_a, leaves_b = jax.tree.leaves(want), jax.tree.leaves(got)
  same_tree = jax.tree.structure(want) == jax.tree.structure(got)
  differ = sum(not np.array_equal(a, b) for a, b in zip(leaves_a, leaves_b))
  return {'leaves': len(leaves_a), 'leaves_differing': differ,
          'bitwise_equal': bool(same_tree and differ == 0)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--kills', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--epochs', type=int, default=10, help='Length of the run (4 steps each).')
  args = parser.parse_args()
  if args.kills < 0 or args.epochs < 1:
    parser.error('--kills must be >= 0 and --epochs >= 1')
  _EPOCHS[0] = args.epochs
  os.makedirs(args.workdir, exist_ok=True)
  env = _env(os.path.join(os.path.abspath(args.workdir), 'cache'))
  reference = os.path.join(os.path.abspath(args.workdir), 'reference')
  killed = os.path.join(os.path.abspath(args.workdir), 'killed')
  if os.path.isdir(killed):
    raise SystemExit(f'error: {killed} exists from an earlier soak; delete it to start again.')
  started = time.time()
  took = _run_reference(reference, env)
  duration = max(took, 30.0)  # Bounds every wait for a moment to kill at.
  figures = _soak(killed, env, args.kills, random.Random(args.seed), duration)
  figures.update(_compare(reference, killed))
  figures.update(seed=args.seed, steps=_last_step(), reference_seconds=round(took, 1),
                 total_seconds=round(time.time() - started, 1))
  print(json.dumps(figures))
  sys.exit(0 if figures['bitwise_equal'] else 1)


if __name__ == '__main__':
  main()
