"""Multi-host: two processes on loopback compute the losses of one process on the same global batch.

Each worker calls parallel.initialize (jax.distributed.initialize on 127.0.0.1), reads its own
half of every global batch from the data pipeline, and trains PooledNet on the global mesh of
both processes' CPU devices. The reference runs here, in one process, on whole global batches.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from configs import tiny
from excam_jax import parallel
from excam_jax import train
from excam_jax.data import pipeline
from train_test import PooledNet, step_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
WORKER = """
import sys
import jax, numpy as np
from configs import tiny
from multihost_test import STEPS, run_steps
from excam_jax import parallel

config = tiny.get_config()
config.distributed.update({'enabled': True, 'coordinator_address': sys.argv[1],
                           'num_processes': 2, 'process_id': int(sys.argv[2])})
parallel.initialize(config)
assert jax.process_count() == 2 and jax.device_count() == 2
losses, leaves = run_steps(config, jax.process_index(), jax.process_count())
np.savez(sys.argv[3], losses=losses, *leaves)
"""


def run_steps(config, process_index, process_count):
  """STEPS training steps on the global mesh; returns the losses and the final parameters."""
  model = PooledNet(num_classes=config.parts.num_classes, dropout=0.5)
  step_cfg = step_config()
  tx, _ = train.create_optimizer(step_cfg, total_steps=10)
  mesh = parallel.data_mesh()
  step = train.make_train_step(step_cfg, model, tx, mesh)
  state = train.create_state(jax.random.PRNGKey(0), model=model, tx=tx, image_size=4)
  state = jax.device_put(state, parallel.replicated(mesh))
  batches = parallel.prefetch(
      pipeline.train_batches(config, process_index=process_index, process_count=process_count),
      parallel.batch_sharded(mesh), train.TRAIN_KEYS)
  losses = []
  for _ in range(STEPS):
    batch = next(batches)
    assert batch['image'].shape[0] == config.batch_size  # The global batch, whatever the split.
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return np.array(losses), [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  address = f'127.0.0.1:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests')]))
  env.pop('XLA_FLAGS', None)
  outputs = [str(tmp_path / f'worker{i}.npz') for i in range(2)]
  workers = [subprocess.Popen([sys.executable, '-c', WORKER, address, str(i), outputs[i]],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
  want_losses, want_leaves = run_steps(tiny.get_config(), 0, 1)  # Meanwhile, the reference.
  for worker in workers:
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 0, stderr[-3000:]
  for path in outputs:
    out = np.load(path)
    np.testing.assert_allclose(out['losses'], want_losses, rtol=1e-5)
    got_leaves = [out[f'arr_{i}'] for i in range(len(want_leaves))]
    for got, want in zip(got_leaves, want_leaves):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert len(set(np.round(want_losses, 6))) == STEPS  # Different batches, a moving model.


def test_worker_split_is_half_the_global_batch():
  config = tiny.get_config()
  whole = next(pipeline.train_batches(config))
  halves = [next(pipeline.train_batches(config, process_index=i, process_count=2))
            for i in range(2)]
  assert halves[0]['image'].shape[0] == config.batch_size // 2
  np.testing.assert_array_equal(np.concatenate([h['label'] for h in halves]), whole['label'])
