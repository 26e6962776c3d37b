"""Weight initialization by name, applied to every Conv and Linear of a built model.

`initialize(model, name, key)` redraws each Conv and Linear kernel (and, for "torch", its bias) with
the named scheme, keyed by the layer's position, so a seed gives the same weights every time. Norm
scales, layer scales, class tokens and position embeddings keep the model's own initialization.
fan_in of a conv kernel (kh, kw, cin, cout) is kh * kw * cin (per group for depthwise convs).

- `lecun_normal`: truncated normal, variance 1 / fan_in (Flax's default).
- `he_normal`, `he_uniform`: variance 2 / fan_in (He et al. 2015), truncated normal or uniform.
- `xavier_normal`, `xavier_uniform`: variance 2 / (fan_in + fan_out) (Glorot & Bengio 2010).
- `orthogonal`: (semi-)orthogonal (fan_in, cout) kernel matrices (Saxe et al. 2014).
- `trunc_normal`: truncated normal with standard deviation 0.02 (ViT, ConvNeXt).
- `torch`: PyTorch's default for Conv2d and Linear: kernel and bias uniform in +-1/sqrt(fan_in).
"""

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.core.errors import UserError, choices_message

_init = nnx.initializers
KERNEL_INITIALIZERS = {
    "lecun_normal": _init.lecun_normal(),
    "he_normal": _init.he_normal(),
    "he_uniform": _init.he_uniform(),
    "xavier_normal": _init.glorot_normal(),
    "xavier_uniform": _init.glorot_uniform(),
    "orthogonal": _init.orthogonal(),
    "trunc_normal": _init.truncated_normal(0.02),
    "torch": _init.variance_scaling(1 / 3, "fan_in", "uniform"),  # bound sqrt(3 / (3 fan_in))
}
INITIALIZERS = tuple(KERNEL_INITIALIZERS)


def check(name: str) -> str:
  if name not in KERNEL_INITIALIZERS:
    raise UserError(choices_message("initializer", name, INITIALIZERS))
  return name


def initialize(model: nnx.Module, name: str, key: jax.Array) -> None:
  """Redraws every Conv and Linear kernel of `model` in place with initializer `name`."""
  check(name)
  layers = [m for _, m in model.iter_modules() if isinstance(m, nnx.Conv | nnx.Linear)]
  specs = tuple((tuple(layer.kernel.shape), jnp.dtype(layer.kernel.dtype),
                 None if layer.bias is None or name != "torch" else jnp.dtype(layer.bias.dtype))
                for layer in layers)
  for layer, (kernel, bias) in zip(layers, _drawer(name, specs)(key), strict=True):
    layer.kernel[...] = kernel
    if bias is not None:
      layer.bias[...] = bias


@functools.lru_cache(maxsize=64)
def _drawer(name: str, specs: tuple):
  """One jitted function drawing all kernels (eager draws compile once per shape, which is slow)."""
  kernel_init = KERNEL_INITIALIZERS[name]

  @jax.jit
  def draw(key):
    out = []
    for i, (shape, dtype, bias_dtype) in enumerate(specs):
      k_kernel, k_bias = jax.random.split(jax.random.fold_in(key, i))
      bias = None
      if bias_dtype is not None:
        bound = 1 / math.sqrt(math.prod(shape[:-1]))
        bias = jax.random.uniform(k_bias, shape[-1:], bias_dtype, -bound, bound)
      out.append((kernel_init(k_kernel, shape, dtype), bias))
    return out

  return draw
