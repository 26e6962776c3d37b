"""A 2-D convolution primitive that XLA:CPU runs through oneDNN and every other backend as XLA's own.

`conv(x, kernel, strides, pads)`: (n, H, W, Cin) NHWC x (kh, kw, Cin, Cout) HWIO -> (n, H', W', Cout),
float32, zero padding ((top, bottom), (left, right)), no dilation or groups.

One primitive with three kinds, the three derivatives of the trilinear form <conv(x, k), dy>:
`forward` (x, k) -> y, `backward_data` (dy, k) -> dx and `backward_weights` (x, dy) -> dk. Each is
bilinear and the transpose of each is another kind, so reverse mode, forward mode and their
compositions (forward-over-reverse Hessian products, linearize) stay within the primitive. Lowering:
the oneDNN custom call on CPU when the kernels are built, the computation runs on one device and
`supported` says oneDNN gets it right; XLA's convolution (`lax.conv_general_dilated` and its transposes)
otherwise, e.g. on GPU/TPU or under a multi-device sharding, which XLA cannot partition a custom call
for, or when `verdicts` found oneDNN wrong on that signature on this machine. `vmap` folds a batched
activation into the batch dimension; other batchings use XLA's convolution.

Importing this module registers nothing: `primitive()` creates the primitive and registers its rules
(through `jax._src.dispatch`, a private JAX API) on first call, made by `research.backend.setup()` or a
first `conv`; `registered()` registers the FFI targets with XLA on first lowering.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import dispatch
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from research.backend import native
from research.backend.native import verdicts

_TARGETS = {"forward": "research_onednn_conv_forward", "backward_data": "research_onednn_conv_backward_data",
            "backward_weights": "research_onednn_conv_backward_weights"}
_SYMBOLS = {"forward": "ResearchConvForward", "backward_data": "ResearchConvBackwardData",
            "backward_weights": "ResearchConvBackwardWeights"}
_NHWC = ("NHWC", "HWIO", "NHWC")



@functools.cache
def primitive() -> Primitive:
  """The primitive `research_onednn_conv`, created with its rules on first call."""
  p = Primitive("research_onednn_conv")
  p.def_abstract_eval(_abstract_eval)
  p.def_impl(functools.partial(dispatch.apply_primitive, p))
  ad.defbilinear(p, _transpose_lhs, _transpose_rhs)
  batching.primitive_batchers[p] = _batch
  mlir.register_lowering(p, _lower_reference)
  mlir.register_lowering(p, _lower_cpu, platform="cpu")
  return p


@functools.cache
def registered() -> bool:
  """Registers the custom calls (FFI targets) with XLA on first use; False when the kernels are
  unavailable."""
  lib = native.library() if native.why_not() is None else None
  if lib is None:
    return False
  for kind, target in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, _SYMBOLS[kind])), platform="cpu")
  return True


def conv(x, kernel, strides=(1, 1), pads=((0, 0), (0, 0))):
  """(n, H, W, Cin) x (kh, kw, Cin, Cout) -> (n, H', W', Cout), float32. See the module docstring."""
  return primitive().bind(x, kernel, kind="forward", strides=_pair(strides), pads=_pads(pads), shape=None)


def supported(x_shape, kernel_shape, strides, pads) -> bool:
  """Whether oneDNN 2.6 computes this convolution (all three kinds) right: no empty dimension or output,
  no negative padding, and not a strided 1x1, whose `jit_1x1` weight gradient is wrong (and varies from
  run to run) for channel counts that are not multiples of 8. Others lower to XLA's convolution."""
  (n, h, w, c), (kh, kw, _, o) = x_shape, kernel_shape
  (top, bottom), (left, right) = pads
  return (min(n, h, w, c, kh, kw, o) > 0 and min(top, bottom, left, right) >= 0
          and h + top + bottom >= kh and w + left + right >= kw
          and not (kh * kw == 1 and tuple(strides) != (1, 1)))


def _pair(s):
  return tuple(int(a) for a in s)


def _pads(p):
  return tuple((int(lo), int(hi)) for lo, hi in p)


def _lax_forward(x, k, strides, pads):
  return jax.lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=_NHWC,
                                      precision=jax.lax.Precision.HIGHEST)


def reference(kind, a, b, *, strides, pads, shape):
  """The same computation with XLA's convolutions (for other backends, batching and tests)."""
  if kind == "forward":
    return _lax_forward(a, b, strides, pads)
  if kind == "backward_data":  # a = dy, b = k, result shaped like x
    fwd = lambda x: _lax_forward(x, b, strides, pads)
    return jax.linear_transpose(fwd, jax.ShapeDtypeStruct(shape, a.dtype))(a)[0]
  fwd = lambda k: _lax_forward(a, k, strides, pads)  # a = x, b = dy, result shaped like k
  return jax.linear_transpose(fwd, jax.ShapeDtypeStruct(shape, a.dtype))(b)[0]


