"""Where a run starts: the latest readable checkpoint, else pretrained trunk weights, else
scratch."""

import functools

import jax
import numpy as np

from excam_jax.errors import UserError
from excam_jax.models import acol
from excam_jax.training import pretrained
from excam_jax.training.steps import create_state, init_variables


def _load_pretrained(config, model, image_size):
  """Trunk variables from config.model.pretrained, checked leaf by leaf against the model's trunk."""
  weights = pretrained.load_resnet_weights(config.model.pretrained, depth=config.model.depth,
                                           width=config.model.width)
  abstract = jax.eval_shape(functools.partial(init_variables, model=model,
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


def compile_once(fn, out_shardings, *args, **kwargs):
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
    state = compile_once(create, replicated, rng, trunk_variables=trunk)
    return state, f'pretrained weights {config.model.pretrained}'
  return compile_once(create, replicated, rng), 'scratch'


def _check_resume(ckpt, config, allow_schedule_change, step):
  ckpt.check_compatible(config, step, allow_schedule_change=allow_schedule_change)
