"""Building blocks shared by the model zoo: activations, normalization by name, pooling, materialize,
convolutions with few inputs per output.

Conventions: images are NHWC; BatchNorm momentum and epsilon are always explicit (NNX's default momentum
0.99 differs from the 0.9 of Linen, PyTorch and the papers: we default to 0.9, epsilon 1e-5). "layer"
normalization of a feature map normalizes over its channels at each position (as in ConvNeXt).
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from research import xla
from research.core.errors import UserError, choices_message
from research.native import onednn_conv

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


# A convolution with at most this many kernel taps x input channels (a first layer on images: 3x3x1,
# 3x3x3, LeNet's 5x5x1) runs on XLA:CPU as a sum of shifted products (see `conv_general_dilated`).
FEW_TAPS = 32


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, out_sharding=None):
  """`lax.conv_general_dilated` (same signature: pass it to `nnx.Conv(..., conv_general_dilated=...)`),
  except on XLA:CPU, where a 2-D, NHWC x HWIO, undilated, ungrouped convolution runs
  - through oneDNN (`research.native.onednn_conv`: forward and both gradients) when float32 and the
    kernels are built (`make setup`), except for a strided 1x1 (a projection shortcut) and the few-tap
    case below. Measured (benchmarks/models.py, against XLA's convolutions in the same run): ResNet-20's
    train step 1.40x faster on one core, 1.33x on two; simple_cnn's 0.89-1.13x (no gain);
  - as a sum of shifted products when stride-1 with a spatial kernel (not 1x1) and at most `FEW_TAPS`
    kernel taps x input channels, typically a first layer on images.
  The latter is the sum over taps and input channels of a shifted input channel times a row of the kernel,
  which XLA fuses into one elementwise pass; its derivatives come from the native convolutions (a JVP
  rule), so gradients and Hessian products keep XLA's weight-gradient convolution. XLA:CPU runs such a
  convolution slowly (simple_cnn's 3x3x1 -> 32 first layer on 128 28x28 images: 22 ms for 58 MFLOP).
  Measured (benchmarks/models.py, against the native convolution in the same run): simple_cnn's train
  step 1.46x faster on one core, 1.53x on two; ResNet-20 (3x3x3 stem) 1.09x on two. Values agree with the
  native convolution up to float rounding (the sum runs in float32 or wider; `precision` is not used
  there). (n, H, W, Cin) x (kh, kw, Cin, Cout) -> (n, H', W', Cout) for the layouts nnx.Conv uses.
  """
  pads = _few_taps_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                        feature_group_count, batch_group_count, preferred_element_type, out_sharding)
  if pads is not None:
    return _taps_conv(lhs, rhs, pads)
  spec = _onednn_spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                      feature_group_count, batch_group_count, preferred_element_type, out_sharding)
  if spec is not None:
    return onednn_conv.conv(lhs, rhs, *spec)
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type, out_sharding=out_sharding)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _plain_2d(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
              feature_group_count, batch_group_count, out_sharding):
  """(strides, ((lo, hi), (lo, hi)) zero padding) of a 2-D NHWC x HWIO, undilated, ungrouped, unsharded
  convolution with non-negative padding on XLA:CPU (the cases the paths below may take), else None."""
  if not xla.on_cpu() or lhs.ndim != 4 or rhs.ndim != 4 or lhs.dtype != rhs.dtype:
    return None
  if dimension_numbers is None or (jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
                                   != jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)):
    return None
  ones = lambda d: d is None or tuple(int(a) for a in d) == (1, 1)
  if not (ones(lhs_dilation) and ones(rhs_dilation) and feature_group_count == 1 and batch_group_count == 1
          and out_sharding is None):
    return None
  strides = (1, 1) if window_strides is None else tuple(int(a) for a in window_strides)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  return None if min(min(pair) for pair in pads) < 0 else (strides, pads)  # negative padding crops: lax


def _few_taps_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count, batch_group_count, preferred_element_type, out_sharding):
  """((lo, hi), (lo, hi)) zero padding if the convolution takes the shifted-products path, else None."""
  spec = _plain_2d(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count, batch_group_count, out_sharding)
  taps = rhs.shape[0] * rhs.shape[1]
  if (spec is None or spec[0] != (1, 1) or preferred_element_type is not None
      or taps == 1  # 1x1: a matmul, left to XLA
      or taps * rhs.shape[2] > FEW_TAPS):
    return None
  return spec[1]


def _onednn_spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                 feature_group_count, batch_group_count, preferred_element_type, out_sharding):
  """(strides, pads) if the convolution runs through oneDNN (`research.native.onednn_conv`), else None."""
  if lhs.dtype != jnp.float32 or preferred_element_type not in (None, jnp.float32):
    return None
  spec = _plain_2d(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count, batch_group_count, out_sharding)
  # supported: e.g. not a strided 1x1 (projection shortcuts), where oneDNN 2.6's weight gradient is wrong
  if spec is None or not onednn_conv.supported(lhs.shape, rhs.shape, *spec) or not onednn_conv.registered():
    return None
  return spec


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _taps_conv(x, kernel, pads):
  """(n, H, W, Cin) x (kh, kw, Cin, Cout) -> (n, H', W', Cout): stride 1, zero padding `pads`."""
  kh, kw, cin, _ = kernel.shape
  dtype = x.dtype  # the kernel's too (checked before)
  acc = jnp.promote_types(dtype, jnp.float32)
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))).astype(acc)
  h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      for c in range(cin):
        term = xp[:, i : i + h, j : j + w, c : c + 1] * kernel[i, j, c].astype(acc)
        out = term if out is None else out + term
  return out.astype(dtype)


@functools.partial(_taps_conv.defjvp, symbolic_zeros=True)
def _taps_conv_jvp(pads, primals, tangents):
  (x, kernel), (x_dot, kernel_dot) = primals, tangents
  y = _taps_conv(x, kernel, pads)
  conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding=pads,
                           dimension_numbers=_NHWC)
  terms = [conv(a, b) for a, b, zero in ((x_dot, kernel, x_dot), (x, kernel_dot, kernel_dot))
           if not isinstance(zero, jax.custom_derivatives.SymbolicZero)]  # JAX skips the rule if both are
  return y, sum(terms[1:], terms[0]).astype(y.dtype)


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2 (floor on odd sizes)."""
  n, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


POOLS = {"max": max_pool_2x2, "avg": avg_pool_2x2}
