"""Training and evaluation: TrainState, the jitted steps, and the train_and_evaluate loop.

The steps are pure top-level functions; the model, the optimizer and the loss options are bound
with functools.partial and each step is jitted once over a 'data' mesh (see parallel.py), with
the state donated. The loop syncs with the host only at log, eval and checkpoint steps.
"""

import functools
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from excam_jax import checkpoints
from excam_jax import config_checks
from excam_jax import files
from excam_jax.evaluation import evaluator
from excam_jax import parallel
from excam_jax import pretrained
from excam_jax import summary
from excam_jax import workdir_lock
from excam_jax import xla_setup
from excam_jax.data import pipeline
from excam_jax.errors import Stopped, UserError, check_field
from excam_jax.models import acol
from excam_jax.models import losses
from excam_jax.models import network
from excam_jax.training import augment as augment_lib

_LOG = logging.getLogger(__name__)
_IMPORT_TIME = time.time()

TRAIN_KEYS = ('image', 'label', 'mask')
# The augmentation's key is fold_in(step key, this): the step key itself stays the dropout key,
# so runs without augmentation draw what they drew before it existed.
AUGMENT_STREAM = 1


class TrainState(flax.struct.PyTreeNode):
  """Everything a step changes, plus the base rng (per-step keys are fold_in(rng, step))."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


class NonFiniteLoss(UserError):
  """The loss, the gradients or the parameters became NaN or infinite; training stopped with
  the last good checkpoint kept."""


# ---------------------------------------------------------------------------------------------
# Config checks.

def _check_divisible(config):
  """The global batches must split evenly over processes and devices."""
  for section in ('train', 'eval'):
    size = config[section].batch_size
    check_field(size % jax.device_count() == 0, f'{section}.batch_size', size,
                f'a multiple of the {jax.device_count()} devices')
  check_field(config.train.batch_size % jax.process_count() == 0, 'train.batch_size',
              config.train.batch_size, f'a multiple of the {jax.process_count()} processes')


# ---------------------------------------------------------------------------------------------
# Optimizer.

def learning_rate_schedule(optim, base_lr, total_steps, steps_per_epoch=None):
  """Linear warm-up over optim.warmup_steps, then constant, cosine decay to 0 at total_steps, or
  'step': wsolevaluation's decay, x0.1 from the start of every (1-based) epoch that is a multiple
  of optim.decay_every_epochs (their lr_decay_frequency; 15: epochs 1-14 at base_lr, 15-29 at
  base_lr / 10, ...), the epoch of step s being s // steps_per_epoch + 1 after the warm-up."""
  warmup = min(optim.warmup_steps, total_steps)
  if optim.schedule == 'constant':
    main = optax.constant_schedule(base_lr)
  elif optim.schedule == 'step':
    if not steps_per_epoch:
      raise ValueError("optim.schedule 'step' needs steps_per_epoch.")
    every = optim.get('decay_every_epochs', config_checks.OPTIM_DEFAULTS['decay_every_epochs'])
    main = lambda step: base_lr * 0.1 ** ((step // steps_per_epoch + 1) // every)
  else:
    main = optax.cosine_decay_schedule(base_lr, max(total_steps - warmup, 1))
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), main], [warmup])


def param_groups(params, head_rate_stages=()):
  """'trunk' for every leaf under params['trunk'] but those of the ResNet stages
  `head_rate_stages` (layer<s>_*), 'head' for all others."""
  fast = tuple(f'layer{stage}_' for stage in head_rate_stages)

  def group(path, _):
    names = [getattr(p, 'key', '') for p in path]
    trunk = names[0] == 'trunk' and not (len(names) > 1 and str(names[1]).startswith(fast))
    return 'trunk' if trunk else 'head'

  return jax.tree_util.tree_map_with_path(group, params)


