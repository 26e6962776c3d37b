"""Seeded synthetic image-classification data with learnable structure, for tests and quick checks.

Each class has a smooth prototype image (a sum of a few random low-frequency plane waves per channel);
an example is its class prototype, shifted by up to `max_shift` pixels, plus Gaussian pixel noise,
clipped and rounded to uint8. With the defaults a linear model separates the classes well but not
perfectly, so a network has something to learn and something to overfit.
"""

import numpy as np

from research.data.sources import RawSplits


def _prototypes(rng: np.random.Generator, num_classes: int, shape: tuple[int, int, int],
                num_waves: int = 4) -> np.ndarray:
  """(num_classes, H, W, C) float images in [0, 255]."""
  h, w, c = shape
  yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
  protos = np.zeros((num_classes, h, w, c))
  for k in range(num_classes):
    for ch in range(c):
      freqs = rng.uniform(-3.0, 3.0, size=(num_waves, 2))
      phases = rng.uniform(0, 2 * np.pi, size=num_waves)
      waves = np.sin(2 * np.pi * (freqs[:, 0, None, None] * yy + freqs[:, 1, None, None] * xx)
                     + phases[:, None, None])
      protos[k, :, :, ch] = waves.mean(axis=0)
  protos = (protos - protos.min()) / (protos.max() - protos.min() + 1e-12)
  return 255.0 * protos


def _examples(rng, protos, labels, noise, max_shift):
  n = len(labels)
  x = protos[labels]
  if max_shift > 0:
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    x = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(x, shifts)])
  x = x + rng.normal(0.0, noise, size=x.shape)
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def make_synthetic(*, num_train: int = 1024, num_test: int = 256,
                   image_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10,
                   seed: int = 0, noise: float = 48.0, max_shift: int = 2) -> RawSplits:
  """Train and test splits of class-balanced synthetic images.

  Args:
    num_train, num_test: examples per split (labels cycle through the classes, then are shuffled).
    image_shape: (H, W, C) of each image.
    num_classes: number of classes (>= 2).
    seed: everything is a function of this seed.
    noise: standard deviation of the pixel noise, in uint8 intensity units.
    max_shift: largest random translation of the prototype, in pixels.
  """
  if len(image_shape) != 3 or min(image_shape) < 1:
    raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape}")
  if num_classes < 2:
    raise ValueError(f"num_classes must be at least 2, got {num_classes}")
  rng = np.random.default_rng(seed)
  protos = _prototypes(rng, num_classes, tuple(image_shape))
  splits = []
  for n in (num_train, num_test):
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    splits += [_examples(rng, protos, labels, noise, max_shift), labels]
  return RawSplits("synthetic", *splits, class_names=tuple(f"class_{k}" for k in range(num_classes)),
                   source=f"synthetic(seed={seed})")
