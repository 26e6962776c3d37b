"""On-device image transforms: normalization and augmentation, jit-able pure functions.

Augmentation takes an explicit key; a training loop passes `jax.random.fold_in(data_key, step)`, so
the same step of a resumed run sees the same augmented batch.
"""

import jax
import jax.numpy as jnp
import numpy as np

# The smallest per-pixel standard deviation `standardize_pixel` divides by, in [0, 1] units: one grey
# level. A pixel that (nearly) never changes over the training split (MNIST's borders: std 0) is divided
# by this instead, so it stays finite; its standardized training values then have std < 1.
PIXEL_STD_FLOOR = 1.0 / 255.0
MODES = ("standardize", "standardize_pixel", "unit", "none")  # normalizations, see `normalize`


def normalize(images, mean, std, mode: str = "standardize"):
  """uint8 (..., H, W, C) images -> float32.

  Modes: `standardize` ((x/255 - mean) / std, per channel: mean and std of shape (C,)),
  `standardize_pixel` (the same per pixel: mean and std of shape (H, W, C), Cohen et al. 2021's
  convention; std floored, `PIXEL_STD_FLOOR`), both in [0, 1] units and from the training split;
  `unit` (x/255 in [0, 1]), `none` (x as float32, in [0, 255]).
  """
  x = jnp.asarray(images).astype(jnp.float32)
  if mode == "none":
    return x
  x = x / 255.0
  if mode == "unit":
    return x
  if mode in ("standardize", "standardize_pixel"):
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  raise ValueError(f"unknown normalization {mode!r}; valid choices: {', '.join(MODES)}")


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
  """Zero-pads (n, H, W, C) images by `padding` pixels and crops a random H x W window from each."""
  if padding <= 0:
    return images
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Flips each (n, H, W, C) image left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def augment(key: jax.Array, images: jax.Array, *, crop_padding: int = 4,
            flip: bool = True) -> jax.Array:
  """Random crop with zero padding, then random horizontal flip; works on uint8 or float images."""
  crop_key, flip_key = jax.random.split(key)
  images = random_crop(crop_key, images, crop_padding)
  return random_flip(flip_key, images) if flip else images


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation of uint8 (n, H, W, C) images, in [0, 1] units.

  Exact, from each channel's 256-bin histogram (several times faster than a float64 pass).
  """
  flat = images.reshape(-1, images.shape[-1])
  levels = np.arange(256, dtype=np.float64) / 255.0
  mean, std = [], []
  for c in range(flat.shape[1]):
    counts = np.bincount(flat[:, c], minlength=256).astype(np.float64)
    p = counts / counts.sum()
    m = float(p @ levels)
    mean.append(m)
    std.append(float(np.sqrt(max(p @ (levels - m) ** 2, 0.0))))
  return np.array(mean), np.array(std)


def pixel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Per-pixel mean and standard deviation (over the n images) of uint8 (n, H, W, C) images: two (H, W, C)
  float64 arrays in [0, 1] units, not floored.

  Exact: integer sums of x and x^2 in int64 (chunks of `chunk` images), var = (n S2 - S1^2) / n^2.
  """
  n = len(images)
  s1 = np.zeros(images.shape[1:], np.int64)
  s2 = np.zeros(images.shape[1:], np.int64)
  for start in range(0, n, chunk):
    x = images[start:start + chunk].astype(np.int64)
    s1 += x.sum(axis=0)
    s2 += (x * x).sum(axis=0)
  mean = s1 / (n * 255.0)
  var = (n * s2 - s1 * s1) / (float(n) * n * 255.0**2)
  return mean, np.sqrt(np.maximum(var, 0.0))
