"""The small AlexNet for 28x28 and 32x32 images used in generalization studies.

Krizhevsky's CIFAR-10 network (cuda-convnet "layers-18pct", the TensorFlow CIFAR-10 tutorial model),
as used by Zhang et al. 2017 ("Understanding deep learning requires rethinking generalization", their
"small Alexnet") and by Keskar et al. 2017 (network C1): two blocks of 5x5 conv 64, activation, 3x3
max pooling with stride 2 ("SAME"), then dense 384 and dense 192 with dropout before each, and the
classifier. Local response normalization is replaced by the `norm` knob (default none).
Parameters for 28x28x3 inputs and 10 classes: 1,387,786 (Zhang et al. 2017, Table 1).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from research.core import ops
from research.models import layers


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """3x3 max pooling, stride 2, "SAME" padding (output ceil(H/2) x ceil(W/2))."""
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")


class AlexNet(nnx.Module):
  """Input (n, H, W, C) -> logits (n, num_classes)."""

  def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
               channels: int = 64, kernel: int = 5, dense: tuple[int, ...] = (384, 192),
               activation: str = "relu", norm: str = "none", dropout: float = 0.5, width: float = 1.0,
               bn_momentum: float = layers.BN_MOMENTUM, bn_epsilon: float = layers.BN_EPSILON,
               dtype=None, param_dtype=jnp.float32):
    h, w, c = input_shape
    self.act = layers.activation(activation)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    nkw = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=dtype, param_dtype=param_dtype,
               rngs=rngs)
    ch = max(1, round(channels * width))
    self.convs = nnx.List([nnx.Conv(c, ch, (kernel, kernel), use_bias=norm == "none",
                                    conv_general_dilated=ops.conv_general_dilated, **kw),
                           nnx.Conv(ch, ch, (kernel, kernel), use_bias=norm == "none", **kw)])
    self.norms = nnx.List([layers.norm_layer(norm, ch, **nkw) for _ in range(2)])
    for _ in range(2):
      h, w = -(-h // 2), -(-w // 2)
    widths = [h * w * ch] + [max(1, round(d * width)) for d in dense]
    self.dense = nnx.List([nnx.Linear(a, b, **kw) for a, b in zip(widths[:-1], widths[1:])])
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = nnx.Linear(widths[-1], num_classes, **kw)

  def __call__(self, x):
    for conv, norm in zip(self.convs, self.norms):
      x = max_pool_3x3_s2(self.act(norm(conv(x))))
    x = x.reshape(x.shape[0], -1)
    for layer in self.dense:
      x = self.act(layer(self.dropout(x)))
    return self.head(x)
