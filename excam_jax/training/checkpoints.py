"""Checkpoints: an Orbax CheckpointManager under <workdir>/checkpoints, the config beside them.

Each checkpoint step holds two items: 'state' (step, params, batch_stats, opt_state and rng: all
that an exact resume needs besides the data position, which is the step) and 'config' (the run's
config as JSON). <workdir>/config.json holds the config of the latest start, for people to read.

Resuming with a config that changes what the arrays mean (the model, the data, the batch order) is
refused with a UserError naming the field, before anything in the workdir is written; so is a
changed schedule (epochs, learning rates, warm-up) unless the caller allows it. A checkpoint whose
files are damaged or truncated is set aside (moved to <workdir>/damaged_checkpoints/, never
deleted) and the one before it is used, with a warning.
"""

import errno
import json
import logging
import os
import shutil
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from excam_jax import config_schema
from excam_jax.runtime import files
from excam_jax.errors import UserError

CHECKPOINT_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'
# Fields that a resumed run must share with the checkpoint: they define the arrays' shapes and
# meaning (model.*, classes, image size) or the data order that an exact resume replays.
COMPATIBILITY_FIELDS = ('model', 'data.dataset', 'data.train_split', 'data.image_size',
                        'data.parts', 'data.shuffle_buffer', 'train.batch_size', 'train.seed')
# Model fields that change only how the arrays are computed (or where a fresh run starts from),
# not what they are.
_COMPUTE_ONLY = ('model.dtype', 'model.remat', 'model.conv_impl', 'model.norm_impl',
                 'model.pretrained')
# Fields that define the learning-rate schedule and the run's length: a resume with other values
# trains a different run than the one checkpointed, so it needs the caller's explicit consent.
SCHEDULE_FIELDS = ('train.num_epochs', 'optim.head_learning_rate', 'optim.trunk_learning_rate',
                   'optim.schedule', 'optim.warmup_steps', 'optim.momentum', 'optim.weight_decay',
                   'optim.optimizer', 'train.augment', 'train.has_grid', 'train.has_drop_rate',
                   'train.cutmix_beta', 'train.cutmix_prob', 'optim.loss', 'optim.nesterov',
                   'optim.decay_every_epochs', 'optim.head_rate_stages')
# Fields added after checkpoints were first written, with the value that older checkpoints
# behaved as: a saved config without the field counts as holding that value.
ADDED_DEFAULTS = {'model.acol_head': 'wildcat', 'model.acol_threshold': 0.6,
                  'model.acol_fusion': 'normalised', 'model.class_pooling': 'mean',
                  'model.spatial_pooling': 'wildcat',
                  'data.parts.body_cue': 0.0, 'data.parts.difficult_objects': False,
                  'data.parts.probe': 'none', 'optim.optimizer': 'sgd', 'optim.area_weight': 0.0,
                  'model.dilate': True, 'model.map_generator': False,
                  'model.map_generator_stage': 4,
                  **{f'train.{k}': v for k, v in config_schema.AUGMENT_DEFAULTS.items()},
                  # As JSON holds them (tuples are lists there).
                  **{f'optim.{k}': list(v) if isinstance(v, tuple) else v
                     for k, v in config_schema.OPTIM_DEFAULTS.items()}}
DAMAGED_DIR = 'damaged_checkpoints'
_LOG = logging.getLogger(__name__)


# Where each field of the flat configs of earlier versions lives now (see upgrade_config).
_FLAT_FIELDS = {
    'data': ('dataset', 'train_split', 'eval_split', 'data_dir', 'manual_dir', 'image_size',
             'shuffle_buffer', 'parts'),
    'optim': ('momentum', 'weight_decay', 'head_learning_rate', 'trunk_learning_rate', 'schedule',
              'warmup_steps', 'diversity_loss', 'diversity_weight'),
    'train': ('batch_size', 'num_epochs', 'seed', 'log_every_steps', 'eval_every_steps',
              'checkpoint_every_steps', 'keep_checkpoints', 'distributed'),
}
_FLAT_RENAMED = {'pretrained': ('model', 'pretrained'), 'eval_batch_size': ('eval', 'batch_size'),
                 'eval_localization': ('eval', 'localization')}


