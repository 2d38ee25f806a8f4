"""Data parallelism: 1 and 8 simulated CPU devices give the same losses and parameters.

The device count is fixed when JAX starts, so the comparison runs in a subprocess started with
--xla_force_host_platform_device_count=8; it trains on a one-device mesh and on the eight-device
mesh from the same state and batches.
"""

import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import sys
import jax, numpy as np
from jax.sharding import Mesh
from excam_jax.training import parallel
from excam_jax import train
from excam_jax.training import optim as optim_lib
from excam_jax.training import steps as steps_lib
from train_test import PooledNet, random_batch, step_config

assert jax.device_count() == 8
model = PooledNet(dropout=0.5)  # Dropout: the step's keys must not depend on the sharding.
config = step_config()
tx, _ = optim_lib.create_optimizer(config, total_steps=10)
out = {}
for devices in (jax.devices()[:1], jax.devices()):
  mesh = Mesh(np.asarray(devices), ('data',))
  step = steps_lib.make_train_step(config, model, tx, mesh)
  state = steps_lib.create_state(jax.random.PRNGKey(0), model=model, tx=tx, image_size=4)
  state = jax.device_put(state, parallel.replicated(mesh))
  losses = []
  for i in range(3):
    batch = parallel.global_batch(random_batch(i, batch=16), parallel.batch_sharded(mesh))
    assert len(batch['image'].addressable_shards) == len(devices)
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert len(state.params['head']['kernel'].sharding.device_set) == len(devices)
  n = len(devices)
  out[f'loss_{n}'] = np.array(losses)
  for i, leaf in enumerate(jax.tree.leaves((state.params, state.batch_stats))):
    out[f'leaf{i}_{n}'] = np.asarray(leaf)
np.savez(sys.argv[1], **out)
"""


def test_one_and_eight_devices_agree(tmp_path):
  path = str(tmp_path / 'result.npz')
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8',
             PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests')]))
  result = subprocess.run([sys.executable, '-c', SCRIPT, path], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  out = np.load(path)
  np.testing.assert_allclose(out['loss_8'], out['loss_1'], rtol=1e-5)
  assert not np.allclose(out['loss_1'][0], out['loss_1'][2])  # The steps did train.
  leaves = sorted(k[:-2] for k in out.files if k.startswith('leaf') and k.endswith('_1'))
  assert len(leaves) == 6  # head kernel, bias; trunk scale, bias; running mean, var.
  for name in leaves:
    np.testing.assert_allclose(out[f'{name}_8'], out[f'{name}_1'], rtol=1e-5, atol=1e-6)
