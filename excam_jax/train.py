"""train_and_evaluate: the checks, then the loop (steps, logging, evaluation, checkpoints).

The pieces live in excam_jax/training/: the optimizer (optim.py), ACoL's stages (stages.py), the
pure jitted steps (steps.py), where a run starts (start.py), the loop's monitor (monitor.py),
checkpoints, pretrained weights, the device mesh (parallel.py) and augmentation. The loop syncs
with the host only at log, eval and checkpoint steps.
"""

import logging
import math
import os
import signal
import time

import jax
import numpy as np

from excam_jax import config_schema
from excam_jax.data import pipeline
from excam_jax.errors import Stopped, UserError, check_field
from excam_jax.evaluation import evaluator
from excam_jax.models import network
from excam_jax.runtime import files
from excam_jax.runtime import workdir_lock
from excam_jax.training import augment as augment_lib
from excam_jax.training import checkpoints
from excam_jax.training import monitor
from excam_jax.training import parallel
from excam_jax.training import stages as stages_lib
from excam_jax.training import start as start_lib
from excam_jax.training import steps as steps_lib

_LOG = logging.getLogger(__name__)


def _check_divisible(config):
  """The global batches must split evenly over processes and devices."""
  for section in ('train', 'eval'):
    size = config[section].batch_size
    check_field(size % jax.device_count() == 0, f'{section}.batch_size', size,
                f'a multiple of the {jax.device_count()} devices')
  check_field(config.train.batch_size % jax.process_count() == 0, 'train.batch_size',
              config.train.batch_size, f'a multiple of the {jax.process_count()} processes')



def training_protocol(config, final):
  """How an evaluation during training scores: config.eval, on the cheap working grids
  (config.eval.train_box_grid / train_sweep_grid) except at the last step, which scores as the
  evaluate command does."""
  if final:
    return evaluator.protocol_from_config(config.eval)
  return evaluator.protocol_from_config(config.eval, box_grid=config.eval.train_box_grid,
                                        sweep_grid=config.eval.train_sweep_grid)


def eval_metrics(config, state, info, eval_fn, sharding, final=False):
  """Scores the eval split with excam_jax.evaluation.evaluator (see training_protocol).

  Classification mAP always (top-1 accuracy on the WSOL benchmark's sets, scored by
  evaluation/wsol_benchmark.py); the localization metrics too when config.eval.localization.
  Every process reads whole global batches and computes the same result.
  """
  variables = {'params': state.params, 'batch_stats': state.batch_stats}

  def predict_fn(images):
    images = parallel.global_batch_from_full(np.asarray(images, np.float32), sharding)
    logits, class_maps = eval_fn(variables, images)
    return np.asarray(logits), np.asarray(class_maps)

  return evaluator.score(predict_fn, pipeline.eval_batches(config), info.class_names,
                         training_protocol(config, final),
                         localization=config.eval.localization, dataset=config.data.dataset,
                         eval_config=config.eval)


def checkpoint_dir(workdir):
  """Where a run's checkpoints are: <workdir>/checkpoints."""
  return os.path.join(os.path.abspath(workdir), checkpoints.CHECKPOINT_DIR)


def _prepare_workdir(workdir):
  # One probe per process: on a shared filesystem processes must not remove each other's.
  files.check_writable(workdir, f'cannot write to workdir {workdir!r}; choose a writable '
                       '--workdir.', tag=f'{jax.process_index()}.')


def train_and_evaluate(config, workdir, allow_schedule_change=False):
  """Trains and evaluates as `config` says, checkpointing and logging in `workdir`.

  Resumes from the latest readable checkpoint in workdir if there is one, else starts from
  config.model.pretrained (ImageNet trunk) if set, else from scratch. One run holds a workdir at a
  time (<workdir>/.lock). SIGINT or SIGTERM saves the current step and raises errors.Stopped.

  Args:
    config: the experiment config.
    workdir: the run's directory.
    allow_schedule_change: resume even if the schedule fields (checkpoints.SCHEDULE_FIELDS)
      differ from the checkpoint's config; the change is logged.

  Returns:
    {'source': where it started, 'train': [(step, metrics)], 'eval': [(step, metrics)],
     'final_step': int}.
  """
  config_schema.validate(config)
  parallel.initialize(config)
  _check_divisible(config)
  _prepare_workdir(workdir)
  lock = workdir_lock.WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  try:
    info = pipeline.dataset_info(config)
    steps_per_epoch = math.ceil(info.num_train / config.train.batch_size)
    total_steps = config.train.num_epochs * steps_per_epoch * len(stages_lib.stages(config))
    ckpt = checkpoints.Checkpoints(workdir, max_to_keep=config.train.keep_checkpoints)
    try:
      ckpt.check_writable()  # Before anything is written.
      with monitor.StopRequests() as stop:
        return _train(config, workdir, info, total_steps, ckpt, stop,
                      allow_schedule_change)
    finally:
      ckpt.close()
  finally:
    lock.release()


