"""Train/test leakage check: exact and near-duplicate images within and across splits.

Exact duplicates are images whose bytes are equal. Near duplicates are pairs (test image, its nearest
training image) whose grey thumbnails (block means over a 14x14 grid, intensities 0-255) differ by less
than `threshold` in root-mean-square, but whose bytes differ. On Fashion-MNIST, pairs below 4 are the
same product photographed or cropped slightly differently (looked at by eye); the nearest-neighbour
distance of a typical test image is about 21. It is a screening tool: pairs are listed with their
indices for a person to look at.
"""

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

THUMBNAIL_GRID = 14
NEAR_THRESHOLD = 4.0


def exact_keys(images: np.ndarray) -> np.ndarray:
  """(n,) array of 16-byte digests of each image's bytes (equal bytes <=> equal digest, in practice)."""
  flat = np.ascontiguousarray(images).reshape(len(images), -1)
  return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat],
                  dtype="S16")


def thumbnails(images: np.ndarray, grid: int = THUMBNAIL_GRID) -> np.ndarray:
  """(n, g*g) float32 grey block means of (n, H, W, C) uint8 images, g = min(grid, H, W)."""
  grey = images.astype(np.float32).mean(axis=-1)
  h, w = grey.shape[1:]
  rows = np.linspace(0, h, min(grid, h) + 1).astype(int)[:-1]
  cols = np.linspace(0, w, min(grid, w) + 1).astype(int)[:-1]
  sums = np.add.reduceat(np.add.reduceat(grey, rows, axis=1), cols, axis=2)
  sizes = np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w)))
  return (sums / sizes).reshape(len(images), -1)


@jax.jit
def _nearest(queries: jax.Array, keys: jax.Array, key_sq_norms: jax.Array):
  """Index and RMS distance of each query's nearest key (rows are thumbnails)."""
  d2 = (queries ** 2).sum(1)[:, None] + key_sq_norms[None] - 2.0 * queries @ keys.T
  nearest = d2.argmin(axis=1)
  rms = jnp.sqrt(jnp.maximum(jnp.take_along_axis(d2, nearest[:, None], 1)[:, 0], 0) / keys.shape[1])
  return nearest, rms


def nearest_neighbours(test_images: np.ndarray, train_images: np.ndarray,
                       chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """For each test image: index of the nearest train thumbnail and the RMS distance to it."""
  keys = jnp.asarray(thumbnails(train_images))
  queries = thumbnails(test_images)
  norms = (keys ** 2).sum(1)
  pad = -len(queries) % chunk  # One compiled shape for every chunk.
  queries = np.concatenate([queries, np.zeros((pad, queries.shape[1]), queries.dtype)])
  out = [_nearest(jnp.asarray(queries[s:s + chunk]), keys, norms)
         for s in range(0, len(queries), chunk)]
  n = len(test_images)
  return (np.concatenate([np.asarray(o[0]) for o in out])[:n],
          np.concatenate([np.asarray(o[1]) for o in out])[:n])


def _groups_within(keys: np.ndarray) -> list[np.ndarray]:
  """Index groups (sorted, size >= 2) of equal keys."""
  order = np.argsort(keys, kind="stable")
  sorted_keys = keys[order]
  starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
  bounds = np.r_[starts, len(keys)]
  return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b - a > 1]


def _matches_across(train_keys: np.ndarray, test_keys: np.ndarray) -> np.ndarray:
  """(m, 2) pairs (test index, train index) with equal keys."""
  by_key: dict = {}
  for i, k in enumerate(train_keys):
    by_key.setdefault(k, []).append(i)
  return np.array([(j, i) for j, k in enumerate(test_keys) for i in by_key.get(k, ())],
                  dtype=np.int64).reshape(-1, 2)


@dataclasses.dataclass
class LeakageReport:
  """Duplicate counts and example indices (into the raw train and test splits)."""
  exact_within_train: list[np.ndarray]  # groups of train indices with identical images
  exact_within_test: list[np.ndarray]
  exact_across: np.ndarray  # (m, 2) pairs (test index, train index) of identical images
  near_across: np.ndarray  # (m, 2) pairs (test, nearest train) closer than the threshold, not equal
  near_distances: np.ndarray  # (m,) their RMS thumbnail distances
  threshold: float

  def test_indices_leaked(self, near: bool = False) -> np.ndarray:
    pairs = np.concatenate([self.exact_across, self.near_across]) if near else self.exact_across
    return np.unique(pairs[:, 0])

  def train_indices_to_drop(self, near: bool = False) -> np.ndarray:
    """Train indices that duplicate some test image (exactly, or also nearly if `near`)."""
    pairs = np.concatenate([self.exact_across, self.near_across]) if near else self.exact_across
    return np.unique(pairs[:, 1])

  def summary(self, examples: int = 5) -> str:
    def groups_line(name, groups):
      extra = sum(len(g) - 1 for g in groups)
      shown = "; ".join(",".join(map(str, g[:6])) for g in groups[:examples])
      return f"{name}: {len(groups)} groups, {extra} redundant images" + (
          f" (e.g. {shown})" if groups else "")

    def pairs_line(name, pairs):
      shown = "; ".join(f"test {a} = train {b}" for a, b in pairs[:examples])
      return (f"{name}: {len(pairs)} pairs, {len(np.unique(pairs[:, 0]))} test images, "
              f"{len(np.unique(pairs[:, 1]))} train images" + (f" (e.g. {shown})" if len(pairs) else ""))

    return "\n".join([
        groups_line("exact duplicates within train", self.exact_within_train),
        groups_line("exact duplicates within test", self.exact_within_test),
        pairs_line("exact duplicates across test/train", self.exact_across),
        pairs_line(f"near duplicates across test/train (thumbnail RMS < {self.threshold:g})",
                   self.near_across),
    ])


def find_duplicates(train_images: np.ndarray, test_images: np.ndarray,
                    threshold: float = NEAR_THRESHOLD) -> LeakageReport:
  """Exact duplicates within and across splits, and near duplicates across them."""
  train_exact, test_exact = exact_keys(train_images), exact_keys(test_images)
  exact_across = _matches_across(train_exact, test_exact)
  nearest, dist = nearest_neighbours(test_images, train_images)
  near = np.flatnonzero((dist < threshold) & (test_exact != train_exact[nearest]))
  return LeakageReport(_groups_within(train_exact), _groups_within(test_exact), exact_across,
                       np.stack([near, nearest[near]], axis=1).astype(np.int64), dist[near], threshold)