def upgrade_config(saved):
  """A checkpoint's config dict in today's sections (data, model, optim, train, eval).

  Checkpoints written before the sections existed hold one flat dict; their fields are moved to
  their sections, so such runs still evaluate and resume. A sectioned dict is returned as is.
  """
  if 'data' in saved:
    return saved
  out = {section: {} for section in ('data', 'model', 'optim', 'train', 'eval')}
  for key, value in saved.items():
    section = next((s for s, names in _FLAT_FIELDS.items() if key in names), None)
    if section:
      out[section][key] = value
    elif key in _FLAT_RENAMED:
      target, name = _FLAT_RENAMED[key]
      out[target][name] = value
    elif isinstance(value, dict):
      out.setdefault(key, {}).update(value)
  return out


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


def incompatible_fields(saved, config, fields=COMPATIBILITY_FIELDS):
  """The `fields` (dotted names or prefixes) whose values differ between two configs (as
  dicts), with both values."""
  old, new = _flatten(saved), _flatten(config)
  for name, value in ADDED_DEFAULTS.items():
    for tree in (old, new):
      tree.setdefault(name, value)
  differ = []
  for name in sorted(set(old) | set(new)):
    chosen = any(name == f or name.startswith(f + '.') for f in fields)
    if not chosen or name in _COMPUTE_ONLY:
      continue
    if old.get(name, '<absent>') != new.get(name, '<absent>'):
      differ.append(f'{name} ({old.get(name, "<absent>")!r} in the checkpoint, '
                    f'{new.get(name, "<absent>")!r} now)')
  return differ


def _first_line(err, limit=160):
  """A short reason for an exception (Orbax and TensorStore put dumps in their messages)."""
  for cause in (err, err.__cause__, err.__context__):
    if isinstance(cause, OSError) and cause.strerror:
      detail = cause.filename or (cause.args[1] if cause.errno == errno.ENOSPC else '')
      name = 'disk full' if cause.errno == errno.ENOSPC else cause.strerror
      return f'{name}: {detail}' if detail and detail != name else name
  text = ' '.join(str(err).split()) or type(err).__name__
  return text if len(text) <= limit else text[:limit] + '...'


class UnreadableCheckpoint(UserError):
  """A checkpoint step whose files are missing, damaged or truncated."""


