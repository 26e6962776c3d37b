"""Eigenpairs of a symmetric operator: thick-restart Lanczos, and power iteration as the baseline.

`eigenpairs(op, k, which=...)` runs Lanczos with full reorthogonalization (classical Gram-Schmidt,
twice) on a Krylov basis of at most `krylov_dim` vectors kept in `basis_dtype` (float32 or float64,
whatever the dtype of the products). When the wanted Ritz pairs have not converged, it restarts thickly
(Wu & Simon 2000, SIAM J. Matrix Anal. Appl. 22(2)): it keeps the best `k + extra` Ritz vectors and the
last residual direction, so nothing learned is thrown away. Convergence of a Ritz pair (theta, x) is
judged on its residual ||A x - theta x||, estimated from the projected matrix (|beta * last component|)
and reported as `residual_norms`; a pair is converged when its residual <= tol * max |theta|. The test
runs after every product once the basis has k + 4 vectors (2k + 8 after a warm start, which is biased
towards the old eigenvectors: the extra vectors give an eigenvalue that overtook them room to show), so a
run stops as soon as it can.

We write our own instead of using matfree's Lanczos because we need restarts, both ends of the
spectrum, warm starts and residual-based stopping with a fixed-shape jitted orthogonalization; the
tridiagonal algebra (on a few hundred numbers) is done in float64 NumPy.

`power_iteration(op, k)` (with deflation) is the documented baseline most tools use; its stopping rule
is the residual too, so the two can be compared at equal accuracy.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from research.core.errors import UserError, choices_message
from research.curvature.linear_operator import LinearOperator

WHICH = ("largest", "smallest", "both")


@dataclasses.dataclass(frozen=True)
class EigenResult:
  values: np.ndarray  # (k,) float64, sorted descending for "largest"/"both", ascending for "smallest"
  vectors: np.ndarray  # (k, size) in the basis dtype
  residual_norms: np.ndarray  # (k,) ||A x - theta x||
  converged: np.ndarray  # (k,) bool
  num_products: int
  info: dict

  @property
  def all_converged(self) -> bool:
    return bool(self.converged.all())

  def to_dict(self) -> dict:
    return {"values": self.values.tolist(), "residual_norms": self.residual_norms.tolist(),
            "converged": self.converged.tolist(), "num_products": self.num_products, **self.info}


class _Counted:
  """An operator's product, jitted, counted, and checked for non-finite values."""

  def __init__(self, op: LinearOperator, dtype):
    self.op, self.dtype, self.count = op, dtype, 0

  def __call__(self, v):
    out = self.op.matvec(jnp.asarray(v, self.op.dtype)).astype(self.dtype)
    self.count += 1
    if not bool(jnp.isfinite(out).all()):
      raise UserError(f"the operator's product {self.count} is not finite (NaN or inf): check the "
                      "parameters and data (a diverged checkpoint?)")
    return out


@jax.jit
def _orthogonalize(basis, count, w):
  """w minus its projection on the first `count` rows of `basis` (twice), and the coefficients."""
  mask = (jnp.arange(basis.shape[0]) < count).astype(w.dtype)
  h1 = (basis @ w) * mask
  w = w - basis.T @ h1
  h2 = (basis @ w) * mask
  w = w - basis.T @ h2
  return w, h1 + h2


