"""Inference-time transforms of the class maps of any trained checkpoint.

`config.eval.map_expansion` is one of EXPANSIONS:

- 'none': the model's maps z as they are; boxes keep z > 0 (sigma(z) > 0.5).
- 'relative': z' = (z - min z) / (max z - min z) - level per (image, class) map, level =
  `config.eval.map_expansion_threshold`; boxes at z' > 0 keep the cells above that fraction of
  the map's range: the relative rule of ACoL's fused maps (models/acol.py) and of a single tau of
  the MaxBoxAcc sweep, so WILDCAT and ACoL can be scored by the same box rule. Monotone in each
  map: pointwise AP and MaxBoxAcc (which sweeps its own relative thresholds) do not change; the
  scores, and so classification and the detections' ranking, stay the model's.
- 'erase': iterative test-time erasing, which replaces a model's class maps by

    z^0 = the maps of the image;
    for t = 1..T (`map_expansion_steps`): the image is erased (set to 0, the mean colour)
      wherever the previous pass's min-max normalised map of a predicted class (sigmoid(s_c) >
      0.5) is >= `map_expansion_threshold`, cumulatively, and the model runs again, giving z^t;
    the class map is the cellwise max over t of z^t.

  Each pass hides the evidence the earlier ones found, so the next finds the next most telling
  region of the object, as adversarial erasing does in training (Wei et al., CVPR 2017) and
  ACoL's second classifier; here nothing is retrained, so it applies to every head. The maximum
  keeps each region's own evidence on the scale of z.
- 'advcam': adversarial climbing, after AdvCAM (Lee et al., CVPR 2021). For every class c
  separately the image climbs its own score: x^0 = the image, and for t = 0..T-1

    x^{t+1} = clip(x^t + xi * g / max|g|),
    g = grad_x [s_c(x^t) - sum_{k != c} relu(s_k(x^t))
                - lambda * sum_cells M^t |relu(z_c(x^t)) - relu(z_c(x^0))|],

  clipped to the image's own value range, M^t the cells where relu(z_c(x^t)) / its maximum >
  `map_expansion_threshold` (the region already found, held at its first value so that the
  climb grows the map elsewhere instead of inflating the peak); xi = `map_expansion_step_size`,
  lambda = `map_expansion_weight`, T = `map_expansion_steps`. The other classes' scores are kept
  from rising. The class map is the mean over t = 0..T of z_c(x^t), on the scale of z. (AdvCAM
  accumulates relu'd maps and divides by their maximum: 'advcam+relative' gives that relative
  form; its defaults are T = 27, xi = 0.08, lambda = 7 for its Grad-CAM maps.)
- 'erase+relative', 'advcam+relative': the transform, then the relative rule on its maps.

In every case the scores stay those of the plain image, so classification and the ranking of
the detections do not change. Evaluations during training score the plain maps; `evaluate` and
`localize` apply the transform.
"""

import functools

import jax
import jax.numpy as jnp

from excam_jax import config_checks
from excam_jax.models import acol

EXPANSIONS = config_checks.EXPANSIONS
DEFAULTS = {'map_expansion': 'none', 'map_expansion_steps': 2, 'map_expansion_threshold': 0.5,
            'map_expansion_step_size': 0.08, 'map_expansion_weight': 7.0}


def expand_by_erasing(apply_fn, images, steps, threshold):
  """(logits of the first pass, max over passes of the class maps) for `steps` erasing passes.

  Args:
    apply_fn: images -> (logits (B, C), class_maps (B, h, w, C)).
    images: (B, H, W, 3) normalised images.
    steps: number of erasing passes T >= 0 (0 returns the plain outputs).
    threshold: erase where a pass's normalised map of a predicted class is >= threshold.
  """
  logits, maps = apply_fn(images)
  predicted = (logits > 0).astype(jnp.float32)
  best, current = maps, maps
  mask = jnp.zeros(images.shape[:3] + (1,), jnp.float32)
  for _ in range(steps):
    mask = jnp.maximum(mask, acol.erase_mask(current, predicted, images.shape[1:3], threshold))
    _, current = apply_fn(images * (1.0 - mask).astype(images.dtype))
    best = jnp.maximum(best, current)
  return logits, best


def relative_maps(apply_fn, images, level):
  """(logits, min-max normalised class maps - level): boxes at > 0 keep cells above `level`."""
  logits, maps = apply_fn(images)
  return logits, acol.normalise_maps(maps) - level


