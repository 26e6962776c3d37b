"""Residual networks for small images, with skip connections that can be switched off.

- `CifarResNet`: He et al. 2016 (arXiv:1512.03385, section 4.2): a 3x3 conv of 16 channels, three
  stages of n basic blocks with 16, 32, 64 channels (stride 2 at the start of stages 2 and 3), global
  average pooling, a linear classifier; depth = 6n + 2 (ResNet-20/32/44/56/110). Shortcuts: option A
  (identity; subsampling and zero-padded channels where the shape changes, no parameters) or option B
  (1x1 convolution + norm where the shape changes).
- Pre-activation blocks (He et al. 2016b, arXiv:1603.05027): norm and activation before each conv,
  1x1 projection shortcuts. `preact_resnet18`: widths 64-512, [2, 2, 2, 2] blocks, a 3x3 stem.
- `wide_resnet` (Zagoruyko & Komodakis 2016, arXiv:1605.07146): WRN-d-k, pre-activation blocks,
  widths 16k, 32k, 64k, (d - 4) / 6 blocks per stage, dropout between the two convs.

`skip=False` gives the no-skip twin of Li et al. 2018 (the residual branch alone); it has exactly the
same parameters as its skip model, so landscapes and spectra compare like with like.
"""

import jax.numpy as jnp
from flax import nnx

from research.core import ops
from research.models import layers


class BasicBlock(nnx.Module):
  """Two 3x3 convs; post-activation (conv, norm, act) or pre-activation (norm, act, conv)."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs, preact: bool,
               shortcut: str, skip: bool, norm: str, act, dropout: float, zero_init_last_norm: bool,
               nkw: dict, ckw: dict):
    self.preact, self.skip, self.act, self.stride = preact, skip, act, stride
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), strides=stride, **ckw, rngs=rngs)
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), **ckw, rngs=rngs)
    self.norm1 = layers.norm_layer(norm, in_ch if preact else out_ch, **nkw, rngs=rngs)
    self.norm2 = layers.norm_layer(norm, out_ch, zero_scale=zero_init_last_norm, **nkw, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.reshape = stride != 1 or in_ch != out_ch
    self.pad_channels = (out_ch - in_ch) if shortcut == "A" else 0
    self.project = self.reshape and shortcut == "B"
    if self.project:
      self.proj = nnx.Conv(in_ch, out_ch, (1, 1), strides=stride, **ckw, rngs=rngs)
      self.proj_norm = (layers.Identity() if preact
                        else layers.norm_layer(norm, out_ch, **nkw, rngs=rngs))

  def _shortcut(self, x):
    if self.project:
      return self.proj_norm(self.proj(x))
    if self.reshape:  # Option A: subsample, then zero-pad the new channels on both sides.
      x = x[:, :: self.stride, :: self.stride]
      lo = self.pad_channels // 2
      return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (lo, self.pad_channels - lo)))
    return x

  def __call__(self, x):
    if self.preact:
      out = self.act(self.norm1(x))
      shortcut = self._shortcut(out if self.project else x)
      out = self.conv1(out)
      out = self.conv2(self.dropout(self.act(self.norm2(out))))
      return out + shortcut if self.skip else out
    out = self.act(self.norm1(self.conv1(x)))
    out = self.norm2(self.conv2(self.dropout(out)))
    return self.act(out + self._shortcut(x) if self.skip else out)


class ResNet(nnx.Module):
  """Stem conv, stages of BasicBlocks, (final norm for pre-activation), global average pool, linear.

  Input (n, H, W, C) -> logits (n, num_classes).
  """

  def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
               stage_widths: tuple[int, ...], blocks_per_stage: tuple[int, ...], stem_width: int,
               preact: bool = False, shortcut: str = "A", skip: bool = True, norm: str = "batch",
               activation: str = "relu", width: float = 1.0, dropout: float = 0.0,
               zero_init_last_norm: bool = False, bn_momentum: float = layers.BN_MOMENTUM,
               bn_epsilon: float = layers.BN_EPSILON, dtype=None, param_dtype=jnp.float32):
    if shortcut not in ("A", "B"):
      raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
    self.act = layers.activation(activation)
    self.preact, self.skip = preact, skip
    ckw = dict(use_bias=norm == "none", dtype=dtype, param_dtype=param_dtype,
               conv_general_dilated=ops.conv_general_dilated)
    nkw = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=dtype, param_dtype=param_dtype)
    stem = max(1, round(stem_width * width))
    self.stem = nnx.Conv(input_shape[-1], stem, (3, 3), **ckw, rngs=rngs)
    self.stem_norm = layers.Identity() if preact else layers.norm_layer(norm, stem, **nkw, rngs=rngs)
    blocks, in_ch = [], stem
    for i, (w, n) in enumerate(zip(stage_widths, blocks_per_stage)):
      out_ch = max(1, round(w * width))
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(BasicBlock(in_ch, out_ch, stride, rngs=rngs, preact=preact, shortcut=shortcut,
                                 skip=skip, norm=norm, act=self.act, dropout=dropout,
                                 zero_init_last_norm=zero_init_last_norm, nkw=nkw, ckw=ckw))
        in_ch = out_ch
    self.blocks = nnx.List(blocks)
    self.final_norm = (layers.norm_layer(norm, in_ch, **nkw, rngs=rngs) if preact
                       else layers.Identity())
    self.head = nnx.Linear(in_ch, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x):
    # With skips, each block output is the residual stream (a backend may compute it once: core.ops).
    stream = ops.residual_stream if self.skip else (lambda x: x)
    x = self.stem(x)
    if not self.preact:
      x = stream(self.act(self.stem_norm(x)))
    for block in self.blocks:
      x = stream(block(x))
    if self.preact:
      x = self.act(self.final_norm(x))
    return self.head(x.mean(axis=(1, 2)))


def cifar_resnet(depth: int, **kw) -> ResNet:
  """ResNet-`depth` of He et al. 2016 for CIFAR (depth = 6n + 2)."""
  if (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
  n = (depth - 2) // 6
  kw.setdefault("shortcut", "A")
  return ResNet(stage_widths=(16, 32, 64), blocks_per_stage=(n, n, n), stem_width=16, **kw)


def preact_resnet18(*, shortcut: str = "B", **kw) -> ResNet:
  return ResNet(stage_widths=(64, 128, 256, 512), blocks_per_stage=(2, 2, 2, 2), stem_width=64,
                preact=True, shortcut=shortcut, **kw)


def wide_resnet(*, depth: int = 16, widen_factor: int = 4, shortcut: str = "B", **kw) -> ResNet:
  """WRN-depth-widen_factor (depth = 6n + 4)."""
  if (depth - 4) % 6:
    raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
  n, k = (depth - 4) // 6, widen_factor
  return ResNet(stage_widths=(16 * k, 32 * k, 64 * k), blocks_per_stage=(n, n, n), stem_width=16,
                preact=True, shortcut=shortcut, **kw)