def _stopped(stop, step, ckpt, state, config, saved_step, log):
  """Saves the current step (unless just saved) and raises Stopped for the signal received."""
  log.flush(step, ckpt)  # The finiteness check of the steps since the last log.
  if step > 0 and saved_step != step:
    ckpt.save(step, state, config)
  ckpt.wait(step)
  name = signal.Signals(stop.signum).name
  what = f'checkpoint of step {step} saved in {ckpt.directory}' if step > 0 else (
      'nothing trained yet, nothing to save')
  raise Stopped(f'{name} at step {step}: {what}; run the same command to resume.',
                128 + stop.signum)


def _train(config, workdir, info, total_steps, ckpt, stop, allow_schedule_change):
  """The loop of train_and_evaluate, after the checks."""
  mesh = parallel.data_mesh()
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  model = network.create_model(config.model, info.num_classes)
  steps_per_epoch = total_steps // len(stages_lib.stages(config)) // config.train.num_epochs
  tx, schedules, names, stage_steps = stages_lib.create(config, total_steps, steps_per_epoch)
  state, source = start_lib.initial_state(config, model, tx, ckpt, replicated, allow_schedule_change)
  start = int(state.step)
  if start > total_steps:
    raise UserError(f'the checkpoint at step {start} is past the last step {total_steps} of this '
                    'config; raise config.train.num_epochs or use another --workdir.')
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)
  _LOG.info('Starting from %s: step %d of %d (%d examples, %d classes, %d devices).', source,
            start, total_steps, info.num_train, info.num_classes, jax.device_count())
  if len(names) > 1:
    _LOG.info('ACoL: classifier A trains steps 1-%d, classifier B (on images erased by A) steps '
              '%d-%d.', stage_steps, stage_steps + 1, total_steps)
  augment = augment_lib.from_config(config.train)
  step_fns = {name: steps_lib.make_train_step(config.optim, model, tx, mesh, stage=name, augment=augment)
              for name in names}
  eval_fn = steps_lib.make_eval_step(model, mesh)
  # ACoL: evaluations during stage 'a' score classifier A alone (B is not trained yet).
  stage_eval_fn = steps_lib.make_eval_step(model, mesh, method='stage_a') if len(names) > 1 else eval_fn
  batches = parallel.prefetch(
      pipeline.train_batches(config, start_step=start, process_index=jax.process_index(),
                             process_count=jax.process_count()), sharded, steps_lib.TRAIN_KEYS)
  log = monitor.Monitor(workdir, start, total_steps, config.train.batch_size, schedules)
  saved_step = start
  try:
    for step in range(start + 1, total_steps + 1):
      if stop.signum:
        _stopped(stop, step - 1, ckpt, state, config, saved_step, log)
      stage = stages_lib.stage_of(step, stage_steps, names)
      state, metrics = step_fns[stage](state, next(batches))
      log.step(metrics)
      if step == start + 1:
        jax.block_until_ready(metrics)
        _LOG.info('first step done %.1f s after the process started (compilation included).',
                  time.time() - monitor.process_start_time())
      stage_end = step % stage_steps == 0  # The last step of a stage (ACoL), or of the run.
      do_eval = step % config.train.eval_every_steps == 0 or stage_end
      do_save = step % config.train.checkpoint_every_steps == 0 or stage_end
      if step % config.train.log_every_steps == 0 or do_eval or do_save or stop.signum:
        log.flush(step, ckpt)  # Also guards checkpoints against a non-finite state.
      if do_save:
        ckpt.save(step, state, config)
        saved_step = step
      if do_eval:
        if stage == 'a':
          _LOG.info('stage a (classifier A alone) at step %d of %d:', step, stage_steps)
        log.eval_result(step, eval_metrics(config, state, info,
                                           stage_eval_fn if stage == 'a' else eval_fn, sharded,
                                           final=step == total_steps))
  finally:
    log.close()
  ckpt.wait(total_steps)
  if stop.signum:  # After the last step: the run is complete and checkpointed.
    _LOG.info('%s arrived after the last step; the run is complete.',
              signal.Signals(stop.signum).name)
  return {'source': source, 'train': log.train_history, 'eval': log.eval_history,
          'final_step': total_steps}