def run_onednn(kind, a, b, strides, pads, shape):
  """One kind on concrete float32 arrays through the oneDNN custom call directly (for `verdicts`)."""
  out_shape = shape if kind != "forward" else jax.eval_shape(
      functools.partial(_lax_forward, strides=strides, pads=pads), a, b).shape
  (top, bottom), (left, right) = pads
  call = jax.ffi.ffi_call(_TARGETS[kind], jax.ShapeDtypeStruct(out_shape, np.float32))
  return jax.jit(lambda a, b: call(a, b, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
                                   pad_top=np.int64(top), pad_bottom=np.int64(bottom),
                                   pad_left=np.int64(left), pad_right=np.int64(right)))(a, b)


def _run_reference(kind, a, b, strides, pads, shape):
  return jax.jit(functools.partial(reference, kind, strides=strides, pads=pads, shape=shape))(a, b)


def verdict_ok(kind, x_shape, k_shape, strides, pads) -> bool:
  """Whether this signature passed (or now passes) its comparison with XLA on this machine."""
  where = verdicts.directory(native.onednn_version(), native.LIBRARY)
  return verdicts.accepted(kind, x_shape, k_shape, strides, pads, onednn=run_onednn, xla=_run_reference,
                           where=where)


def _abstract_eval(a, b, *, kind, strides, pads, shape):
  if kind == "forward":
    out = jax.eval_shape(functools.partial(_lax_forward, strides=strides, pads=pads),
                         jax.ShapeDtypeStruct(a.shape, a.dtype), jax.ShapeDtypeStruct(b.shape, b.dtype))
    return jax.core.ShapedArray(out.shape, a.dtype)
  return jax.core.ShapedArray(shape, a.dtype)


def _bind(kind, a, b, strides, pads, shape=None):
  shape = None if shape is None else tuple(shape)
  return primitive().bind(a, b, kind=kind, strides=strides, pads=pads, shape=shape)


# Transposes. forward(x, k) = y; backward_data(dy, k) = dx; backward_weights(x, dy) = dk.
def _transpose_lhs(ct, a, b, *, kind, strides, pads, shape):
  if kind == "forward":  # d/dx <forward(x, k), ct>
    return _bind("backward_data", ct, b, strides, pads, a.aval.shape)
  if kind == "backward_data":  # d/ddy <backward_data(dy, k), ct> = forward(ct, k)
    return _bind("forward", ct, b, strides, pads)
  return _bind("backward_data", b, ct, strides, pads, a.aval.shape)  # d/dx <backward_weights(x, dy), ct>


def _transpose_rhs(ct, a, b, *, kind, strides, pads, shape):
  if kind == "forward":  # d/dk <forward(x, k), ct>
    return _bind("backward_weights", a, ct, strides, pads, b.aval.shape)
  if kind == "backward_data":  # d/dk <backward_data(dy, k), ct> = backward_weights(ct, dy)
    return _bind("backward_weights", ct, a, strides, pads, b.aval.shape)
  return _bind("forward", a, ct, strides, pads)  # d/ddy <backward_weights(x, dy), ct> = forward(x, ct)


def _batch(args, dims, *, kind, strides, pads, shape):
  """vmap: a batched activation with an unbatched kernel folds into the batch dimension."""
  (a, b), (da, db) = args, dims
  foldable = (kind in ("forward", "backward_data") and da is not None
              and db is None)
  if foldable:
    a = jnp.moveaxis(a, da, 0)
    m, n = a.shape[:2]
    folded_shape = None if shape is None else (m * n, *shape[1:])
    out = _bind(kind, a.reshape(m * n, *a.shape[2:]), b, strides, pads, folded_shape)
    return out.reshape(m, n, *out.shape[1:]), 0
  ref = functools.partial(reference, kind, strides=strides, pads=pads, shape=shape)
  return jax.vmap(ref, in_axes=dims)(a, b), 0


def _lower_reference(ctx, a, b, *, kind, strides, pads, shape):
  fn = functools.partial(reference, kind, strides=strides, pads=pads, shape=shape)
  return mlir.lower_fun(fn, multiple_results=False)(ctx, a, b)


def _lower_cpu(ctx, a, b, *, kind, strides, pads, shape):
  one_device = getattr(ctx.module_context.axis_context, "num_devices", None) == 1
  a_aval, b_aval = ctx.avals_in
  x_shape = {"forward": a_aval.shape, "backward_data": shape, "backward_weights": a_aval.shape}[kind]
  k_shape = {"forward": b_aval.shape, "backward_data": b_aval.shape, "backward_weights": shape}[kind]
  if not (one_device and a_aval.dtype == np.float32 and supported(x_shape, k_shape, strides, pads)
          and registered() and verdict_ok(kind, x_shape, k_shape, strides, pads)):
    return _lower_reference(ctx, a, b, kind=kind, strides=strides, pads=pads, shape=shape)
  (top, bottom), (left, right) = pads
  return jax.ffi.ffi_lowering(_TARGETS[kind])(
      ctx, a, b, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]), pad_top=np.int64(top),
      pad_bottom=np.int64(bottom), pad_left=np.int64(left), pad_right=np.int64(right))
