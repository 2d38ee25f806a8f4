"""Inference-time transforms of the class maps of any trained checkpoint.

`config.eval.map_expansion` is one of

- 'none': the model's maps z as they are; boxes keep z > 0 (sigma(z) > 0.5).
- 'relative': z' = (z - min z) / (max z - min z) - level per (image, class) map, level =
  `config.eval.map_expansion_threshold`; boxes at z' > 0 keep the cells above that fraction of
  the map's range: the relative rule of ACoL's fused maps (models/acol.py) and of a single tau of
  the MaxBoxAcc sweep, so WILDCAT and ACoL can be scored by the same box rule. Monotone in each
  map: pointwise AP and MaxBoxAcc (which sweeps its own relative thresholds) do not change; the
  scores, and so classification and the detections' ranking, stay the model's.
- 'erase': iterative test-time erasing, which replaces a model's class maps by

  z^0 = the maps of the image;
  for t = 1..T (`config.eval.map_expansion_steps`): the image is erased (set to 0, the mean colour)
    wherever the previous pass's min-max normalised map of a predicted class (sigmoid(s_c) > 0.5)
    is >= `config.eval.map_expansion_threshold`, cumulatively, and the model runs again, giving z^t;
  the class map is the cellwise max over t of z^t; the scores stay those of the first pass.

Each pass hides the evidence the earlier ones found, so the next finds the next most telling
region of the object (its body after its most discriminative part), as adversarial erasing does
in training (Wei et al., CVPR 2017) and ACoL's second classifier; here nothing is retrained, so
it applies to every head. The maximum keeps each region's own evidence on the scale of z, so
boxes at z > 0 stay comparable with the plain maps'. Evaluations during training score the
plain maps; `evaluate` and `localize` apply the expansion.
"""

import functools

import jax.numpy as jnp

from excam_jax import config_checks
from excam_jax.models import acol

EXPANSIONS = config_checks.EXPANSIONS


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


def from_config(eval_config):
  """config.eval's transform as (apply_fn, images) -> (logits, maps), or None for 'none'.

  An older config without the fields counts as 'none'.
  """
  kind = 'none' if eval_config is None else eval_config.get('map_expansion', 'none')
  if kind == 'none':
    return None
  threshold = float(eval_config.get('map_expansion_threshold', 0.5))
  if kind == 'relative':
    return functools.partial(relative_maps, level=threshold)
  return functools.partial(expand_by_erasing, steps=int(eval_config.get('map_expansion_steps', 2)),
                           threshold=threshold)


def describe(fields):
  """One line for the report's protocol: what `fields` (map_expansion_fields) do to the maps."""
  kind, threshold = fields['map_expansion'], fields['map_expansion_threshold']
  if kind == 'none':
    return 'none (the plain class maps)'
  if kind == 'relative':
    return (f'relative: each class map min-max normalised minus {threshold}, so boxes keep the '
            f'cells above {threshold} of its range')
  return (f"test-time erasing: {fields['map_expansion_steps']} passes, erase where a pass's "
          f"normalised map of a predicted class is >= {threshold}, cellwise max of the maps")