def check_symmetric(op: LinearOperator, key: jax.Array, rtol: float = 1e-3) -> float:
  """Relative asymmetry |u^T A v - v^T A u| / (|u| |A v|) on random u, v (2 products); raises if large."""
  u, v = jax.random.normal(key, (2, op.size), op.dtype)
  av, au = op.matvec(v), op.matvec(u)
  gap = float(jnp.abs(u @ av - v @ au) / (jnp.linalg.norm(u) * jnp.maximum(jnp.linalg.norm(av), 1e-30)))
  if gap > rtol:
    raise UserError(f"the operator is not symmetric (relative asymmetry {gap:.2e} > {rtol:g}); "
                    "eigen-solvers here need a symmetric operator")
  return gap


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
  order = np.argsort(theta)
  if which == "largest":
    return order[::-1][:k]
  if which == "smallest":
    return order[:k]
  hi, lo = order[::-1][: (k + 1) // 2], order[: k // 2]
  return np.concatenate([hi, [i for i in lo if i not in hi]])


def _converged(h: np.ndarray, n: int, k: int, which: str, tol: float) -> bool:
  """Whether the wanted Ritz pairs of the n x n projected matrix have residuals <= tol max |theta|."""
  theta, y = np.linalg.eigh(h[:n, :n])
  resid = np.abs(h[n, n - 1] * y[n - 1, :])
  return bool((resid[_wanted(theta, k, which)] <= tol * max(np.abs(theta).max(), 1e-30)).all())


def eigenpairs(op: LinearOperator, k: int = 1, which: str = "largest", *, key: jax.Array | None = None,
               krylov_dim: int | None = None, max_restarts: int = 20, tol: float = 1e-5,
               basis_dtype=jnp.float32, warm_start: np.ndarray | None = None,
               check_symmetry: bool = False) -> EigenResult:
  """The k largest (or smallest, or k split over both ends) eigenpairs of the symmetric `op`.

  krylov_dim: basis size before a restart (default max(2k + 20, 30), at most the dimension).
  warm_start: (j, size) vectors (e.g. the previous top eigenvectors during training): the start vector
  is their sum plus a little noise, so tracking an eigenvector takes few products.
  Returns values, vectors, residual norms, converged flags and the number of products; pairs that did
  not converge within `max_restarts` are flagged `converged=False`, never hidden.
  """
  d = op.size
  if which not in WHICH:
    raise UserError(choices_message("which", which, WHICH))
  if not 1 <= k <= d:
    raise UserError(f"k = {k} eigenpairs asked of an operator of dimension {d}")
  key = jax.random.key(0) if key is None else key
  m = min(d, krylov_dim or max(2 * k + 20, 30))
  if m < min(d, k + 2):
    raise UserError(f"krylov_dim {m} is too small for k = {k} (needs at least k + 2)")
  extra = max(0, min((m - k) // 2, k + 5))
  # Never stop on fewer basis vectors (guards a lucky early residual). A random start has the same
  # expected overlap with every eigenvector; a warm start does not, so it gets a larger guard.
  min_early = min(m, k + 4 if warm_start is None else 2 * k + 8)
  dtype = jnp.dtype(basis_dtype)
  matvec = _Counted(op, dtype)
  start_key, sym_key = jax.random.split(key)
  if check_symmetry:
    check_symmetric(op, sym_key)

  v = jax.random.normal(start_key, (d,), dtype)
  if warm_start is not None:
    w0 = jnp.asarray(np.atleast_2d(warm_start), dtype)
    if w0.shape[1] != d:
      raise UserError(f"warm_start vectors have size {w0.shape[1]}, the operator {d}")
    v = w0.sum(0) + 1e-3 * jnp.linalg.norm(w0.sum(0)) / np.sqrt(d) * v
  basis = jnp.zeros((m + 1, d), dtype)
  basis = basis.at[0].set(v / jnp.linalg.norm(v))
  h = np.zeros((m + 1, m + 1))  # projected matrix V^T A V (float64)
  kept = 0  # number of locked-in Ritz vectors at the start of the basis after a restart
  count = 1  # vectors in the basis
  theta = y = None
  exact = False
  for restart in range(max_restarts + 1):
    while count <= m:
      j = count - 1
      w = matvec(basis[j])
      w, coeffs = _orthogonalize(basis, count, w)
      coeffs = np.asarray(coeffs, np.float64)
      h[:count, j] = coeffs[:count]
      h[j, :count] = coeffs[:count]
      beta = float(jnp.linalg.norm(w))
      scale = max(np.abs(h[:count, :count]).max(), 1e-300)
      if beta <= 1e-10 * scale or count == d:  # invariant subspace: the Ritz values are exact
        exact = True
        break
      basis = basis.at[count].set(w / beta)
      h[count, j] = h[j, count] = beta
      count += 1
      if count - 1 >= min_early and count <= m and _converged(h, count - 1, k, which, tol):
        break  # the wanted pairs converged before the basis filled up: no more products needed
    n = count if exact else count - 1
    theta, y = np.linalg.eigh(h[:n, :n])
    beta_last = 0.0 if exact else h[n, n - 1]
    resid = np.abs(beta_last * y[n - 1, :])
    pick = _wanted(theta, k, which)
    converged = resid[pick] <= tol * max(np.abs(theta).max(), 1e-30)
    if exact or converged.all() or restart == max_restarts:
      break
    # Thick restart: keep the wanted Ritz vectors and a few more, then the residual direction.
    keep = _wanted(theta, min(n - 1, k + extra), which)
    ritz = (y[:, keep].T @ np.asarray(basis[:n], np.float64))
    residual_dir = basis[n]
    kept = len(keep)
    basis = jnp.zeros_like(basis).at[:kept].set(jnp.asarray(ritz, dtype)).at[kept].set(residual_dir)
    h = np.zeros_like(h)
    h[:kept, :kept] = np.diag(theta[keep])
    h[kept, :kept] = h[:kept, kept] = beta_last * y[n - 1, keep]
    count = kept + 1
  pick = _wanted(theta, k, which)
  vectors = y[:, pick].T @ np.asarray(basis[:n], np.float64)
  order = np.argsort(theta[pick])
  order = order if which == "smallest" else order[::-1]
  pick = pick[order]
  values = theta[pick]
  resid = np.abs(beta_last * y[n - 1, pick])
  converged = resid <= tol * max(np.abs(theta).max(), 1e-30)
  info = dict(op.info) | {"solver": "lanczos", "which": which, "k": k, "krylov_dim": m,
                          "restarts": restart, "tol": tol, "basis_dtype": str(dtype)}
  return EigenResult(values, vectors[order].astype(dtype), resid, converged, matvec.count, info)


def power_iteration(op: LinearOperator, k: int = 1, *, key: jax.Array | None = None, tol: float = 1e-5,
                    max_iters: int = 1000, basis_dtype=jnp.float32) -> EigenResult:
  """The k eigenpairs of largest magnitude by power iteration with deflation (the baseline).

  Each pair iterates v <- (A - sum_j theta_j x_j x_j^T) v until ||A v - theta v|| <= tol * |theta|.
  """
  d = op.size
  if not 1 <= k <= d:
    raise UserError(f"k = {k} eigenpairs asked of an operator of dimension {d}")
  key = jax.random.key(0) if key is None else key
  dtype = jnp.dtype(basis_dtype)
  matvec = _Counted(op, dtype)
  values, vectors, resids, flags = [], [], [], []
  for i in range(k):
    v = jax.random.normal(jax.random.fold_in(key, i), (d,), dtype)
    v = v / jnp.linalg.norm(v)
    theta, resid, ok = 0.0, np.inf, False
    for _ in range(max_iters):
      av = matvec(v)
      for lam, x in zip(values, vectors):
        av = av - lam * x * (x @ v)
      theta = float(v @ av)
      resid = float(jnp.linalg.norm(av - theta * v))
      if resid <= tol * max(abs(theta), 1e-30):
        ok = True
        break
      v = av / jnp.linalg.norm(av)
    values.append(theta)
    vectors.append(v)
    resids.append(resid)
    flags.append(ok)
  info = dict(op.info) | {"solver": "power_iteration", "k": k, "tol": tol}
  return EigenResult(np.array(values), np.stack([np.asarray(x) for x in vectors]), np.array(resids),
                     np.array(flags), matvec.count, info)
