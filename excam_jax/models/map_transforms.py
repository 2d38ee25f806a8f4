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
- 'advcam': adversarial climbing as AdvCAM publishes it (Lee et al., CVPR 2021; the reference is
  jbeomlee93/AdvCAM obtain_CAM_masking.py). Each climbed class c of an image climbs its own
  score from x_0 = the image, for t = 0..T-2:

    x_{t+1} = clip(x_t + xi * g_t / max|g_t|),
    g_t = grad_x [s_c(x_t) - sum_{k != c} relu(s_k(x_t))
                  - lambda * sum_cells M_t |relu(z_c(x_t)) - relu(z_c(x_0))|],
    A_t = sum_{s <= t} relu(z_c(x_s)),   M_t = 1[A_t / max A_t > tau],

  and its map is A / max A (0 where A is all 0), A = A_{T-1}: the sum of the relu'd maps of the
  image and of T - 1 climbed images, T = `map_expansion_climb_steps` (27, the reference's
  adv_iter: its loop adds the map of x_0..x_{T-1}, step 0 included, and takes one more step whose
  image it never looks at, which is skipped here). As in the reference, clip is to the current
  image's own value range and max|g| is over the whole image. M holds the region already found
  at its first value, so the climb grows the map elsewhere instead of inflating the peak, and the
  other classes' scores are kept from rising. xi = `map_expansion_step_size` (0.08), lambda =
  `map_expansion_weight` (7), tau = `map_expansion_threshold` (0.5).
  The climbed classes are the image's predicted ones (sigmoid(s_c) > 0.5; the top-scoring class
  when none is), at most P = `map_expansion_climb_classes` of them, the top-scoring first; the
  others (predicted classes beyond P included) get A at T = 1, relu(z_c) / max relu(z_c), so
  every map is on [0, 1]. Boxes at > 0 keep the support of A. Unlike the reference: z_c is the
  model's own class map (the reference takes Grad-CAM at its stage 4 of a CAM network, close to
  relu(z_c)), s the model's logits (the reference's are spatial means of relu'd maps); one scale
  and no flip; predicted classes instead of the ground truth; M from the accumulated map A_t
  (SPEC.md 1.4), where the released code takes it from the current map relu(z_c(x_t))
  (`adversarial_climbing(..., current_mask=True)`).
- 'cluster': re-activation by the trunk's features (after CREAM, Xu et al., CVPR 2022, without
  its learned class embeddings). For each class c of an image, with f the trunk's features at
  each cell, L2-normalised, and w^0 = relu(z_c) / max relu(z_c) (0 where z_c <= 0 everywhere):

    for t = 1..T (`map_expansion_steps`):
      mu_fg = sum w f / sum w,  mu_bg = sum (1 - w) f / sum (1 - w),
      s = kappa (f . mu_fg - f . mu_bg),  w = sigmoid(s);

  the class map is s (T >= 1), kappa = `map_expansion_temperature` (10): boxes at s > 0 keep the
  cells whose features lie nearer the class map's weighted foreground than its background, so a
  weaker part of the object that looks like its discriminative part joins it. A map with no
  positive cell stays as it is. Needs the model's aux['features'] (every head but ACoL's).
- 'affinity': propagation of each class map along the trunk's own feature affinities: the random
  walk of PSA (Ahn & Kwak, CVPR 2018) with the trunk's features in place of its learned affinity
  network, as SEAM's pixel-correlation module does (Wang et al., CVPR 2020). With f the trunk's
  features at each cell, L2-normalised,

    A_ij = relu(f_i . f_j) ** beta,   T = D^-1 A (each row sums to 1; A_ii = 1 > 0),
    z' = T^t z,   t = `map_expansion_steps` (2),  beta = `map_expansion_affinity_power` (8);

  each cell's value becomes a weighted mean of the values of the cells whose features resemble its
  own, so a weaker region of the object that looks like its discriminative part takes a share of
  the part's evidence while background cells average background. z' stays on z's scale (means
  of z): boxes at z' > 0. Needs the model's aux['features'] (every head but ACoL's).
- 'guided': each class map bilinearly upsampled to the image's size (half-pixel centres, as the
  evaluation upsamples), then the colour guided filter (He, Sun & Tang, ECCV 2010) with the image
  as its guide, rescaled to [0, 1] per image: in each (2r + 1)^2 window k the map p is fitted as
  q = a_k . I + b_k by least squares with ridge eps,

    a_k = (Sigma_k + eps U)^-1 cov_k(I, p),   b_k = mean_k(p) - a_k . mean_k(I),
    q_i = mean over the windows k holding i of (a_k . I_i + b_k),

  windows clipped at the image's border; r = `map_expansion_radius` (px, 8), eps =
  `map_expansion_eps` (0.01). Where the map changes inside a window the fit follows the image's
  colour edges, so the map's border moves from the feature grid's halo to the object's outline;
  q is locally affine in z and keeps its scale: boxes at q > 0. The maps come out at the
  image's size.