def create_optimizer(optim, total_steps, steps_per_epoch=None):
  """optim.optimizer 'sgd' (the default): PyTorch-style SGD, decayed weights added to the
  gradient, then momentum (Nesterov's with optim.nesterov, as wsolevaluation); 'adamw': AdamW
  with decoupled weight decay (b1 = optim.momentum). Both with per-group learning rates:
  optim.trunk_learning_rate for the trunk, optim.head_learning_rate for the head and for the
  trunk stages optim.head_rate_stages (wsolevaluation's ResNet50 trains layer4 with the fc at
  10x: head_rate_stages (4,), head_learning_rate = 10 trunk_learning_rate).

  Returns:
    (optax transformation, {'trunk': schedule, 'head': schedule}).
  """
  field = {name: optim.get(name, default) for name, default in config_checks.OPTIM_DEFAULTS.items()}
  groups = functools.partial(param_groups, head_rate_stages=tuple(field['head_rate_stages']))
  schedules = {group: learning_rate_schedule(optim, optim[f'{group}_learning_rate'],
                                             total_steps, steps_per_epoch)
               for group in ('trunk', 'head')}
  if optim.get('optimizer', 'sgd') == 'adamw':
    return optax.multi_transform(
        {group: optax.adamw(schedule, b1=optim.momentum, weight_decay=optim.weight_decay)
         for group, schedule in schedules.items()}, groups), schedules
  tx = optax.chain(
      optax.add_decayed_weights(optim.weight_decay),
      optax.multi_transform({group: optax.sgd(schedule, momentum=optim.momentum,
                                              nesterov=field['nesterov'])
                             for group, schedule in schedules.items()}, groups))
  return tx, schedules


def stages(config):
  """The training stages: ('a', 'b') for ACoL (classifier A, then B), (None,) otherwise."""
  return acol.STAGES if config.model.head == 'acol' else (None,)


class StagedOptimizer:
  """ACoL's optimizer: one transformation per stage over that stage's classifier params[stage].

  Each keeps its own state and schedule, so classifier B's warm-up and decay start when stage 'b'
  starts, and B's parameters are not touched (not even decayed) while A trains.
  """

  def __init__(self, transforms):
    self.transforms = transforms

  def init(self, params):
    return {stage: tx.init(params[stage]) for stage, tx in self.transforms.items()}


def create_staged_optimizer(optim, stage_steps, names=acol.STAGES, steps_per_epoch=None):
  """(StagedOptimizer, schedules of the whole run by global step) for `len(names)` stages."""
  transforms, per_stage = {}, None
  for name in names:
    transforms[name], per_stage = create_optimizer(optim, stage_steps, steps_per_epoch)

  def shifted(schedule):
    return lambda step: schedule(step % stage_steps if step < len(names) * stage_steps
                                 else stage_steps - 1)

  return StagedOptimizer(transforms), {g: shifted(f) for g, f in per_stage.items()}


