"""ResNet trunk (torchvision "v1.5" layout) without avgpool and fc, NHWC.

The stride of a bottleneck sits on its 3x3 conv, as in torchvision. Every padding is explicit and
symmetric: 'SAME' on a stride-2 layer pads asymmetrically and shifts the maps by a pixel against
the PyTorch layout (and against ImageNet weights trained in it).

Parameter names follow torchvision so that ImageNet weights map one to one: conv1, bn1,
layer{1..4}_{i}/{conv1, bn1, conv2, bn2[, conv3, bn3], downsample_conv, downsample_bn}.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from excam_jax.models import batchnorm
from excam_jax.models import fastconv

# Blocks per stage and block kind for each supported depth.
STAGES = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}
OUTPUT_STRIDES = (8, 16, 32)
BN_MOMENTUM = 0.9  # Flax convention: running = 0.9 * running + 0.1 * batch (PyTorch's 0.1).
BN_EPSILON = 1e-5

# torchvision initialises convs with kaiming_normal(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _pad(kernel, dilation=1):
  """Cells of padding on each side that keep a stride-1 layer's size."""
  return dilation * (kernel - 1) // 2


class _Block(nn.Module):
  """Shared fields of the two residual blocks."""
  features: int
  stride: int = 1
  dilation: int = 1
  first_dilation: int = 1
  downsample: bool = False
  use_running_average: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  norm_impl: str = 'flax'

  def conv(self, features, kernel, name, stride=1, dilation=1):
    return fastconv.Conv(features, kernel, stride=stride, dilation=dilation,
                         padding=_pad(kernel, dilation), dtype=self.dtype,
                         kernel_init=conv_init, impl=self.conv_impl, name=name)

  def norm(self, name):
    return batchnorm.norm(self.norm_impl, use_running_average=self.use_running_average,
                          momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype, name=name)

  def shortcut(self, x, out_features):
    if not self.downsample:
      return x
    x = self.conv(out_features, 1, 'downsample_conv', stride=self.stride)(x)
    return self.norm('downsample_bn')(x)


class BasicBlock(_Block):
  """Two 3x3 convs (ResNet-18/34)."""
  expansion = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.features, 3, 'conv1', self.stride, self.first_dilation)(x)
    y = nn.relu(self.norm('bn1')(y))
    y = self.conv(self.features, 3, 'conv2', 1, self.dilation)(y)
    y = self.norm('bn2')(y)
    return nn.relu(y + self.shortcut(x, self.features))


class Bottleneck(_Block):
  """1x1 -> 3x3 (carries the stride) -> 1x1 with 4x expansion (ResNet-50/101/152)."""
  expansion = 4

  @nn.compact
  def __call__(self, x):
    out = self.features * self.expansion
    y = nn.relu(self.norm('bn1')(self.conv(self.features, 1, 'conv1')(x)))
    y = self.conv(self.features, 3, 'conv2', self.stride, self.first_dilation)(y)
    y = nn.relu(self.norm('bn2')(y))
    y = self.norm('bn3')(self.conv(out, 1, 'conv3')(y))
    return nn.relu(y + self.shortcut(x, out))


class ResNet(nn.Module):
  """ResNet trunk: conv1 -> bn -> relu -> maxpool -> layer1..layer4 (no avgpool, no fc).

  Attributes:
    depth: 18, 34, 50, 101 or 152.
    width: channels of the stem and of layer1's 3x3 convs (64 in the standard nets).
    output_stride: 32 (standard), 16 or 8; below 32 the last stages (layer4; layer3 and layer4
      at 8) run at stride 1, giving larger maps from the same weights.
    dilate: whether those stages' convolutions are dilated by the strides removed
      (torchvision's replace_stride_with_dilation, True) or not (False: wsolevaluation's
      ResNet50, whose layer4, and layer3 with large_feature_map, simply have stride 1).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
    freeze_bn: use running BatchNorm statistics even when training.
    remat: rematerialise each residual block in the backward pass (saves memory).
    conv_impl: one of `fastconv.IMPLS`: how convolutions and their gradients are computed
      (`fastconv`); the parameters are the same for all of them.
    norm_impl: one of `batchnorm.IMPLS`: Flax's BatchNorm or the fused one (`batchnorm`); the
      same parameters and statistics either way.

    tap: 0 (none) or a stage 1-4 whose output the call returns too (a mid-level feature map for
      a head that reads one, such as BAS's generator).

  Call: `apply(variables, images, train=False)` with images (B, H, W, 3) returns features
  (B, H/s, W/s, 8 * width * expansion), i.e. (B, H/32, W/32, 2048) for depth >= 50 at width 64;
  with a tap, (features, the tapped stage's output).
  """
  depth: int = 101
  width: int = 64
  output_stride: int = 32
  dilate: bool = True
  dtype: Any = jnp.float32
  freeze_bn: bool = False
  remat: bool = False
  conv_impl: str = 'auto'
  norm_impl: str = 'flax'
  tap: int = 0

  @nn.compact
  def __call__(self, x, train=False):
    if self.depth not in STAGES:
      raise ValueError(f'ResNet depth must be one of {sorted(STAGES)}, got {self.depth}.')
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f'output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride}.')
    kind, blocks = STAGES[self.depth]
    block_cls = BasicBlock if kind == 'basic' else Bottleneck
    expansion = block_cls.expansion
    if self.remat:
      block_cls = nn.remat(block_cls)
    use_running_average = self.freeze_bn or not train

    x = x.astype(self.dtype)
    x = fastconv.Conv(self.width, 7, stride=2, padding=3, dtype=self.dtype,
                      kernel_init=conv_init, impl=self.conv_impl, name='conv1')(x)
    x = batchnorm.norm(self.norm_impl, use_running_average=use_running_average,
                       momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype, name='bn1')(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((_pad(3),) * 2,) * 2)

    # Stages at stride 1 (dilated if self.dilate): layer4 at stride 16, layer3 and layer4 at 8.
    unstrided = {32: (), 16: (4,), 8: (3, 4)}[self.output_stride]
    dilation = 1
    in_features = self.width
    tapped = None
    for stage, num_blocks in enumerate(blocks, start=1):
      features = self.width * 2 ** (stage - 1)
      stride = 1 if stage == 1 else 2
      first_dilation = dilation
      if stage in unstrided:
        dilation *= stride if self.dilate else 1
        stride = 1
      block = functools.partial(block_cls, features=features, dtype=self.dtype,
                                use_running_average=use_running_average,
                                conv_impl=self.conv_impl, norm_impl=self.norm_impl)
      out_features = features * expansion
      x = block(stride=stride, dilation=dilation, first_dilation=first_dilation,
                downsample=stride != 1 or in_features != out_features,
                name=f'layer{stage}_0')(x)
      for i in range(1, num_blocks):
        x = block(dilation=dilation, first_dilation=dilation, name=f'layer{stage}_{i}')(x)
      in_features = out_features
      if stage == self.tap:
        tapped = x
    return x if not self.tap else (x, tapped)