- 'erase+relative', 'advcam+relative': the transform, then the relative rule on its maps.

In every case the scores stay those of the plain image, so classification and the ranking of
the detections do not change. Evaluations during training score the plain maps; `evaluate` and
`localize` apply the transform.
"""

import functools

import jax
import jax.numpy as jnp

from excam_jax import config_schema
from excam_jax.models import acol

EXPANSIONS = config_schema.EXPANSIONS
# Erasing's passes and AdvCAM's steps are separate fields, so that AdvCAM's 27 leaves erasing's
# 2 alone; a config saved before a field existed gets its value here.
DEFAULTS = {'map_expansion': 'none', 'map_expansion_steps': 2, 'map_expansion_threshold': 0.5,
            'map_expansion_step_size': 0.08, 'map_expansion_weight': 7.0,
            'map_expansion_climb_steps': 27, 'map_expansion_climb_classes': 2,
            'map_expansion_temperature': 10.0, 'map_expansion_affinity_power': 8.0,
            'map_expansion_radius': 8, 'map_expansion_eps': 0.01}
# The transforms that read the trunk's features (aux['features']; ACoL's heads have none).
READS_FEATURES = ('cluster', 'affinity')


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


def max_normalise(maps):
  """maps / their maximum over space (axes 1, 2) per map; 0 where the maximum is <= 0."""
  peak = jnp.max(maps, axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, maps / jnp.where(peak > 0, peak, 1.0), 0.0)


def own_map(maps, own):
  """relu(z_c) (N, h, w) of each image's class c, one-hot in `own` (N, C): products, not a dot,
  which a GPU or TPU would round at its default precision."""
  return jax.nn.relu(jnp.sum(maps * own[:, None, None, :], axis=-1))


def climbing_objective(logits, maps, own, initial, total, threshold, weight, current_mask=False):
  """AdvCAM's objective summed over the climbed images: (value, relu(z_c) (N, h, w)).

  value = sum_n s_c - sum_{k != c} relu(s_k) - weight * sum_cells M |relu(z_c) - initial|,
  M = 1[A / max A > threshold], A = total + relu(z_c) (the map accumulated up to this step).

  Args:
    logits: (N, C) scores of the climbed images.
    maps: (N, h, w, C) their class maps.
    own: (N, C) one-hot of each image's climbed class c; a zero row (padding) adds nothing.
    initial: (N, h, w) relu(z_c(x_0)), the maps of the plain images.
    total: (N, h, w) the sum of relu(z_c) over the earlier steps.
    threshold: tau, M's level.
    weight: lambda, the restriction's weight.
    current_mask: M from relu(z_c) alone, as the released code does.
  """
  score = jnp.sum(logits * own, axis=-1)
  others = jnp.sum(jax.nn.relu(logits) * (1.0 - own), axis=-1)
  region = own_map(maps, own)
  held = max_normalise(jax.lax.stop_gradient(region if current_mask else total + region))
  change = region - initial
  # |change| with the subgradient 0 at 0, as torch.abs has (jnp.abs's is 1), so that the first
  # step, where nothing has changed yet, is not pushed by the restriction.
  distance = change * jax.lax.stop_gradient(jnp.sign(change))
  restrict = jnp.sum(jnp.where(held > threshold, distance, 0.0), axis=(1, 2))
  return jnp.sum(jnp.max(own, axis=-1) * (score - others - weight * restrict)), region


def climb_step(x, grad, step_size):
  """x + step_size * grad / max|grad| per image, clipped to the image's own [min x, max x]."""
  axes = (1, 2, 3)
  scale = jnp.max(jnp.abs(grad), axis=axes, keepdims=True) + 1e-12
  low, high = jnp.min(x, axis=axes, keepdims=True), jnp.max(x, axis=axes, keepdims=True)
  return jnp.clip(x + step_size * grad / scale, low, high)


def climbed_classes(logits, max_classes):
  """(B, P, C) one-hots of the classes each image climbs, P = min(C, max_classes): its P
  top-scoring classes, kept where predicted (s > 0) or top-scoring; other rows are zero."""
  p = min(logits.shape[-1], max_classes)
  top, classes = jax.lax.top_k(logits, p)
  keep = (top > 0) | (jnp.arange(p) == 0)
  return jax.nn.one_hot(classes, logits.shape[-1], dtype=logits.dtype) * keep[..., None]


