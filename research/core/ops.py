"""The few operations whose fastest form depends on the hardware, as the model zoo calls them.

Each defaults to a plain JAX implementation; `research.backend.setup()` may replace it by one that is
faster on the machine (same values and derivatives up to float rounding) before anything is traced.
Models call these names and never import the backend, so a model file reads as its paper's network.

- `conv_general_dilated`: `lax.conv_general_dilated`, same signature (passed to
  `nnx.Conv(..., conv_general_dilated=ops.conv_general_dilated)`).
- `max_pool_2x2`: (n, H, W, C) -> (n, H // 2, W // 2, C), 2x2 windows, stride 2 (floor on odd sizes),
  a reshape and a max: derivatives are split equally among tied maxima.
- `residual_stream`: the identity, applied to each block output of a residual network (a backend may
  compute the stream once into memory instead of letting the compiler recompute it in every consumer).

The choice is read when a model is traced: switching after a function was jitted does not retrace it.
"""

import jax


def plain_max_pool_2x2(x: jax.Array) -> jax.Array:
  n, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


PLAIN = {"conv_general_dilated": jax.lax.conv_general_dilated, "max_pool_2x2": plain_max_pool_2x2,
         "residual_stream": lambda x: x}
_impl = dict(PLAIN)


def conv_general_dilated(*args, **kwargs):
  return _impl["conv_general_dilated"](*args, **kwargs)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  return _impl["max_pool_2x2"](x)


def residual_stream(x: jax.Array) -> jax.Array:
  return _impl["residual_stream"](x)


def install(**implementations) -> dict:
  """Replaces the named implementations (`None` restores the plain one); returns the previous ones."""
  unknown = set(implementations) - set(PLAIN)
  if unknown:
    raise ValueError(f"unknown operations {sorted(unknown)}; valid: {', '.join(PLAIN)}")
  previous = {name: _impl[name] for name in implementations}
  _impl.update({name: PLAIN[name] if fn is None else fn for name, fn in implementations.items()})
  return previous


def installed() -> dict:
  """{name: implementation} in effect."""
  return dict(_impl)
