"""XLA:CPU implementations of the operations in `research.core.ops`, installed by `research.backend`.

Each equals the plain one in values and derivatives (up to float rounding) and does nothing different on
other backends. Measured gains are in benchmarks/README.md.

- `max_pool_2x2`: a reshape and a max with a JVP rule whose transpose is elementwise. Plain autodiff of
  the max counts tied maxima with a reduction over the window axes in the backward pass, which XLA:CPU
  runs slowly; here ties are counted from four strided slices (derivatives split equally among tied
  maxima, as in plain autodiff). Works under grad, jvp and forward-over-reverse (Hessian products).
- `materialize`: x computed once into memory. XLA:CPU fuses elementwise producers into every consumer;
  a residual network's stream (block output = relu(norm(conv) + previous block output)) is then
  recomputed, through every earlier block of its stage, inside the transposes that feed each
  weight-gradient convolution. `lax.optimization_barrier` does not stop this (XLA:CPU removes it before
  fusion); a matmul does: x @ I over the channels (exact for finite x; an inf turns the row into NaN),
  about 2% of a 3x3 convolution's FLOPs. (n, ..., C) -> same.
- `conv_router(taps=..., onednn=...)`: a `lax.conv_general_dilated` whose 2-D NHWC x HWIO, undilated,
  ungrouped convolutions run
  - as a sum of shifted products when stride 1 with a spatial kernel (not 1x1) and at most `FEW_TAPS`
    kernel taps x input channels (a first layer on images: 3x3x1, 3x3x3, LeNet's 5x5x1): the sum over
    taps and input channels of a shifted input channel times a row of the kernel, which XLA fuses into
    one elementwise pass (XLA:CPU runs such a convolution slowly). Its derivatives come from the native
    convolutions (a JVP rule), so gradients and Hessian products keep XLA's weight-gradient convolution;
    the sum runs in float32 or wider (`precision` is not used there);
  - through oneDNN (`research.backend.native.onednn_conv`, forward and both gradients) when float32 and
    the kernels are built and registered, except for a strided 1x1 (a projection shortcut, see
    `onednn_conv.supported`); each signature proves itself first (`native.verdicts`).
"""

import functools

import jax
import jax.numpy as jnp

from research.backend import xla
from research.backend.native import onednn_conv


@jax.custom_jvp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """(n, H, W, C) -> (n, H // 2, W // 2, C): 2x2 max pooling, stride 2, elementwise-gradient rule."""
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
  # The ties are counted on the same reshaped windows the max reduces. Counted on four strided slices
  # of x instead, XLA:CPU miscompiled the sum in some fusions (the fourth slice's matches lost: windows
  # with 0 ties, a NaN gradient) once the input statistics became an argument of the train step.
  is_max = window == y[:, :, None, :, None]
  ties = is_max.sum(axis=(2, 4)).astype(y.dtype)
  _, window_dot = _pool_windows(x_dot)
  return y, jnp.where(is_max, window_dot, 0).sum(axis=(2, 4)) / ties


def materialize(x: jax.Array) -> jax.Array:
  """x, computed once into memory on XLA:CPU (x @ I over the channels); unchanged elsewhere."""
  if not xla.on_cpu():
    return x
  return jnp.einsum("...c,cd->...d", x, jnp.eye(x.shape[-1], dtype=x.dtype))


# A convolution with at most this many kernel taps x input channels runs as a sum of shifted products.
FEW_TAPS = 32
_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_router(*, taps: bool, onednn: bool):
  """A drop-in `lax.conv_general_dilated` that sends few-tap convolutions to the shifted-products path
  (if `taps`) and the other float32 ones to oneDNN (if `onednn`) on XLA:CPU; see the module docstring."""

  def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                           dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                           precision=None, preferred_element_type=None, out_sharding=None):
    spec = _plain_2d(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                     feature_group_count, batch_group_count, out_sharding)
    if spec is not None and taps and _few_taps(rhs, spec, preferred_element_type):
      return _taps_conv(lhs, rhs, spec[1])
    if spec is not None and onednn and _onednn_takes(lhs, rhs, spec, preferred_element_type):
      return onednn_conv.conv(lhs, rhs, *spec)
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type, out_sharding=out_sharding)

  conv_general_dilated.taps, conv_general_dilated.onednn = taps, onednn
  return conv_general_dilated


def _plain_2d(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
              feature_group_count, batch_group_count, out_sharding):
  """(strides, ((lo, hi), (lo, hi)) zero padding) of a 2-D NHWC x HWIO, undilated, ungrouped, unsharded
  convolution with non-negative padding on XLA:CPU (the cases the fast paths may take), else None."""
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


def _few_taps(rhs, spec, preferred_element_type) -> bool:
  taps = rhs.shape[0] * rhs.shape[1]
  return (spec[0] == (1, 1) and preferred_element_type is None
          and taps > 1  # 1x1: a matmul, left to XLA
          and taps * rhs.shape[2] <= FEW_TAPS)


def _onednn_takes(lhs, rhs, spec, preferred_element_type) -> bool:
  # supported: e.g. not a strided 1x1 (projection shortcuts), where oneDNN 2.6's weight gradient is wrong
  return (lhs.dtype == jnp.float32 and preferred_element_type in (None, jnp.float32)
          and onednn_conv.supported(lhs.shape, rhs.shape, *spec) and onednn_conv.registered())


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
