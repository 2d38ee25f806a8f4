"""The train state and the pure, top-level train and eval steps, jitted over a 'data' mesh.

The model, the optimizer and the loss options are bound with functools.partial; each step is
jitted once with the state donated; per-step randomness is fold_in(state.rng, step).
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from excam_jax.models import acol
from excam_jax.models import losses
from excam_jax.training import parallel

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


def train_step(state, batch, *, model, tx, diversity_loss='none', diversity_weight=0.0,
               stage=None, area_weight=0.0, augment=None, loss='bce', background_weight=0.0,
               background_detach=False):
  """One SGD step on a (global) batch: BCE or softmax cross-entropy (`loss`, models/losses.py;
  + diversity, + map-area, + BAS's background ratio on a generator's maps), BatchNorm statistics
  updated.

  With `stage` ('a' or 'b', ACoL), only params[stage] is trained, by tx.transforms[stage]
  (a StagedOptimizer), through the model's method `stage_<stage>`.
  `augment` (training/augment.py from_config), if any, maps (key, images, labels) to the
  images and (soft) labels that the step trains on, in either ACoL stage.

  Returns:
    (new state, metrics): metrics hold scalar 'loss' and 'bce_loss' or 'softmax_loss' (and
    'diversity_loss', 'area_loss', 'background_loss'), the gradients' and the updated parameters' global norms
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
    if background_weight:
      background = losses.background_loss(aux['activation_maps'], aux['class_maps'], labels,
                                          batch['mask'], detach=background_detach)
      metrics['background_loss'] = background
      total = total + background_weight * background
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
                        loss=optim.get('loss', 'bce'),
                        background_weight=optim.get('background_weight', 0.0),
                        background_detach=optim.get('background_detach', False)),
      in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
      donate_argnums=0)


def make_eval_step(model, mesh, method=None):
  """eval_step jitted over `mesh`; outputs replicated so every process can read them."""
  return jax.jit(functools.partial(eval_step, model=model, method=method),
                 in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                 out_shardings=parallel.replicated(mesh))


def init_variables(rng, *, model, image_size):
  params_rng, dropout_rng = jax.random.split(rng)
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return model.init({'params': params_rng, 'dropout': dropout_rng}, images, train=False)


def create_state(rng, *, model, tx, image_size, trunk_variables=None):
  """A fresh TrainState; `trunk_variables` ({'params', 'batch_stats'}) replace the trunk's."""
  init_rng, train_rng = jax.random.split(rng)
  variables = init_variables(init_rng, model=model, image_size=image_size)
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
