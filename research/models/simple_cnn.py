"""A plain CNN: `blocks` conv blocks (conv, norm, activation, then 2x2 max pooling or a stride-2 conv),
channels doubling from `channels`, then a dense hidden layer and the classifier. The default (2 blocks
of 32 and 64 channels, dense 128) is the baseline of the quick studies."""

import jax.numpy as jnp
from flax import nnx

from research.core import ops
from research.models import layers


class SimpleCNN(nnx.Module):
  """Input (n, H, W, C) -> logits (n, num_classes)."""

  def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
               blocks: int = 2, channels: int = 32, kernel: int = 3, downsample: str = "pool",
               dense: int = 128, activation: str = "relu", norm: str = "none", dropout: float = 0.0,
               width: float = 1.0, bn_momentum: float = layers.BN_MOMENTUM,
               bn_epsilon: float = layers.BN_EPSILON, dtype=None, param_dtype=jnp.float32):
    if downsample not in ("pool", "stride"):
      raise ValueError(f"downsample must be 'pool' or 'stride', got {downsample!r}")
    h, w, c = input_shape
    self.act = layers.activation(activation)
    self.pool = downsample == "pool"
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    widths = [max(1, round(channels * width * 2 ** i)) for i in range(blocks)]
    stride = 1 if self.pool else 2
    conv = ops.conv_general_dilated
    self.convs = nnx.List([nnx.Conv(a, b, (kernel, kernel), strides=stride, conv_general_dilated=conv, **kw)
                           for a, b in zip([c] + widths[:-1], widths)])
    self.norms = nnx.List([layers.norm_layer(norm, b, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                                             dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                           for b in widths])
    for _ in range(blocks):
      h, w = h // 2 if self.pool else -(-h // 2), w // 2 if self.pool else -(-w // 2)
    if h < 1 or w < 1:
      raise ValueError(f"input {input_shape} is too small for {blocks} downsampling blocks")
    hidden = max(1, round(dense * width))
    self.fc = nnx.Linear(h * w * widths[-1], hidden, **kw)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, **kw)

  def __call__(self, x):
    for conv, norm in zip(self.convs, self.norms):
      x = self.act(norm(conv(x)))
      if self.pool:
        x = ops.max_pool_2x2(x)
    x = self.dropout(self.act(self.fc(x.reshape(x.shape[0], -1))))
    return self.head(x)
