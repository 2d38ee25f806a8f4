"""CAM (Zhou et al. 2016): global average pooling and one dense layer on the trunk's features."""

import flax.linen as nn
import jax.numpy as jnp


class CAMHead(nn.Module):
  """Global average pooling + dense layer; class map c is sum_k w[k, c] * f_k (no bias).

  Returns `(logits, aux)` with logits (B, C) and aux['class_maps'] (B, h, w, C). The logits
  equal the spatial mean of the class maps plus the bias.
  """
  num_classes: int

  @nn.compact
  def __call__(self, features, train=False):
    features = features.astype(jnp.float32)
    dense = nn.Dense(self.num_classes, name='classifier')
    logits = dense(features.mean(axis=(1, 2)))
    kernel = dense.variables['params']['kernel']
    class_maps = jnp.einsum('bhwk,kc->bhwc', features, kernel)
    return logits, {'class_maps': class_maps}