def adversarial_climbing(apply_fn, images, steps, threshold, step_size, weight, max_classes=2,
                         current_mask=False):
  """(logits of the plain images, AdvCAM's maps (B, h, w, C) on [0, 1]) (see above).

  The B * P (image, class) slots climb as one batch of a fixed size, padding slots included, so
  that the transform compiles once per batch shape.

  Args:
    apply_fn: images -> (logits (B, C), class_maps (B, h, w, C)).
    images: (B, H, W, 3) normalised images.
    steps: T >= 1, the maps summed: the image's and those of T - 1 climbed images.
    threshold: tau, the level of the restriction mask M.
    step_size: xi.
    weight: lambda, the restriction's weight.
    max_classes: P, the most classes climbed per image.
    current_mask: M from the current map instead of the accumulated one (the released code).
  """
  logits, maps = apply_fn(images)
  own = climbed_classes(logits, max_classes)
  b, p, c = own.shape
  own = own.reshape(b * p, c)

  def objective(x, total, initial, first):
    scores, z = apply_fn(x)
    # At t = 0 the held region is compared with itself from this same pass, so that |change| is
    # exactly 0 (another pass can differ in the last bit, and its sign would push the first step).
    initial = jnp.where(first, jax.lax.stop_gradient(own_map(z, own)), initial)
    return climbing_objective(scores, z, own, initial, total, threshold, weight, current_mask)

  gradient = jax.grad(objective, has_aux=True)

  def body(t, carry):
    x, total, initial = carry
    grad, region = gradient(x, total, initial, t == 0)
    initial = jnp.where(t == 0, region, initial)
    return climb_step(x, grad, step_size), total + region, initial

  x = jnp.repeat(images, p, axis=0)
  zeros = jnp.zeros((b * p,) + maps.shape[1:3], maps.dtype)
  x, total, _ = jax.lax.fori_loop(0, steps - 1, body, (x, zeros, zeros))
  climbed = max_normalise(total + own_map(apply_fn(x)[1], own)).reshape((b, p) + zeros.shape[1:])
  own = own.reshape(b, p, 1, 1, c)
  chosen = jnp.sum(climbed[..., None] * own, axis=1)
  return logits, jnp.where(jnp.sum(own, axis=1) > 0, chosen, max_normalise(jax.nn.relu(maps)))


def _unit_cells(features):
  """Features (B, h, w, K) as (B, h * w, K) float32, each cell's vector L2-normalised."""
  f = features.reshape(features.shape[0], -1, features.shape[-1]).astype(jnp.float32)
  return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)


def cluster_maps(maps, features, steps, temperature):
  """'cluster' (module docstring) on maps (B, h, w, C) with features (B, h, w, K)."""
  b, h, w, c = maps.shape
  f = _unit_cells(features)
  z = maps.reshape(b, h * w, c).astype(jnp.float32)
  positive = jax.nn.relu(z)
  peak = positive.max(axis=1, keepdims=True)
  weight = jnp.where(peak > 0, positive / jnp.where(peak > 0, peak, 1.0), 0.0)  # (B, n, C)
  s = z
  for _ in range(steps):
    fg = jnp.einsum('bnc,bnk->bck', weight, f) / jnp.maximum(weight.sum(1), 1e-12)[..., None]
    bg = jnp.einsum('bnc,bnk->bck', 1 - weight, f) / jnp.maximum((1 - weight).sum(1),
                                                                  1e-12)[..., None]
    s = temperature * jnp.einsum('bnk,bck->bnc', f, fg - bg)
    weight = jax.nn.sigmoid(s)
  s = jnp.where(peak > 0, s, z)  # Nothing found: the map as it was.
  return s.reshape(b, h, w, c)


def affinity_maps(maps, features, steps, power):
  """'affinity' (module docstring) on maps (B, h, w, C) with features (B, h, w, K)."""
  b, h, w, c = maps.shape
  f = _unit_cells(features)
  affinity = jax.nn.relu(jnp.einsum('bik,bjk->bij', f, f)) ** power
  # A cell's affinity to itself is 1 (0 only for an all-zero feature): every row has a positive sum.
  walk = affinity / jnp.maximum(affinity.sum(axis=-1, keepdims=True), 1e-12)
  z = maps.reshape(b, h * w, c).astype(jnp.float32)
  for _ in range(steps):
    z = jnp.einsum('bij,bjc->bic', walk, z)
  return z.reshape(b, h, w, c).astype(maps.dtype)


def _box_mean(x, radius):
  """Mean of x (B, H, W, ...) over each (2r + 1)^2 window, clipped at the border (integral image)."""
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 0), (1, 0)) + ((0, 0),) * (x.ndim - 3))
  total = jnp.cumsum(jnp.cumsum(padded, axis=1), axis=2)
  lo_r = jnp.clip(jnp.arange(h) - radius, 0, h)
  hi_r = jnp.clip(jnp.arange(h) + radius + 1, 0, h)
  lo_c = jnp.clip(jnp.arange(w) - radius, 0, w)
  hi_c = jnp.clip(jnp.arange(w) + radius + 1, 0, w)
  sums = (total[:, hi_r][:, :, hi_c] - total[:, lo_r][:, :, hi_c]
          - total[:, hi_r][:, :, lo_c] + total[:, lo_r][:, :, lo_c])
  counts = ((hi_r - lo_r)[:, None] * (hi_c - lo_c)[None, :]).astype(x.dtype)
  return sums / counts.reshape((1, h, w) + (1,) * (x.ndim - 3))