def stage_of(step, stage_steps, names):
  """The stage that trains global step `step` (1-based): stage i covers (i*S, (i+1)*S]."""
  return names[min((step - 1) // stage_steps, len(names) - 1)]


# ---------------------------------------------------------------------------------------------
# Steps.

def train_step(state, batch, *, model, tx, diversity_loss='none', diversity_weight=0.0,
               stage=None, area_weight=0.0, augment=None, loss='bce'):
  """One SGD step on a (global) batch: BCE or softmax cross-entropy (`loss`, models/losses.py;
  + diversity, + map-area), BatchNorm statistics updated.

  With `stage` ('a' or 'b', ACoL), only params[stage] is trained, by tx.transforms[stage]
  (a StagedOptimizer), through the model's method `stage_<stage>`.
  `augment` (training/augment.py from_config), if any, maps (key, images, labels) to the
  images and (soft) labels that the step trains on, in either ACoL stage.

  Returns:
    (new state, metrics): metrics hold scalar 'loss' and 'bce_loss' or 'softmax_loss' (and
    'diversity_loss', 'area_loss'), the gradients' and the updated parameters' global norms
    'grad_norm' and 'param_norm'.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  images, labels = batch['image'], batch['label']
  if augment is not None:
    images, labels = augment(jax.random.fold_in(rng, AUGMENT_STREAM), images, labels)

  def forward(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    kwargs = dict(train=True, mutable=['batch_stats'], rngs={'dropout': rng})
    if stage is None:
      return model.apply(variables, images, **kwargs)
    if stage == 'a':
      return model.apply(variables, images, method='stage_a', **kwargs)
    return model.apply(variables, images, labels, method='stage_b', **kwargs)

  def loss_fn(trained):
    params = trained if stage is None else {**state.params, stage: trained}
    (logits, aux), updates = forward(params)
    classify = losses.softmax_loss if loss == 'softmax' else losses.bce_loss
    total = classify(logits.astype(jnp.float32), labels, batch['mask'])
    metrics = {f'{loss}_loss': total}
    if diversity_loss != 'none':
      diversity = losses.diversity_loss(aux['maps'].astype(jnp.float32), diversity_loss)
      metrics['diversity_loss'] = diversity
      total = total + diversity_weight * diversity
    if area_weight:
      area = losses.area_loss(aux['class_maps'], labels, batch['mask'])
      metrics['area_loss'] = area
      total = total + area_weight * area
    metrics['loss'] = total
    return total, (updates.get('batch_stats', state.batch_stats), metrics)

  own = (lambda tree: tree) if stage is None else (lambda tree: tree[stage])  # What trains.
  stage_tx = tx if stage is None else tx.transforms[stage]
  grads, (batch_stats, metrics) = jax.grad(loss_fn, has_aux=True)(own(state.params))
  updates, stage_opt = stage_tx.update(grads, own(state.opt_state), own(state.params))
  trained = optax.apply_updates(own(state.params), updates)
  params = trained if stage is None else {**state.params, stage: trained}
  opt_state = stage_opt if stage is None else {**state.opt_state, stage: stage_opt}
  # Checked on the host before any checkpoint: a NaN state must never be saved as good.
  metrics['grad_norm'] = optax.global_norm(grads)
  metrics['param_norm'] = optax.global_norm(params)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(variables, images, *, model, method=None):
  """Inference: (logits (B, C), class_maps (B, h, w, C)), both float32.

  `method` names another of the model's methods (ACoL's 'stage_a': classifier A alone).
  """
  if method is None:
    logits, aux = model.apply(variables, images, train=False)
  else:
    logits, aux = model.apply(variables, images, train=False, method=method)
  return logits.astype(jnp.float32), aux['class_maps'].astype(jnp.float32)


def make_train_step(optim, model, tx, mesh, stage=None, augment=None):
  """train_step bound to the model, loss options, stage and augmentation, jitted over `mesh`,
  state donated."""
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, diversity_loss=optim.diversity_loss,
                        diversity_weight=optim.diversity_weight, stage=stage,
                        area_weight=optim.get('area_weight', 0.0), augment=augment,
                        loss=optim.get('loss', 'bce')),
      in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
      donate_argnums=0)


def make_eval_step(model, mesh, method=None):
  """eval_step jitted over `mesh`; outputs replicated so every process can read them."""
  return jax.jit(functools.partial(eval_step, model=model, method=method),
                 in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                 out_shardings=parallel.replicated(mesh))


def _init_variables(rng, *, model, image_size):
  params_rng, dropout_rng = jax.random.split(rng)
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return model.init({'params': params_rng, 'dropout': dropout_rng}, images, train=False)


def create_state(rng, *, model, tx, image_size, trunk_variables=None):
  """A fresh TrainState; `trunk_variables` ({'params', 'batch_stats'}) replace the trunk's."""
  init_rng, train_rng = jax.random.split(rng)
  variables = _init_variables(init_rng, model=model, image_size=image_size)
  params = dict(variables['params'])
  batch_stats = dict(variables.get('batch_stats', {}))
  if trunk_variables is not None:
    for owner_params, owner_stats in _trunk_owners(params, batch_stats):
      owner_params['trunk'] = trunk_variables['params']
      owner_stats['trunk'] = trunk_variables['batch_stats']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=train_rng)


def _trunk_owners(params, batch_stats):
  """The (params, batch_stats) dicts that hold a 'trunk': the network's, or each ACoL stage's
  (copied, so that the caller's nested dicts are replaced, not mutated)."""
  if 'trunk' in params:
    return [(params, batch_stats)]
  owners = []
  for stage in acol.STAGES:
    params[stage], batch_stats[stage] = dict(params[stage]), dict(batch_stats[stage])
    owners.append((params[stage], batch_stats[stage]))
  return owners


# ---------------------------------------------------------------------------------------------
# Start: latest checkpoint > pretrained weights > scratch.

def _load_pretrained(config, model, image_size):
  """Trunk variables from config.model.pretrained, checked leaf by leaf against the model's trunk."""
  weights = pretrained.load_resnet_weights(config.model.pretrained, depth=config.model.depth,
                                           width=config.model.width)
  abstract = jax.eval_shape(functools.partial(_init_variables, model=model,
                                              image_size=image_size), jax.random.key(0))
  for collection in ('params', 'batch_stats'):
    tree = abstract[collection]
    tree = tree['trunk'] if 'trunk' in tree else tree[acol.STAGES[0]]['trunk']
    want = jax.tree.map(lambda x: x.shape, tree)
    got = jax.tree.map(np.shape, weights[collection])
    if want != got:
      raise UserError(f'{config.model.pretrained} does not fit the configured trunk; check '
                      'config.model.depth and config.model.width.')
  return weights


