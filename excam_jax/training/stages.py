"""Training stages: one stage for every head, ACoL's two (classifier A, then B on images erased
by A) behind the same list, each with its own optimizer state and schedule."""

from excam_jax.models import acol
from excam_jax.training.optim import create_optimizer


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


def create(config, total_steps, steps_per_epoch):
  """(optimizer, {'trunk', 'head'} schedules by global step, stage names, steps per stage) of
  the run: one optimizer over `total_steps`, or ACoL's staged one over equal stages."""
  names = stages(config)
  stage_steps = total_steps // len(names)
  if names == (None,):
    tx, schedules = create_optimizer(config.optim, total_steps, steps_per_epoch)
  else:
    tx, schedules = create_staged_optimizer(config.optim, stage_steps, names, steps_per_epoch)
  return tx, schedules, names, stage_steps
