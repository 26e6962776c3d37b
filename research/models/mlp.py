"""Multi-layer perceptron on flattened images: the small model for exact-Hessian checks and
edge-of-stability studies."""

import math

import jax.numpy as jnp
from flax import nnx

from research.models import layers


class MLP(nnx.Module):
  """Flatten, then `depth` hidden layers of `width` units (Linear, norm, activation, dropout), then a
  linear classifier. Input (n, H, W, C) -> logits (n, num_classes)."""

  def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
               depth: int = 2, width: int = 512, activation: str = "relu", norm: str = "none",
               dropout: float = 0.0, bn_momentum: float = layers.BN_MOMENTUM,
               bn_epsilon: float = layers.BN_EPSILON, dtype=None, param_dtype=jnp.float32):
    self.act = layers.activation(activation)
    dims = [math.prod(input_shape)] + [width] * depth
    self.hidden = nnx.List([
        nnx.Linear(a, b, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        for a, b in zip(dims[:-1], dims[1:])])
    self.norms = nnx.List([
        layers.norm_layer(norm, width, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs) for _ in range(depth)])
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = nnx.Linear(dims[-1], num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for linear, norm in zip(self.hidden, self.norms):
      x = self.dropout(self.act(norm(linear(x))))
    return self.head(x)
