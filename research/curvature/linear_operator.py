"""The linear operator every curvature solver takes: a symmetric matrix known only by its products.

`LinearOperator(matvec, size, dtype, info)`: `matvec` maps a (size,) vector to a (size,) vector and is
jit-able; `info` records what the operator is (kind, BatchNorm mode, data, chunk size, seed) and is
copied into every result computed from it. Counting products is the solvers' job.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class LinearOperator:
  matvec: Callable[[jax.Array], jax.Array]  # (size,) -> (size,)
  size: int
  dtype: jnp.dtype = jnp.float32
  info: dict = dataclasses.field(default_factory=dict)

  def __matmul__(self, v):
    return self.matvec(v)

  @staticmethod
  def from_dense(matrix, info: dict | None = None) -> "LinearOperator":
    """A dense (d, d) matrix as an operator (tests, small problems)."""
    m = jnp.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
      raise ValueError(f"a square matrix is needed, got shape {m.shape}")
    return LinearOperator(lambda v: m @ v, m.shape[0], m.dtype, dict(info or {"operator": "dense"}))

  def to_dense(self) -> np.ndarray:
    """The (size, size) matrix, one product per column (small operators only)."""
    eye = jnp.eye(self.size, dtype=self.dtype)
    return np.asarray(jax.jit(jax.vmap(self.matvec))(eye)).T
