"""Data parallelism over every device of every process: a 1-D 'data' mesh.

Parameters and optimizer state are replicated; batches are sharded along their first axis. XLA
inserts the gradient all-reduce (and the cross-device BatchNorm statistics), so the step computes
on the global batch exactly as one device would.
"""

import collections
import itertools
import logging

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from excam_jax.errors import ConfigError, UserError

_LOG = logging.getLogger(__name__)
DATA_AXIS = 'data'


def initialize(config):
  """Calls jax.distributed.initialize when config.train.distributed.enabled; a no-op otherwise.

  Must run before any other JAX call of the process.
  """
  dist = config.train.distributed
  if not dist.enabled:
    return
  if not dist.coordinator_address:
    raise ConfigError('config.train.distributed.coordinator_address is empty: set it to host:port of '
                      'process 0 when config.train.distributed.enabled is True.')
  if not 0 <= dist.process_id < dist.num_processes:
    raise ConfigError(f'config.train.distributed.process_id={dist.process_id} is invalid: allowed '
                      f'0 <= process_id < num_processes={dist.num_processes}.')
  try:
    jax.distributed.initialize(coordinator_address=dist.coordinator_address,
                               num_processes=dist.num_processes, process_id=dist.process_id)
  except (RuntimeError, ValueError) as err:
    raise UserError(f'jax.distributed.initialize failed ({err}); check '
                    'config.train.distributed.coordinator_address and that every process started.'
                    ) from err
  _LOG.info('Process %d of %d, %d local of %d devices.', jax.process_index(),
            jax.process_count(), jax.local_device_count(), jax.device_count())


def data_mesh():
  """A 1-D mesh over all devices of all processes, axis 'data'."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh):
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch, sharding):
  """Assembles the global arrays from this process's slice of the global batch."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def global_batch_from_full(full_batch, sharding):
  """Global arrays from a batch that every process holds whole (each keeps its own shards)."""
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, full_batch)


def prefetch(batches, sharding, keys, size=2):
  """Yields device batches `size` steps ahead of their use.

  The step is dispatched asynchronously, so the host reads and transfers the next batches while
  the devices compute the current one.

  Args:
    batches: iterator of numpy batch dicts (this process's slice of each global batch).
    sharding: sharding of the global batch.
    keys: the batch fields the step reads; the rest stays on the host.
    size: batches in flight.
  """
  queue = collections.deque()

  def enqueue(n):
    for batch in itertools.islice(batches, n):
      queue.append(global_batch({k: batch[k] for k in keys}, sharding))

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)