def _compile_once(fn, out_shardings, *args, **kwargs):
  """Compiles a function that runs once (initialisation) without backend optimisation.

  XLA:CPU spends tens of seconds optimising the random initialisers of a ResNet; their code
  runs a single time, so that work is wasted.
  """
  lowered = jax.jit(fn, out_shardings=out_shardings).lower(*args, **kwargs)
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else {}
  return lowered.compile(compiler_options=options)(*args, **kwargs)


def initial_state(config, model, tx, ckpt, replicated, allow_schedule_change=False):
  """The state to start from, and where it came from ('checkpoint N', 'pretrained', 'scratch').

  The newest checkpoint that reads back whole is used (a damaged one is set aside, see
  Checkpoints.restore_latest), after its config passed the compatibility check.
  """
  rng = jax.random.PRNGKey(config.train.seed)
  create = functools.partial(create_state, model=model, tx=tx, image_size=config.data.image_size)
  if ckpt.latest_step() is not None:
    abstract = jax.eval_shape(create, rng)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)
    check = functools.partial(_check_resume, ckpt, config, allow_schedule_change)
    state, step = ckpt.restore_latest(abstract, check=check)
    if state is not None:
      return state, f'checkpoint at step {step}'
  if config.model.pretrained:
    trunk = _load_pretrained(config, model, config.data.image_size)
    state = _compile_once(create, replicated, rng, trunk_variables=trunk)
    return state, f'pretrained weights {config.model.pretrained}'
  return _compile_once(create, replicated, rng), 'scratch'


def _check_resume(ckpt, config, allow_schedule_change, step):
  ckpt.check_compatible(config, step, allow_schedule_change=allow_schedule_change)


# ---------------------------------------------------------------------------------------------
# Evaluation.

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


# ---------------------------------------------------------------------------------------------
# The loop.

def checkpoint_dir(workdir):
  """Where a run's checkpoints are: <workdir>/checkpoints."""
  return os.path.join(os.path.abspath(workdir), checkpoints.CHECKPOINT_DIR)


def _prepare_workdir(workdir):
  # One probe per process: on a shared filesystem processes must not remove each other's.
  files.check_writable(workdir, f'cannot write to workdir {workdir!r}; choose a writable '
                       '--workdir.', tag=f'{jax.process_index()}.')


class _Logger:
  """Host-side metric windows, the progress bar, TensorBoard and log lines (process 0 writes)."""

  def __init__(self, workdir, start, total, global_batch, schedules):
    self.main = jax.process_index() == 0
    self.writer = summary.ScalarWriter(workdir) if self.main else None
    # Redraw often on a terminal, rarely into a log file.
    self.bar = tqdm.tqdm(total=total, initial=start, desc='train', unit='step',
                         disable=not self.main, dynamic_ncols=True,
                         mininterval=0.5 if sys.stderr.isatty() else 30)
    self.schedules, self.global_batch = schedules, global_batch
    self.window, self.window_start, self.clock = [], start, time.perf_counter()
    self.train_history, self.eval_history = [], []

  def step(self, metrics):
    self.window.append(metrics)
    self.bar.update(1)

  def flush(self, step, ckpt):
    """Averages the window (the one host sync of a log step); stops on a non-finite value.

    Every step's loss, gradient norm and parameter norm are checked, so no checkpoint is
    written after a step that produced NaN or infinite parameters.
    """
    if not self.window:
      return
    values = jax.device_get({k: [m[k] for m in self.window] for k in self.window[0]})
    bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
    means = {k: float(np.mean(v)) for k, v in values.items()}
    if bad:
      last = ckpt.latest_step()
      kept = (f'the last good checkpoint (step {last}) is kept' if last is not None
              else 'no checkpoint saved')
      raise NonFiniteLoss(f'the {", ".join(bad)} became non-finite between steps '
                          f'{self.window_start + 1} and {step}; training stopped and {kept}; '
                          'lower the learning rates or check the data.')
    now = time.perf_counter()
    means['images_per_second'] = (step - self.window_start) * self.global_batch / (now - self.clock)
    for group, schedule in self.schedules.items():
      means[f'learning_rate_{group}'] = float(schedule(step - 1))
    self.window, self.window_start, self.clock = [], step, now
    self.train_history.append((step, means))
    if self.main:
      self.bar.set_postfix(loss=f'{means["loss"]:.4f}', lr=f'{means["learning_rate_head"]:.3g}',
                           img_s=f'{means["images_per_second"]:.1f}')
      _LOG.info('step %d: %s', step, ', '.join(f'{k}={v:.5g}' for k, v in means.items()))
      for key, value in means.items():
        self.writer.scalar(f'train/{key}', value, step)

  def eval_result(self, step, result):
    scalars = {k: float(v) for k, v in result.items() if np.isscalar(v)}
    self.eval_history.append((step, scalars))
    if self.main:
      _LOG.info('eval at step %d: %s', step, ', '.join(f'{k}={v:.4f}' for k, v in scalars.items()))
      for key, value in scalars.items():
        self.writer.scalar(f'eval/{key}', value, step)
      self.writer.flush()
    self.clock = time.perf_counter()  # Evaluation time is not training throughput.

  def close(self):
    self.bar.close()
    if self.writer:
      self.writer.close()


