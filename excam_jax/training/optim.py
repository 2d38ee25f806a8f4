"""The optimizer: learning-rate schedules and the trunk/head parameter groups."""

import functools

import jax
import optax

from excam_jax import config_schema


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
    every = optim.get('decay_every_epochs', config_schema.OPTIM_DEFAULTS['decay_every_epochs'])
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
  field = {name: optim.get(name, default) for name, default in config_schema.OPTIM_DEFAULTS.items()}
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
