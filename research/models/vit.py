"""A small Vision Transformer (Dosovitskiy et al. 2021, arXiv:2010.11929) for the CNN-vs-ViT comparison.

Patch embedding (a p x p conv with stride p), a class token (or none, with mean pooling over the
patches), learned position embeddings, `depth` pre-norm blocks (x + attention(norm(x)), then
x + mlp(norm(x)) with GELU), a final norm and the classifier on the class token or the mean.

Defaults are a small-image model: patch 4, width 192, depth 6, 3 heads, MLP 4x (ViT-Tiny's width on
half its depth). Patch 16, width 768, depth 12, 12 heads, 224x224x3 inputs and 1000 classes give
ViT-B/16 (86.6M parameters; Dosovitskiy et al. 2021, Table 1: 86M).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from research.models import layers


class SelfAttention(nnx.Module):
  """Multi-head self-attention: (n, T, D) -> (n, T, D), softmax(q k^T / sqrt(D / heads)) v."""

  def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, kw: dict):
    if dim % heads:
      raise ValueError(f"width {dim} is not divisible by heads {heads}")
    self.heads = heads
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs, **kw)
    self.out = nnx.Linear(dim, dim, rngs=rngs, **kw)

  def __call__(self, x):
    n, t, d = x.shape
    q, k, v = jnp.split(self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads), 3, axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (n, T, heads, head_dim)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(d // self.heads).astype(q.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return self.out(jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, t, d))


class EncoderBlock(nnx.Module):
  """Pre-norm transformer block; (n, T, D) -> (n, T, D)."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs, norm: str, act,
               dropout: float, skip: bool, nkw: dict, kw: dict):
    self.act, self.skip = act, skip
    self.norm1 = layers.norm_layer(norm, dim, rngs=rngs, **nkw)
    self.attn = SelfAttention(dim, heads, rngs=rngs, kw=kw)
    self.norm2 = layers.norm_layer(norm, dim, rngs=rngs, **nkw)
    self.fc1 = nnx.Linear(dim, mlp_dim, rngs=rngs, **kw)
    self.fc2 = nnx.Linear(mlp_dim, dim, rngs=rngs, **kw)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x):
    out = self.dropout(self.attn(self.norm1(x)))
    x = x + out if self.skip else out
    out = self.dropout(self.fc2(self.dropout(self.act(self.fc1(self.norm2(x))))))
    return x + out if self.skip else out


class ViT(nnx.Module):
  """Input (n, H, W, C) with H, W multiples of `patch_size` -> logits (n, num_classes)."""

  def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
               patch_size: int = 4, dim: int = 192, depth: int = 6, heads: int = 3, mlp_ratio: int = 4,
               pool: str = "cls", norm: str = "layer", activation: str = "gelu", dropout: float = 0.0,
               skip: bool = True, width: float = 1.0, bn_momentum: float = layers.BN_MOMENTUM,
               bn_epsilon: float = 1e-6, dtype=None, param_dtype=jnp.float32):
    h, w, c = input_shape
    if h % patch_size or w % patch_size:
      raise ValueError(f"input {tuple(input_shape)} is not a multiple of patch_size {patch_size}")
    if pool not in ("cls", "mean"):
      raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
    act = layers.activation(activation)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    nkw = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=dtype, param_dtype=param_dtype)
    dim = max(heads, round(dim * width / heads) * heads)
    tokens = (h // patch_size) * (w // patch_size) + (pool == "cls")
    self.pool, self.dtype = pool, dtype
    self.embed = nnx.Conv(c, dim, (patch_size, patch_size), strides=patch_size, padding="VALID",
                          rngs=rngs, **kw)
    init = nnx.initializers.normal(0.02)
    self.cls = nnx.Param(jnp.zeros((1, 1, dim), param_dtype)) if pool == "cls" else None
    self.pos = nnx.Param(init(rngs.params(), (1, tokens, dim), param_dtype))
    self.blocks = nnx.List([
        EncoderBlock(dim, heads, mlp_ratio * dim, rngs=rngs, norm=norm, act=act, dropout=dropout,
                     skip=skip, nkw=nkw, kw=kw)
        for _ in range(depth)])
    self.final_norm = layers.norm_layer(norm, dim, rngs=rngs, **nkw)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs, **kw)

  def __call__(self, x):
    x = self.embed(x)
    n, _, _, d = x.shape
    x = x.reshape(n, -1, d)
    if self.cls is not None:
      x = jnp.concatenate([jnp.broadcast_to(self.cls[...].astype(x.dtype), (n, 1, d)), x], axis=1)
    x = x + self.pos[...].astype(x.dtype)
    for block in self.blocks:
      x = block(x)
    x = self.final_norm(x)
    return self.head(x[:, 0] if self.cls is not None else x.mean(axis=1))