def _unreadable(directory, step, err):
  return UnreadableCheckpoint(f'checkpoint step {step} in {directory} is unreadable or truncated '
                   f'({_first_line(err)}); move that step folder away to resume from an earlier '
                   'one, or use a new workdir.')


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

  def check_writable(self):
    """Raises UserError now, rather than in a background save, if checkpoints can't be written."""
    files.check_writable(self.directory, f'cannot write checkpoints in {self.directory}; fix its '
                         'permissions or choose another --workdir.', tag=f'{jax.process_index()}.')

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
    return upgrade_config(restored['config'])

  def check_compatible(self, config, step=None, allow_schedule_change=False):
    """Raises UserError when a checkpoint (the latest by default) has an incompatible config.

    A changed schedule (SCHEDULE_FIELDS) is refused too, unless `allow_schedule_change`: then
    it is logged as a warning.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return
    saved, new = self.saved_config(step), config_to_dict(config)
    differ = incompatible_fields(saved, new)
    if differ:
      raise UserError(f'the checkpoint in {self.directory} was made with another config: '
                      f'{"; ".join(differ)}; use a new --workdir or the original values.')
    changed = incompatible_fields(saved, new, SCHEDULE_FIELDS)
    if changed and not allow_schedule_change:
      raise UserError(f'the checkpoint in {self.directory} was trained with another schedule: '
                      f'{"; ".join(changed)}; use the original values, a new --workdir, or '
                      '--allow_schedule_change to resume with the new one.')
    if changed:
      _LOG.warning('warning: resuming step %d with a changed schedule (--allow_schedule_change): '
                   '%s.', step, '; '.join(changed))

  def set_aside(self, step):
    """Moves a damaged step folder to <workdir>/damaged_checkpoints/ (nothing is deleted)."""
    source = os.path.join(self.directory, str(step))
    target_dir = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, f'{step}.{time.strftime("%Y%m%d-%H%M%S")}')
    try:
      os.rename(source, target)
    except FileNotFoundError:  # Another process of a multi-host run moved it first.
      pass
    self.manager.reload()
    return target

  def restore_latest(self, abstract_state, check=None):
    """The newest checkpoint that reads back whole, as (state, step); (None, None) if none.

    A damaged or truncated one is set aside with a warning and the one before it is tried; when
    no earlier checkpoint is left, the UserError names the damaged folder. `check(step)` runs
    before each restore (e.g. the config compatibility check) and its errors pass through.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for i, step in enumerate(steps):
      if check is not None:
        try:
          check(step)
        except UnreadableCheckpoint as err:
          if i + 1 == len(steps):
            raise UserError(f'{err} No earlier checkpoint is left.') from err
          self._fall_back(step, err)
          continue
      try:
        return self.restore_state(step, abstract_state), step
      except UnreadableCheckpoint as err:
        if i + 1 == len(steps):
          raise UserError(f'{err} No earlier checkpoint is left.') from err
        self._fall_back(step, err)
    return None, None

  def _fall_back(self, step, err):
    moved = self.set_aside(step)
    _LOG.warning('warning: %s It was moved to %s; resuming from the checkpoint before it.',
                 str(err).split(';')[0] + '.', moved)

  def save(self, step, state, config):
    """Saves `state` (a pytree of arrays) at `step`, with the config beside it.

    Raises:
      UserError: this or an earlier (background) save could not be written (a full disk,
        permissions); the last completed checkpoint stays intact.
    """
    self._check_free_space(step, state)
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeSave(state),
          config=ocp.args.JsonSave(config_to_dict(config))))
    except Exception as err:  # pylint: disable=broad-except  # Orbax wraps I/O errors freely.
      raise self._write_error(step, err) from err

  def _check_free_space(self, step, state):
    """Refuses a save that cannot fit on the disk, before Orbax starts writing it.

    The arrays' raw size bounds the checkpoint (Orbax compresses, never inflates them); a full
    disk found this way gives one clear line instead of a failed background write.
    """
    need = sum(int(getattr(leaf, 'nbytes', 0)) for leaf in jax.tree.leaves(state)) + (1 << 16)
    try:
      free = shutil.disk_usage(self.directory).free
    except OSError:
      return
    if free < need:
      raise self._write_error(step, OSError(
          errno.ENOSPC, f'{need / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free'))

  def _write_error(self, step, err):
    try:
      last = self.manager.latest_step()
    except Exception:  # pylint: disable=broad-except
      last = None
    kept = f'the last completed checkpoint (step {last}) is intact' if last is not None else (
        'no checkpoint was completed')
    return UserError(f'cannot write checkpoint step {step} in {self.directory} '
                     f'({_first_line(err)}); {kept}; free disk space or fix permissions, then run '
                     'the same command to resume.')

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

  def wait(self, step=None):
    """Blocks until pending background saves are on disk; a failed one is a UserError."""
    try:
      self.manager.wait_until_finished()
    except Exception as err:  # pylint: disable=broad-except
      raise self._write_error(step if step is not None else 'in progress', err) from err

  def close(self):
    """Waits for pending saves and closes; a failed save is a UserError."""
    try:
      self.wait()
    finally:
      try:
        self.manager.close()
      except Exception:  # pylint: disable=broad-except  # Already reported by wait().
        pass


def write_config(workdir, config):
  """Writes the config of this start to <workdir>/config.json."""
  files.write_text(os.path.join(workdir, CONFIG_FILE),
                   json.dumps(config_to_dict(config), indent=2, sort_keys=True))


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
    if step is not None and step not in steps:
      raise UserError(f'no checkpoint at step {step} in {directory}; available: {sorted(steps)}.')
    candidates = [step] if step is not None else sorted(steps, reverse=True)
    for i, candidate in enumerate(candidates):
      try:
        config = ml_collections.ConfigDict(ckpt.saved_config(candidate))
        state = ckpt.restore_numpy(candidate)
        break
      except UnreadableCheckpoint as err:
        if i + 1 == len(candidates):
          raise
        _LOG.warning('warning: %s; using step %d instead.', str(err).split(';')[0],
                     candidates[i + 1])
  finally:
    ckpt.close()
  return config, {'params': state['params'], 'batch_stats': state['batch_stats']}, candidate