def guided_maps(maps, images, radius, eps):
  """'guided' (module docstring): maps (B, h, w, C), images (B, H, W, 3) -> (B, H, W, C)."""
  b, height, width, _ = images.shape
  p = jax.image.resize(maps.astype(jnp.float32), (b, height, width, maps.shape[-1]), 'bilinear')
  guide = images.astype(jnp.float32)
  low = guide.min(axis=(1, 2, 3), keepdims=True)
  high = guide.max(axis=(1, 2, 3), keepdims=True)
  guide = (guide - low) / jnp.maximum(high - low, 1e-12)
  mean_i = _box_mean(guide, radius)  # (B, H, W, 3)
  mean_p = _box_mean(p, radius)  # (B, H, W, C)
  cov_ip = _box_mean(guide[..., :, None] * p[..., None, :], radius) - (
      mean_i[..., :, None] * mean_p[..., None, :])  # (B, H, W, 3, C)
  sigma = _box_mean(guide[..., :, None] * guide[..., None, :], radius) - (
      mean_i[..., :, None] * mean_i[..., None, :])  # (B, H, W, 3, 3)
  a = jnp.linalg.solve(sigma + eps * jnp.eye(3, dtype=sigma.dtype), cov_ip)  # (B, H, W, 3, C)
  bias = mean_p - jnp.einsum('bhwkc,bhwk->bhwc', a, mean_i)
  return (jnp.einsum('bhwkc,bhwk->bhwc', _box_mean(a, radius), guide)
          + _box_mean(bias, radius)).astype(maps.dtype)


def transform(apply_fn, images, kind, fields):
  """The maps of `kind` (one of EXPANSIONS but 'none') with the values of `fields`."""
  base, _, then = kind.partition('+')
  level = float(fields['map_expansion_threshold'])
  steps = int(fields['map_expansion_steps'])
  if base == 'relative':
    return relative_maps(apply_fn, images, level)
  if base == 'cluster':
    logits, maps, features = apply_fn(images, with_features=True)
    return logits, cluster_maps(maps, features, steps, float(fields['map_expansion_temperature']))
  if base == 'affinity':
    logits, maps, features = apply_fn(images, with_features=True)
    return logits, affinity_maps(maps, features, steps,
                                 float(fields['map_expansion_affinity_power']))
  if base == 'guided':
    logits, maps = apply_fn(images)
    return logits, guided_maps(maps, images, int(fields['map_expansion_radius']),
                               float(fields['map_expansion_eps']))
  if base == 'erase':
    logits, maps = expand_by_erasing(apply_fn, images, steps, level)
  else:
    logits, maps = adversarial_climbing(apply_fn, images, int(fields['map_expansion_climb_steps']),
                                        level, float(fields['map_expansion_step_size']),
                                        float(fields['map_expansion_weight']),
                                        int(fields['map_expansion_climb_classes']))
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
  if base == 'cluster':
    return (f"cluster: {fields['map_expansion_steps']} re-weighting steps of each class map by "
            "the cosine of the trunk's features to its weighted foreground minus its background "
            f"centroid, times {fields['map_expansion_temperature']}")
  if base == 'affinity':
    return (f"affinity: {fields['map_expansion_steps']} random-walk steps of each class map along "
            "the trunk's feature affinities relu(cos)^"
            f"{fields['map_expansion_affinity_power']}, each row normalised to sum 1")
  if base == 'guided':
    return (f"guided: each class map upsampled to the image and passed through the colour guided "
            f"filter of the image (radius {fields['map_expansion_radius']} px, eps "
            f"{fields['map_expansion_eps']})")
  if base == 'erase':
    text = (f"test-time erasing: {fields['map_expansion_steps']} passes, erase where a pass's "
            f'normalised map of a predicted class is >= {level}, cellwise max of the maps')
  else:
    steps = fields['map_expansion_climb_steps']
    text = (f"adversarial climbing (AdvCAM): each predicted class (at most "
            f"{fields['map_expansion_climb_classes']} per image, else the top-scoring one) climbs "
            f"{steps - 1} steps of size {fields['map_expansion_step_size']}, restriction weight "
            f"{fields['map_expansion_weight']} on the cells above {level} of the accumulated "
            f"map's maximum; its map is the sum of the {steps} relu'd maps over its maximum, the "
            "other classes' relu(z) over its maximum")
  return text + ('; then ' + relative if then == 'relative' else '')