def climbing_objective(logits, maps, initial, cls, threshold, weight):
  """AdvCAM's objective for class `cls` per image, summed: (value, maps of cls (B, h, w)).

  Args:
    logits: (B, C) scores of the climbed images.
    maps: (B, h, w, C) their class maps.
    initial: (B, h, w) relu(z_cls) of the plain images.
    cls: the class (an int or a traced scalar).
    threshold: the restricted region is relu(z_cls) / max > threshold.
    weight: lambda, the restriction's weight.
  """
  own = jax.nn.one_hot(cls, logits.shape[-1], dtype=logits.dtype)
  score = jnp.sum(logits * own, axis=-1)
  others = jnp.sum(jax.nn.relu(logits) * (1.0 - own), axis=-1)
  current = jnp.sum(maps * own, axis=-1)
  region = jax.nn.relu(current)
  found = region > threshold * jnp.max(region, axis=(1, 2), keepdims=True)
  found = jax.lax.stop_gradient(found & (jnp.max(region, axis=(1, 2), keepdims=True) > 0))
  change = region - initial
  # |change| with the subgradient 0 at 0 (jnp.abs's is 1 there), so that the first step, where
  # nothing has changed yet, is not pushed by the restriction.
  distance = change * jax.lax.stop_gradient(jnp.sign(change))
  restrict = jnp.sum(jnp.where(found, distance, 0.0), axis=(1, 2))
  return jnp.sum(score - others - weight * restrict), current


def climb_step(x, grad, low, high, step_size):
  """x + step_size * grad / max|grad| per image, clipped to [low, high] per image."""
  scale = jnp.max(jnp.abs(grad), axis=(1, 2, 3), keepdims=True) + 1e-12
  return jnp.clip(x + step_size * grad / scale, low, high)


def adversarial_climbing(apply_fn, images, steps, threshold, step_size, weight):
  """(logits of the plain images, mean over the climb of each class's own map) (see above)."""
  logits, maps = apply_fn(images)
  low = jnp.min(images, axis=(1, 2, 3), keepdims=True)
  high = jnp.max(images, axis=(1, 2, 3), keepdims=True)

  def one_class(cls):
    initial = jax.nn.relu(jnp.take(maps, cls, axis=-1))

    def objective(x):
      return climbing_objective(*apply_fn(x), initial, cls, threshold, weight)

    gradient = jax.grad(objective, has_aux=True)

    def body(_, carry):
      x, total = carry
      grad, current = gradient(x)
      return climb_step(x, grad, low, high, step_size), total + current

    x, total = jax.lax.fori_loop(0, steps, body, (images, jnp.zeros(maps.shape[:3], maps.dtype)))
    return (total + jnp.take(apply_fn(x)[1], cls, axis=-1)) / (steps + 1)

  climbed = jax.lax.map(one_class, jnp.arange(maps.shape[-1]))  # (C, B, h, w)
  return logits, jnp.moveaxis(climbed, 0, -1)


def transform(apply_fn, images, kind, fields):
  """The maps of `kind` (one of EXPANSIONS but 'none') with the values of `fields`."""
  base, _, then = kind.partition('+')
  level = float(fields['map_expansion_threshold'])
  steps = int(fields['map_expansion_steps'])
  if base == 'relative':
    return relative_maps(apply_fn, images, level)
  if base == 'erase':
    logits, maps = expand_by_erasing(apply_fn, images, steps, level)
  else:
    logits, maps = adversarial_climbing(apply_fn, images, steps, level,
                                        float(fields['map_expansion_step_size']),
                                        float(fields['map_expansion_weight']))
  if then == 'relative':
    maps = acol.normalise_maps(maps) - level
  return logits, maps


def from_config(eval_config):
  """config.eval's transform as (apply_fn, images) -> (logits, maps), or None for 'none'.

  Fields absent from the config (an older one) take DEFAULTS.
  """
  fields = dict(DEFAULTS)
  fields.update({k: v for k, v in (eval_config or {}).items() if k in DEFAULTS})
  if fields['map_expansion'] == 'none':
    return None
  return functools.partial(transform, kind=fields['map_expansion'], fields=fields)


def describe(fields):
  """One line for the report's protocol: what `fields` (map_expansion_fields) do to the maps."""
  kind, level = fields['map_expansion'], fields['map_expansion_threshold']
  base, _, then = kind.partition('+')
  if base == 'none':
    return 'none (the plain class maps)'
  relative = (f'each class map min-max normalised minus {level}, so boxes keep the cells above '
              f'{level} of its range')
  if base == 'relative':
    return 'relative: ' + relative
  if base == 'erase':
    text = (f"test-time erasing: {fields['map_expansion_steps']} passes, erase where a pass's "
            f'normalised map of a predicted class is >= {level}, cellwise max of the maps')
  else:
    text = (f"adversarial climbing (AdvCAM): {fields['map_expansion_steps']} steps of size "
            f"{fields['map_expansion_step_size']} per class, restriction weight "
            f"{fields['map_expansion_weight']} on the cells above {level} of the map's maximum, "
            'mean of the maps over the climb')
  return text + ('; then ' + relative if then == 'relative' else '')
