"""Batches from in-memory splits, as a pure function of (seed, step).

The batch of global step `s` is fixed by the seed alone: epoch `s // steps_per_epoch` is a seeded
permutation of the split, and the step's batch is a slice of it. A run resumed at step `s` therefore
sees exactly the batches an uninterrupted run sees, with no iterator state to checkpoint.
A batch is a dict `{"image": (b, H, W, C) uint8, "label": (b,) int32}`; evaluation batches add
`"mask"` (b,) float32, 1 for real examples and 0 for padding, so that one compiled shape covers a
ragged last batch and means are exact (sum of masked values / sum of mask).
"""

from collections.abc import Iterator

import numpy as np

from research.data.dataset import Split


def steps_per_epoch(num_examples: int, batch_size: int | None, drop_remainder: bool = True) -> int:
  """Number of batches in one pass; a full batch (`batch_size=None`) is one step per epoch."""
  if batch_size is None:
    return 1
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if drop_remainder:
    if batch_size > num_examples:
      raise ValueError(f"batch_size {batch_size} is larger than the split ({num_examples} examples)"
                       " and drop_remainder is on")
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The seeded order of the examples in one epoch."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(num_examples: int, batch_size: int | None, step: int, *, seed: int,
                  drop_remainder: bool = True, shuffle: bool = True) -> np.ndarray:
  """Indices of the examples in global step `step` (all of them, in order, for a full batch)."""
  if batch_size is None:
    return np.arange(num_examples)
  per_epoch = steps_per_epoch(num_examples, batch_size, drop_remainder)
  epoch, k = divmod(step, per_epoch)
  order = epoch_permutation(num_examples, seed, epoch) if shuffle else np.arange(num_examples)
  return order[k * batch_size:(k + 1) * batch_size]


def train_batches(split: Split, batch_size: int | None, *, seed: int, start_step: int = 0,
                  num_steps: int | None = None, drop_remainder: bool = True) -> Iterator[dict]:
  """Training batches for steps start_step, start_step + 1, ... (forever if num_steps is None)."""
  step = start_step
  while num_steps is None or step < start_step + num_steps:
    idx = batch_indices(len(split), batch_size, step, seed=seed, drop_remainder=drop_remainder)
    yield {"image": split.images[idx], "label": split.labels[idx]}
    step += 1


def eval_indices(num_examples: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(index, mask) of every example once, in order, in batches of exactly `batch_size`: (batch_size,)
  int64 and float32; the last batch is padded with example 0 and mask 0."""
  for start in range(0, num_examples, batch_size):
    idx = np.arange(start, start + batch_size)
    real = idx < num_examples
    yield np.where(real, idx, 0), real.astype(np.float32)


def eval_batches(split: Split, batch_size: int) -> Iterator[dict]:
  """Every example once, in order, in batches of exactly `batch_size` (the last one padded)."""
  for idx, mask in eval_indices(len(split), batch_size):
    yield {"image": split.images[idx], "label": split.labels[idx], "mask": mask}


def chunk_indices(num_examples: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """(index, mask), both (num_chunks, chunk): examples 0..n-1 in order, the last chunk filled with
  example 0 at mask 0 (int64 and float32)."""
  pad = -num_examples % chunk
  idx = np.concatenate([np.arange(num_examples), np.zeros(pad, np.int64)])
  mask = (np.arange(num_examples + pad) < num_examples).astype(np.float32)
  return idx.reshape(-1, chunk), mask.reshape(-1, chunk)


def padded_chunks(images: np.ndarray, labels: np.ndarray, chunk: int) -> dict:
  """All examples as arrays (num_chunks, chunk, ...): `image`, `label` int32, and `mask` (1 real, 0 for
  the zero-index padding that fills the last chunk). The layout the train step and curvature operators
  take for exact means over chunks (`chunk_indices`; on devices: `research.core.mesh.global_batch`)."""
  idx, mask = chunk_indices(len(labels), chunk)
  return {"image": images[idx], "label": labels[idx].astype(np.int32), "mask": mask}
