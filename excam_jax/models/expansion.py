"""Inference-time map expansion on any trained checkpoint: iterative test-time erasing.

`config.eval.map_expansion = 'erase'` replaces a model's class maps by

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


def from_config(eval_config):
  """(steps, threshold) of config.eval's expansion, or None for 'none' (or an older config)."""
  if eval_config is None or eval_config.get('map_expansion', 'none') == 'none':
    return None
  return int(eval_config.get('map_expansion_steps', 2)), float(eval_config.get('map_expansion_threshold',
                                                                            0.5))