class _StopRequests:
  """SIGINT and SIGTERM ask the loop to stop after the current step (a second SIGINT aborts).

  Installed only in the main thread (signal handlers can live nowhere else).
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    _LOG.warning('%s received: stopping after this step and saving a checkpoint '
                 '(Ctrl-C again aborts).', signal.Signals(signum).name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


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
  config_checks.validate(config)
  xla_setup.enable_compilation_cache()
  parallel.initialize(config)
  _check_divisible(config)
  _prepare_workdir(workdir)
  lock = workdir_lock.WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  try:
    info = pipeline.dataset_info(config)
    steps_per_epoch = math.ceil(info.num_train / config.train.batch_size)
    total_steps = config.train.num_epochs * steps_per_epoch * len(stages(config))
    ckpt = checkpoints.Checkpoints(workdir, max_to_keep=config.train.keep_checkpoints)
    try:
      ckpt.check_writable()  # Before anything is written.
      with _StopRequests() as stop:
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


def _process_start_time():
  """Wall-clock time at which this process started (Linux /proc; the import time elsewhere)."""
  try:
    with open('/proc/self/stat') as f:
      ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/stat') as f:
      boot = next(int(line.split()[1]) for line in f if line.startswith('btime'))
    return boot + ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError, StopIteration):
    return _IMPORT_TIME


def _train(config, workdir, info, total_steps, ckpt, stop, allow_schedule_change):
  """The loop of train_and_evaluate, after the checks."""
  mesh = parallel.data_mesh()
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  model = network.create_model(config.model, info.num_classes)
  names = stages(config)
  stage_steps = total_steps // len(names)
  steps_per_epoch = stage_steps // config.train.num_epochs
  if names == (None,):
    tx, schedules = create_optimizer(config.optim, total_steps, steps_per_epoch)
  else:
    tx, schedules = create_staged_optimizer(config.optim, stage_steps, names, steps_per_epoch)
  state, source = initial_state(config, model, tx, ckpt, replicated, allow_schedule_change)
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
  step_fns = {name: make_train_step(config.optim, model, tx, mesh, stage=name, augment=augment)
              for name in names}
  eval_fn = make_eval_step(model, mesh)
  # ACoL: evaluations during stage 'a' score classifier A alone (B is not trained yet).
  stage_eval_fn = make_eval_step(model, mesh, method='stage_a') if len(names) > 1 else eval_fn
  batches = parallel.prefetch(
      pipeline.train_batches(config, start_step=start, process_index=jax.process_index(),
                             process_count=jax.process_count()), sharded, TRAIN_KEYS)
  log = _Logger(workdir, start, total_steps, config.train.batch_size, schedules)
  saved_step = start
  try:
    for step in range(start + 1, total_steps + 1):
      if stop.signum:
        _stopped(stop, step - 1, ckpt, state, config, saved_step, log)
      stage = stage_of(step, stage_steps, names)
      state, metrics = step_fns[stage](state, next(batches))
      log.step(metrics)
      if step == start + 1:
        jax.block_until_ready(metrics)
        _LOG.info('first step done %.1f s after the process started (compilation included).',
                  time.time() - _process_start_time())
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
