"""Building blocks shared by the model zoo: activations, normalization by name, pooling.

Conventions: images are NHWC; BatchNorm momentum and epsilon are always explicit (NNX's default momentum
0.99 differs from the 0.9 of Linen, PyTorch and the papers: we default to 0.9, epsilon 1e-5). "layer"
normalization of a feature map normalizes over its channels at each position (as in ConvNeXt).
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from research.core import ops
from research.core.errors import UserError, choices_message

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
}
NORMS = ("none", "batch", "layer", "group")
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def activation(name: str):
  if name not in ACTIVATIONS:
    raise UserError(choices_message("activation", name, sorted(ACTIVATIONS)))
  return ACTIVATIONS[name]


class Identity(nnx.Module):
  """A norm that does nothing (`norm="none"`)."""

  def __call__(self, x):
    return x


def norm_layer(kind: str, num_features: int, *, rngs: nnx.Rngs, bn_momentum: float = BN_MOMENTUM,
               bn_epsilon: float = BN_EPSILON, num_groups: int = 32, zero_scale: bool = False,
               dtype=None, param_dtype=jnp.float32) -> nnx.Module:
  """A normalization layer over the last (channel) axis, chosen by name (see NORMS)."""
  scale_init = nnx.initializers.zeros if zero_scale else nnx.initializers.ones
  common = dict(scale_init=scale_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
  if kind == "none":
    return Identity()
  if kind == "batch":
    return nnx.BatchNorm(num_features, momentum=bn_momentum, epsilon=bn_epsilon, **common)
  if kind == "layer":
    return nnx.LayerNorm(num_features, epsilon=bn_epsilon, **common)
  if kind == "group":
    groups = max(g for g in range(1, min(num_groups, num_features) + 1) if num_features % g == 0)
    return nnx.GroupNorm(num_features, num_groups=groups, epsilon=bn_epsilon, **common)
  raise UserError(choices_message("norm", kind, NORMS))


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2 (floor on odd sizes)."""
  n, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


POOLS = {"max": ops.max_pool_2x2, "avg": avg_pool_2x2}
