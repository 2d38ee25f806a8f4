"""Multi-host: two processes on loopback compute the losses of one process on the same global batch.

Each worker calls parallel.initialize (jax.distributed.initialize on 127.0.0.1), feeds only its
own slice of every global batch, and trains PooledNet on the global mesh of both processes' CPU
devices. The reference runs here, in one process, on whole global batches. The global batches
come from the data pipeline; the workers read them from a file and take the slice that
pipeline.train_batches gives their process (checked below), which keeps TensorFlow out of them.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from configs import tiny
from excam_jax.training import parallel
from excam_jax.training import optim as optim_lib
from excam_jax.training import steps as steps_lib
from train_test import PooledNet, step_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
WORKER = """
import sys
import jax, numpy as np
from configs import tiny
from multihost_test import local_slices, run_steps
from excam_jax.training import parallel

config = tiny.get_config()
config.train.distributed.update({'enabled': True, 'coordinator_address': sys.argv[1],
                           'num_processes': 2, 'process_id': int(sys.argv[2])})
parallel.initialize(config)
assert jax.process_count() == 2 and jax.device_count() == 2
batches = local_slices(sys.argv[3], jax.process_index(), jax.process_count())
losses, leaves = run_steps(config, batches)
np.savez(sys.argv[4], losses=losses, *leaves)
"""


def global_batches(config, path):
  """Writes the first STEPS global training batches of `config` to `path` (.npz)."""
  from excam_jax.data import pipeline  # pylint: disable=g-import-not-at-top  # Not in workers.
  batches = pipeline.train_batches(config)
  arrays = {}
  for i in range(STEPS):
    batch = next(batches)
    arrays.update({f'{key}_{i}': batch[key] for key in steps_lib.TRAIN_KEYS})
  np.savez(path, **arrays)


def local_slices(path, process_index, process_count):
  """This process's rows of each saved global batch: the contiguous slice in process order."""
  data = np.load(path)
  for i in range(STEPS):
    batch = {key: data[f'{key}_{i}'] for key in steps_lib.TRAIN_KEYS}
    rows = len(batch['mask']) // process_count
    yield {k: v[process_index * rows:(process_index + 1) * rows] for k, v in batch.items()}


def run_steps(config, local_batches):
  """STEPS training steps on the global mesh; returns the losses and the final parameters."""
  model = PooledNet(num_classes=config.data.parts.num_classes, dropout=0.5)
  step_cfg = step_config()
  tx, _ = optim_lib.create_optimizer(step_cfg, total_steps=10)
  mesh = parallel.data_mesh()
  step = steps_lib.make_train_step(step_cfg, model, tx, mesh)
  state = steps_lib.create_state(jax.random.PRNGKey(0), model=model, tx=tx, image_size=4)
  state = jax.device_put(state, parallel.replicated(mesh))
  batches = parallel.prefetch(local_batches, parallel.batch_sharded(mesh), steps_lib.TRAIN_KEYS)
  losses = []
  for batch in batches:
    assert batch['image'].shape[0] == config.train.batch_size  # The global batch, whatever the split.
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert len(losses) == STEPS
  return np.array(losses), [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  config = tiny.get_config()
  data = str(tmp_path / 'batches.npz')
  global_batches(config, data)
  address = f'127.0.0.1:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests')]))
  env.pop('XLA_FLAGS', None)
  outputs = [str(tmp_path / f'worker{i}.npz') for i in range(2)]
  workers = [subprocess.Popen([sys.executable, '-c', WORKER, address, str(i), data, outputs[i]],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
  want_losses, want_leaves = run_steps(config, local_slices(data, 0, 1))  # The reference.
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


def test_pipeline_gives_each_process_its_contiguous_slice():
  """The slicing the workers above use is the one pipeline.train_batches does per process."""
  from excam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  whole = next(pipeline.train_batches(config, start_step=1))
  halves = [next(pipeline.train_batches(config, start_step=1, process_index=i, process_count=2))
            for i in range(2)]
  assert halves[0]['image'].shape[0] == config.train.batch_size // 2
  for key in steps_lib.TRAIN_KEYS:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
