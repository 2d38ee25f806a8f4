"""Checkpoints: an Orbax CheckpointManager under <workdir>/checkpoints, the config beside them.

Each checkpoint step holds two items: 'state' (step, params, batch_stats, opt_state and rng: all
that an exact resume needs besides the data position, which is the step) and 'config' (the run's
config as JSON). <workdir>/config.json holds the config of the latest start, for people to read.

Resuming with a config that changes what the arrays mean (the model, the data, the batch order) is
refused with a UserError naming the field, before anything in the workdir is written.
"""

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from excam_jax.errors import UserError

CHECKPOINT_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'
# Fields that a resumed run must share with the checkpoint: they define the arrays' shapes and
# meaning (model.*, classes, image size) or the data order that an exact resume replays.
COMPATIBILITY_FIELDS = ('model', 'dataset', 'train_split', 'image_size', 'parts', 'batch_size',
                        'seed', 'shuffle_buffer')
# Model fields that change only how the arrays are computed, not what they are.
_COMPUTE_ONLY = ('model.dtype', 'model.remat')


def config_to_dict(config):
  """A JSON-ready plain dict of a ConfigDict (tuples become lists)."""
  return json.loads(config.to_json())


def _flatten(tree, prefix=''):
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(_flatten(value, name + '.'))
    else:
      flat[name] = value
  return flat


def incompatible_fields(saved, config):
  """Names of the compatibility fields whose values differ between two configs (as dicts)."""
  old, new = _flatten(saved), _flatten(config)
  differ = []
  for name in sorted(set(old) | set(new)):
    if name.split('.')[0] not in COMPATIBILITY_FIELDS or name in _COMPUTE_ONLY:
      continue
    if old.get(name, '<absent>') != new.get(name, '<absent>'):
      differ.append(f'{name} ({old.get(name, "<absent>")!r} in the checkpoint, '
                    f'{new.get(name, "<absent>")!r} now)')
  return differ


def _unreadable(directory, step, err):
  return UserError(f'checkpoint step {step} in {directory} is unreadable or truncated ({err}); '
                   'delete that step folder to resume from an earlier one, or use a new workdir.')


class Checkpoints:
  """Saves and restores training state in <workdir>/checkpoints.

  Args:
    workdir: run directory (must be writable; created if missing).
    max_to_keep: checkpoints kept; older ones are deleted after a newer save completes.
    async_save: write in a background thread (the arrays are copied to host first).
  """

  def __init__(self, workdir, max_to_keep=3, async_save=True):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    try:
      self.manager = ocp.CheckpointManager(
          self.directory, options=options,
          item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                         'config': ocp.JsonCheckpointHandler()})
    except OSError as err:
      raise UserError(f'cannot create checkpoints in {self.directory} ({err}); '
                      'choose a writable --workdir.') from err

  def latest_step(self):
    """The last completed step, or None (unfinished saves of a killed run are ignored)."""
    return self.manager.latest_step()

  def saved_config(self, step=None):
    """The config dict stored with a checkpoint (the latest by default)."""
    step = self.latest_step() if step is None else step
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    except Exception as err:  # Orbax raises many types for missing or damaged files.
      raise _unreadable(self.directory, step, err) from err
    return restored['config']

  def check_compatible(self, config):
    """Raises UserError when the latest checkpoint was trained with an incompatible config."""
    if self.latest_step() is None:
      return
    differ = incompatible_fields(self.saved_config(), config_to_dict(config))
    if differ:
      raise UserError(f'the checkpoint in {self.directory} was made with another config: '
                      f'{"; ".join(differ)}; use a new --workdir or the original values.')

  def save(self, step, state, config):
    """Saves `state` (a pytree of arrays) at `step`, with the config beside it."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state),
        config=ocp.args.JsonSave(config_to_dict(config))))

  def restore_state(self, step, abstract_state):
    """Restores the state saved at `step` into the structure and shardings of `abstract_state`."""
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              abstract_state,
              restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))))
    except Exception as err:  # Orbax raises many types for missing or damaged files.
      raise _unreadable(self.directory, step, err) from err
    return restored['state']

  def restore_numpy(self, step):
    """Restores the state saved at `step` as a nested dict of numpy arrays (no template)."""
    try:
      metadata = self.manager.item_metadata(step)['state']
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(restore_args=restore_args)))
    except Exception as err:  # Orbax raises many types for missing or damaged files.
      raise _unreadable(self.directory, step, err) from err
    return restored['state']

  def wait(self):
    """Blocks until pending background saves are on disk."""
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def write_config(workdir, config):
  """Writes the config of this start to <workdir>/config.json."""
  with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
    json.dump(config_to_dict(config), f, indent=2, sort_keys=True)


def restore(workdir, step=None):
  """Restores a trained model from a workdir.

  Args:
    workdir: the --workdir of a training run.
    step: checkpoint step; None for the latest.

  Returns:
    (config, variables, step): the ConfigDict saved with that checkpoint, {'params',
    'batch_stats'} as nested dicts of numpy arrays, and the step.

  Raises:
    UserError: no checkpoint there, the step does not exist, or its files are damaged.
  """
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise UserError(f'no checkpoints in {workdir}; pass the --workdir of a training run.')
  ckpt = Checkpoints(workdir, async_save=False)
  try:
    steps = ckpt.manager.all_steps()
    if not steps:
      raise UserError(f'no completed checkpoint in {directory}; train longer or use another '
                      'workdir.')
    step = max(steps) if step is None else step
    if step not in steps:
      raise UserError(f'no checkpoint at step {step} in {directory}; available: {sorted(steps)}.')
    config = ml_collections.ConfigDict(ckpt.saved_config(step))
    state = ckpt.restore_numpy(step)
  finally:
    ckpt.close()
  return config, {'params': state['params'], 'batch_stats': state['batch_stats']}, step
