"""WILDCAT + ACoL as the thesis describes it (section 3.8.2; docs/method.md section 1.4).

Two classifiers of one kind (`model.acol_head`, WILDCAT by default), trained one after the other
by the same entry point (excam_jax/train.py: stage 'a', then stage 'b'):

- classifier A is trained on the images as they are;
- classifier B is trained on the images erased where A's min-max normalised class map is
  >= `model.acol_threshold` (0.6) for any of the image's ground-truth classes (A frozen, in
  inference mode);
- at test the images are erased with the classes A predicts (sigmoid(s_c) > 0.5), and the class
  map fuses A's and B's maps as `model.acol_fusion` says (`fuse_maps`): 'normalised' (default,
  the thesis's) is the mean of their min-max normalised maps, shifted by -0.5 so that the boxes'
  threshold z > 0 (config.eval.threshold = 0) keeps the cells where that mean exceeds 0.5, a
  relative rule; 'logits' is the mean of their raw maps z, so that boxes at z > 0 keep
  sigma(z) > 0.5 as for WILDCAT. The class scores are A's either way: B only ever sees erased
  images. The fusion changes only inference: one checkpoint can be evaluated both ways.

Erasing sets the pixels to 0 in the normalised input, the data set's mean colour. The original
ACoL erases features between two heads on one trunk and fuses by an elementwise max; this is the
thesis's image-level variant.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

STAGES = ('a', 'b')


def normalise_maps(class_maps):
  """Min-max normalises each (image, class) map over space to [0, 1]; a constant map -> zeros.

  Args:
    class_maps: (B, h, w, C).
  """
  low = class_maps.min(axis=(1, 2), keepdims=True)
  span = class_maps.max(axis=(1, 2), keepdims=True) - low
  safe = jnp.where(span > 0, span, 1.0)
  return jnp.where(span > 0, (class_maps - low) / safe, 0.0)


def erase_mask(class_maps, classes, image_size, threshold=0.6):
  """Where to erase: 1 where some selected class's normalised map (upsampled) is >= threshold.

  Args:
    class_maps: (B, h, w, C) maps of classifier A.
    classes: (B, C) 0/1 selection (ground-truth labels in training, predictions at test).
    image_size: (H, W) of the images; the maps are upsampled bilinearly to it.
    threshold: on the normalised map.

  Returns:
    (B, H, W, 1) float mask, 1 = erase.
  """
  norm = normalise_maps(class_maps.astype(jnp.float32))
  b, _, _, c = norm.shape
  up = jax.image.resize(norm, (b, image_size[0], image_size[1], c), 'bilinear')
  hit = (up >= threshold) & (classes[:, None, None, :] > 0)
  return hit.any(axis=-1, keepdims=True).astype(jnp.float32)


def fuse_maps(maps_a, maps_b, fusion='normalised'):
  """The final class map of A's and B's maps (B, h, w, C).

  'normalised': (norm(z_A) + norm(z_B)) / 2 - 0.5 with norm the min-max normalisation of
  `normalise_maps` (z > 0 <=> the mean of the normalised maps > 0.5);
  'logits': (z_A + z_B) / 2, on the scale of z (z > 0 <=> sigma(z) > 0.5 for a mean logit).
  """
  if fusion == 'normalised':
    return 0.5 * (normalise_maps(maps_a) + normalise_maps(maps_b)) - 0.5
  if fusion == 'logits':
    return 0.5 * (maps_a + maps_b)
  raise ValueError(f"acol_fusion must be 'normalised' or 'logits', got {fusion!r}.")


class ACoLNet(nn.Module):
  """Classifiers A and B (each a network.WSOLNet) under params['a'] and params['b'].

  `apply(variables, images, train=False)` is the test-time model: `(A's logits, aux)` with
  aux['class_maps'] the fused map (`fuse_maps` with `fusion`) and aux['maps_a'], aux['maps_b'],
  aux['erased'] (the mask). The training stages are the methods `stage_a(images, train)` and
  `stage_b(images, labels, train)`.
  """
  a: nn.Module
  b: nn.Module
  threshold: float = 0.6
  fusion: str = 'normalised'

  def _erase(self, images, maps_a, classes):
    mask = erase_mask(jax.lax.stop_gradient(maps_a), classes, images.shape[1:3], self.threshold)
    return images * (1.0 - mask).astype(images.dtype), mask

  def __call__(self, images, train=False):
    logits_a, aux_a = self.a(images, train=False)
    maps_a = aux_a['class_maps'].astype(jnp.float32)
    predicted = (logits_a > 0).astype(jnp.float32)  # sigmoid(s) > 0.5
    erased, mask = self._erase(images, maps_a, predicted)
    _, aux_b = self.b(erased, train=False)
    maps_b = aux_b['class_maps'].astype(jnp.float32)
    return logits_a, {'class_maps': fuse_maps(maps_a, maps_b, self.fusion), 'maps_a': maps_a,
                      'maps_b': maps_b, 'erased': mask}

  def stage_a(self, images, train=False):
    """Classifier A on the images (training stage 'a'); B is not touched."""
    return self.a(images, train=train)

  def stage_b(self, images, labels, train=False):
    """Classifier B on the images erased by frozen A for `labels` (training stage 'b')."""
    _, aux_a = self.a(images, train=False)
    erased, _ = self._erase(images, aux_a['class_maps'].astype(jnp.float32), labels)
    return self.b(erased, train=train)
