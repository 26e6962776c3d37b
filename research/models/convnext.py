"""ConvNeXt for small images (Liu et al. 2022, "A ConvNet for the 2020s", arXiv:2201.03545).

A patchify stem (p x p conv with stride p, then norm), four stages of ConvNeXt blocks separated by
downsampling layers (norm, then 2x2 conv with stride 2), global average pooling, a final norm and the
classifier. A block is: depthwise 7x7 conv, norm, Linear to 4x the width, GELU, Linear back, layer
scale (a learned per-channel factor initialized at `layer_scale_init`), stochastic depth (the residual
branch of each example dropped with a rate rising linearly from 0 to `drop_path` over the blocks), and
the skip connection. "layer" norm normalizes each position over its channels, as in the paper.

Defaults are a small-image model (patch 2, depths 2-2-6-2, widths 40-80-160-320, the "atto" size of
ConvNeXt V2); depths (3, 3, 9, 3) with widths (96, 192, 384, 768) and patch 4 give ConvNeXt-T (28.6M
parameters for 1000 classes, Liu et al. 2022, Table 10).
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.models import layers


class ConvNeXtBlock(nnx.Module):
  """x + drop_path(layer_scale * pointwise_mlp(norm(depthwise_conv(x)))); (n, H, W, C) -> same."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs, kernel: int, expansion: int, norm: str, act,
               layer_scale_init: float, drop_path: float, skip: bool, nkw: dict, kw: dict):
    self.skip, self.act = skip, act
    self.dwconv = nnx.Conv(dim, dim, (kernel, kernel), feature_group_count=dim, rngs=rngs, **kw)
    self.norm = layers.norm_layer(norm, dim, rngs=rngs, **nkw)
    self.fc1 = nnx.Linear(dim, expansion * dim, rngs=rngs, **kw)
    self.fc2 = nnx.Linear(expansion * dim, dim, rngs=rngs, **kw)
    self.gamma = (nnx.Param(jnp.full((dim,), layer_scale_init, kw["param_dtype"]))
                  if layer_scale_init > 0 else None)
    # Stochastic depth = dropout of the whole residual branch per example (mask broadcast over H, W, C).
    self.drop_path = nnx.Dropout(drop_path, broadcast_dims=(1, 2, 3), rngs=rngs)

  def __call__(self, x):
    out = self.fc2(self.act(self.fc1(self.norm(self.dwconv(x)))))
    if self.gamma is not None:
      out = out * self.gamma[...]
    out = self.drop_path(out)
    return x + out if self.skip else out


class ConvNeXt(nnx.Module):
  """Input (n, H, W, C) -> logits (n, num_classes)."""

  def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
               depths: tuple[int, ...] = (2, 2, 6, 2), dims: tuple[int, ...] = (40, 80, 160, 320),
               patch_size: int = 2, kernel: int = 7, expansion: int = 4, norm: str = "layer",
               activation: str = "gelu", layer_scale_init: float = 1e-6, drop_path: float = 0.0,
               dropout: float = 0.0, skip: bool = True, width: float = 1.0,
               bn_momentum: float = layers.BN_MOMENTUM, bn_epsilon: float = 1e-6, dtype=None,
               param_dtype=jnp.float32):
    if len(depths) != len(dims):
      raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must have the same length")
    h, w, c = input_shape
    size = min(h, w) // patch_size
    if size < 2 ** (len(depths) - 1):
      raise ValueError(f"input {tuple(input_shape)} is too small for patch {patch_size} and "
                       f"{len(depths)} stages")
    act = layers.activation(activation)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    nkw = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=dtype, param_dtype=param_dtype)
    dims = [max(1, round(d * width)) for d in dims]
    self.stem = nnx.Conv(c, dims[0], (patch_size, patch_size), strides=patch_size, padding="VALID",
                         rngs=rngs, **kw)
    self.stem_norm = layers.norm_layer(norm, dims[0], rngs=rngs, **nkw)
    rates = np.linspace(0.0, drop_path, max(1, sum(depths))).tolist()
    down_norms, downs, stages, i = [], [], [], 0
    for s, (depth, dim) in enumerate(zip(depths, dims)):
      if s > 0:
        down_norms.append(layers.norm_layer(norm, dims[s - 1], rngs=rngs, **nkw))
        downs.append(nnx.Conv(dims[s - 1], dim, (2, 2), strides=2, padding="VALID", rngs=rngs, **kw))
      stages.append(nnx.List([
          ConvNeXtBlock(dim, rngs=rngs, kernel=kernel, expansion=expansion, norm=norm, act=act,
                        layer_scale_init=layer_scale_init, drop_path=rates[i + j], skip=skip, nkw=nkw,
                        kw=kw)
          for j in range(depth)]))
      i += depth
    self.down_norms, self.downs, self.stages = nnx.List(down_norms), nnx.List(downs), nnx.List(stages)
    self.final_norm = layers.norm_layer(norm, dims[-1], rngs=rngs, **nkw)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = nnx.Linear(dims[-1], num_classes, rngs=rngs, **kw)

  def __call__(self, x):
    x = self.stem_norm(self.stem(x))
    for s, stage in enumerate(self.stages):
      if s > 0:
        x = self.downs[s - 1](self.down_norms[s - 1](x))
      for block in stage:
        x = block(x)
    x = self.final_norm(x.mean(axis=(1, 2)))
    return self.head(self.dropout(x))
