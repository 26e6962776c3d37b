"""Building blocks shared by the model zoo: activations, normalization by name, pooling, materialize.

Conventions: images are NHWC; BatchNorm momentum and epsilon are always explicit (NNX's default momentum
0.99 differs from the 0.9 of Linen, PyTorch and the papers: we default to 0.9, epsilon 1e-5). "layer"
normalization of a feature map normalizes over its channels at each position (as in ConvNeXt).
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from research import xla
from research.errors import UserError, choices_message

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


@jax.custom_jvp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 (floor on odd sizes); derivatives split equally among tied maxima.

  Written as a reshape and a max (on XLA:CPU its gradient is about twice as fast as `reduce_window`'s,
  shared/MEASURED.md), with a JVP rule whose transpose is elementwise: plain autodiff of the max counts
  ties with a reduction over the window axes in the backward pass, which XLA:CPU runs slowly. Here ties
  are counted from four strided slices. Measured in benchmarks/models.py: simple_cnn's train step
  1.16-1.25x faster. Works under grad, jvp and forward-over-reverse (Hessian-vector products).
  """
  return _pool_windows(x)[0]


def _pool_windows(x):
  n, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  window = x.reshape(n, h // 2, 2, w // 2, 2, c)
  return window.max(axis=(2, 4)), window


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
  (x,), (x_dot,) = primals, tangents
  y, window = _pool_windows(x)
  _, h, w, _ = x.shape
  ties = sum((x[:, i : h - h % 2 : 2, j : w - w % 2 : 2] == y).astype(y.dtype)
             for i in (0, 1) for j in (0, 1))
  _, window_dot = _pool_windows(x_dot)
  is_max = window == y[:, :, None, :, None]
  return y, jnp.where(is_max, window_dot, 0).sum(axis=(2, 4)) / ties


def materialize(x: jax.Array) -> jax.Array:
  """x, computed once into memory on XLA:CPU; unchanged (no op) on other backends.

  XLA:CPU fuses elementwise producers into every consumer, duplicating them. A residual network's
  stream (block output = relu(norm(conv) + previous block output)) is then recomputed, through every
  earlier block of its stage, inside the transposes that feed each weight-gradient convolution, which
  read memory with a stride: 410 of ResNet-20's 1,380 ms per train step (one core, XLA profile), 152 ms
  in one transpose. `lax.optimization_barrier` does not stop this (XLA:CPU removes it before fusion); a
  matmul does. This is x @ I over the channels (exact for finite x; an inf turns the row into NaN),
  about 2% of a 3x3 convolution's FLOPs. Measured (benchmarks/models.py): ResNet-20's train step 1.12x
  faster on one core and 1.21x on two with its block outputs materialized; on one core pre-activation
  ResNet-18 (width 0.25) and WRN-16-1 1.04x and 1.0x; on every conv input of simple_cnn, where nothing
  is chained, it cost 5-10%.
  (n, ..., C) -> same.
  """
  if not xla.on_cpu():
    return x
  return jnp.einsum("...c,cd->...d", x, jnp.eye(x.shape[-1], dtype=x.dtype))


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2 (floor on odd sizes)."""
  n, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


POOLS = {"max": max_pool_2x2, "avg": avg_pool_2x2}
