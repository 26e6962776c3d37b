"""VGG for small images (Simonyan & Zisserman 2015, configurations A, B, D, E = VGG-11/13/16/19).

3x3 convolutions (conv, norm, activation) in five groups separated by 2x2 max pooling, channel widths
64-512 times `width`, then global average pooling and a linear classifier (the usual CIFAR variant:
with 32x32 inputs the last feature map is 1x1, so the pooling changes nothing there; with 28x28 inputs
the last pooling is skipped when the map is already 1x1).
"""

import jax.numpy as jnp
from flax import nnx

from research.core import ops
from research.models import layers

CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


class VGG(nnx.Module):
  """Input (n, H, W, C) -> logits (n, num_classes)."""

  def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
               depth: int = 16, width: float = 1.0, norm: str = "batch", activation: str = "relu",
               dropout: float = 0.0, bn_momentum: float = layers.BN_MOMENTUM,
               bn_epsilon: float = layers.BN_EPSILON, dtype=None, param_dtype=jnp.float32):
    if depth not in CONFIGS:
      raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
    self.act = layers.activation(activation)
    ckw = dict(use_bias=norm == "none", dtype=dtype, param_dtype=param_dtype, rngs=rngs,
               conv_general_dilated=ops.conv_general_dilated)
    nkw = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=dtype, param_dtype=param_dtype,
               rngs=rngs)
    self.plan = tuple(item if item == "M" else max(1, round(item * width)) for item in CONFIGS[depth])
    convs, norms, in_ch = [], [], input_shape[-1]
    for item in self.plan:
      if item != "M":
        convs.append(nnx.Conv(in_ch, item, (3, 3), **ckw))
        norms.append(layers.norm_layer(norm, item, **nkw))
        in_ch = item
    self.convs, self.norms = nnx.List(convs), nnx.List(norms)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = nnx.Linear(in_ch, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x):
    i = 0
    for item in self.plan:
      if item == "M":
        if min(x.shape[1:3]) >= 2:
          x = ops.max_pool_2x2(x)
      else:
        x = self.act(self.norms[i](self.convs[i](x)))
        i += 1
    return self.head(self.dropout(x.mean(axis=(1, 2))))
