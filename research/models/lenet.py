"""LeNet-5 (LeCun et al. 1998) in its common modern form.

5x5 conv 6, 2x2 pool, 5x5 conv 16, 2x2 pool, dense 120, dense 84, dense classes; valid convolutions
on a 32x32 input (28x28 inputs are zero-padded by 2 on each side, as the paper did for MNIST).
Parameters for 32x32x1 inputs and 10 classes: 61,706.
"""

import jax.numpy as jnp
from flax import nnx

from research.core import ops
from research.models import layers


class LeNet5(nnx.Module):
  """Input (n, H, W, C) with H, W in {28, 32} (28 is padded) -> logits (n, num_classes)."""

  def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
               activation: str = "tanh", pool: str = "max", norm: str = "none", dropout: float = 0.0,
               bn_momentum: float = layers.BN_MOMENTUM, bn_epsilon: float = layers.BN_EPSILON,
               dtype=None, param_dtype=jnp.float32):
    h, w, c = input_shape
    self.pad = (32 - h) // 2
    self.act = layers.activation(activation)
    self.pool = layers.POOLS[pool]
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    nkw = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=dtype, param_dtype=param_dtype,
               rngs=rngs)
    self.conv1 = nnx.Conv(c, 6, (5, 5), padding="VALID", conv_general_dilated=ops.conv_general_dilated,
                          **kw)
    self.norm1 = layers.norm_layer(norm, 6, **nkw)
    self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", **kw)
    self.norm2 = layers.norm_layer(norm, 16, **nkw)
    self.fc1 = nnx.Linear(16 * 5 * 5, 120, **kw)
    self.fc2 = nnx.Linear(120, 84, **kw)
    self.head = nnx.Linear(84, num_classes, **kw)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x):
    if self.pad:
      x = jnp.pad(x, ((0, 0), (self.pad, self.pad), (self.pad, self.pad), (0, 0)))
    x = self.pool(self.act(self.norm1(self.conv1(x))))
    x = self.pool(self.act(self.norm2(self.conv2(x))))
    x = x.reshape(x.shape[0], -1)
    x = self.dropout(self.act(self.fc1(x)))
    x = self.dropout(self.act(self.fc2(x)))
    return self.head(x)
