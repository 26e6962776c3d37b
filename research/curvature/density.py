"""Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

For a unit start vector v, m Lanczos steps give a tridiagonal T_m = Y diag(theta) Y^T; the nodes theta_j
and weights w_j = Y_{0j}^2 form a Gauss quadrature of the spectral measure of A seen from v:
v^T f(A) v ~ sum_j w_j f(theta_j), exact for polynomials of degree <= 2m - 1. With E[v v^T] = I / d
(normalized Gaussian or Rademacher / sqrt(d)), its mean over probes estimates (1/d) tr f(A) and the
density (1/d) sum_i delta(t - lambda_i) (Ubaru, Chen & Saad 2017, SIAM J. Matrix Anal. Appl. 38(4);
Ghorbani, Krishnan & Xiao 2019, ICML, "An investigation into neural net optimization via Hessian
eigenvalue density").

`slq` returns the raw nodes and weights (DESIGN.md: smoothing is a separate step); `moments`, `smooth`,
`log_density` and `resolution` (what m steps and n probes cannot resolve) read them; `outliers` is kept
for old readers and is not a reported quantity (`research.core.spectral`). The Lanczos recursion here
only needs the tridiagonal (eigenvectors and restarts live in `lanczos.py`): a Python loop over the
steps calls `op.matvec` on one vector (never traced into a jitted loop: on XLA:CPU a convolutional
model's product inside a `while_loop` runs about 10x slower than as its own call), then one jitted step
of fixed shapes updates alpha, beta and the basis. The Krylov basis is kept in `basis_dtype` whatever
the product dtype, with full reorthogonalization (classical Gram-Schmidt, twice) by default, and the
tridiagonal is diagonalized in float64 by `scipy.linalg.eigh_tridiagonal`. A non-finite product raises
a `UserError`.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from research.core.errors import UserError, choices_message
from research.core.spectral import Outliers, log_density, outliers, resolution, smooth  # noqa: F401 (in the leaf)
from research.curvature.linear_operator import LinearOperator
from research.curvature.trace import _Products, check_count, key_info, to_jsonable

PROBES = ("gaussian", "rademacher")
BASIS_DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class QuadratureResult:
  """Raw SLQ output. Nodes are eigenvalues of A's units; each probe's weights sum to 1.

  nodes, weights: (num_probes, num_steps) float64. A probe whose Krylov space was exhausted after
  k < num_steps steps (breakdown) has nodes and weights padded with 0 after position k.
  num_steps_done: (num_probes,) Lanczos steps each probe took (= its products).
  """
  nodes: np.ndarray
  weights: np.ndarray
  num_steps_done: np.ndarray
  size: int
  num_products: int
  info: dict

  def to_dict(self) -> dict:
    return {"nodes": self.nodes.tolist(), "weights": self.weights.tolist(),
            "num_steps_done": self.num_steps_done.tolist(), "size": int(self.size),
            "num_products": int(self.num_products), "info": to_jsonable(self.info)}


def _start_vector(key, size: int, probe: str, dtype):
  if probe == "gaussian":
    v = jax.random.normal(key, (size,), dtype)
    return v / jnp.linalg.norm(v)
  return jax.random.rademacher(key, (size,), dtype) / jnp.sqrt(jnp.asarray(size, dtype))


@functools.partial(jax.jit, static_argnames=("size", "num_steps", "basis_dtype", "probe", "reorthogonalize"))
def _lanczos_start(key, *, size, num_steps, basis_dtype, probe, reorthogonalize):
  """The Lanczos state before step 0: (v_prev, v, basis, alphas, betas, beta_prev, anorm).

  basis: (num_steps + 1, size) with the start vector in row 0 when reorthogonalizing, else (1, size).
  """
  v0 = _start_vector(key, size, probe, basis_dtype)
  rows = num_steps + 1 if reorthogonalize else 1
  basis = jnp.zeros((rows, size), basis_dtype).at[0].set(v0)
  zeros = jnp.zeros((num_steps,), basis_dtype)
  zero = jnp.zeros((), basis_dtype)
  return jnp.zeros_like(v0), v0, basis, zeros, zeros, zero, zero


@functools.partial(jax.jit, static_argnames=("reorthogonalize",), donate_argnames=("basis",))
def _lanczos_step(j, w, tol, v_prev, v, basis, alphas, betas, beta_prev, anorm, *, reorthogonalize):
  """Lanczos step j given the product w = A v: the next state and whether it broke down.

  Breakdown when beta_j <= tol * (running bound on ||T||): the Krylov space is (numerically) invariant.
  Fixed shapes (j is traced), so one compile per operator size and step count; the basis is donated.
  """
  w = w.astype(v.dtype)
  alpha = jnp.vdot(v, w)
  w = w - alpha * v - beta_prev * v_prev
  if reorthogonalize:  # rows > j of the basis are still zero
    w = w - basis.T @ (basis @ w)
    w = w - basis.T @ (basis @ w)
  beta = jnp.linalg.norm(w)
  anorm = jnp.maximum(anorm, jnp.abs(alpha) + beta + beta_prev)
  broken = beta <= tol * anorm
  v_next = jnp.where(broken, 0.0, w / jnp.where(broken, 1.0, beta)).astype(v.dtype)
  if reorthogonalize:
    basis = basis.at[j + 1].set(v_next)
  return (v, v_next, basis, alphas.at[j].set(alpha), betas.at[j].set(beta), beta, anorm), broken


def _lanczos_tridiagonal(products, key, tol, *, size, num_steps, basis_dtype, probe, reorthogonalize):
  """alphas (num_steps,), betas (num_steps,), steps done: Lanczos from the probe drawn from `key`, one
  `products` call (op.matvec from Python) per step, stopping early at a breakdown."""
  state = _lanczos_start(key, size=size, num_steps=num_steps, basis_dtype=basis_dtype, probe=probe,
                         reorthogonalize=reorthogonalize)
  steps = num_steps
  for j in range(num_steps):
    w = products(state[1])
    state, broken = _lanczos_step(j, w, tol, *state, reorthogonalize=reorthogonalize)
    if bool(broken):
      steps = j + 1
      break
  return state[3], state[4], steps


def slq(op: LinearOperator, key: jax.Array, *, num_probes: int, num_steps: int,
        reorthogonalize: bool = True, basis_dtype=jnp.float32, probe: str = "gaussian",
        breakdown_tol: float | None = None) -> QuadratureResult:
  """Stochastic Lanczos quadrature: `num_probes` runs of `num_steps` Lanczos steps (one product each).

  probe: "gaussian" (normalized) or "rademacher" (/ sqrt(d)) start vectors, probe i from split(key)[i].
  basis_dtype: float32 or float64 (needs jax_enable_x64), independent of op.dtype. With
  reorthogonalize=True the basis holds (num_steps + 1, d) numbers; with False only three vectors, but
  lost orthogonality then shows as spurious copies of converged extreme nodes (moments stay usable).
  breakdown_tol: beta_j / ||T|| below which the Krylov space counts as exhausted (the probe stops and
  its nodes and weights are padded with 0); default eps^(2/3) with eps the larger machine epsilon of
  op.dtype and basis_dtype (3.7e-11 for float64, 2.4e-5 for float32). Stopping moves the nodes by at
  most about beta_j.
  """
  num_probes = check_count("num_probes", num_probes)
  num_steps = check_count("num_steps", num_steps)
  d = op.size
  if num_steps > d:
    raise UserError(f"num_steps = {num_steps} exceeds the operator size {d} (the Krylov space has at most d "
                    f"dimensions)")
  if probe not in PROBES:
    raise UserError(choices_message("probe", probe, PROBES))
  basis = np.dtype(basis_dtype)
  if basis.name not in BASIS_DTYPES:
    raise UserError(choices_message("basis_dtype", basis.name, BASIS_DTYPES))
  if basis == np.float64 and not jax.config.jax_enable_x64:
    raise UserError("basis_dtype float64 needs jax_enable_x64 (jax.config.update('jax_enable_x64', True))")
  op_dtype = np.dtype(op.dtype)
  if breakdown_tol is None:
    breakdown_tol = max(np.finfo(basis).eps, float(jnp.finfo(op_dtype).eps)) ** (2 / 3)
  products = _Products(op, "slq")
  run = functools.partial(_lanczos_tridiagonal, products, size=d, num_steps=num_steps, basis_dtype=basis,
                          probe=probe, reorthogonalize=bool(reorthogonalize))
  nodes = np.zeros((num_probes, num_steps))
  weights = np.zeros((num_probes, num_steps))
  steps_done = np.zeros(num_probes, dtype=np.int64)
  tol = jnp.asarray(breakdown_tol, basis)
  keys = jax.random.split(key, num_probes)
  for i in range(num_probes):
    alphas, betas, steps = run(keys[i], tol)
    k = int(steps)
    alphas = np.asarray(alphas, np.float64)[:k]
    betas = np.asarray(betas, np.float64)[:k - 1]
    theta, y = scipy.linalg.eigh_tridiagonal(alphas, betas)
    nodes[i, :k] = theta
    weights[i, :k] = y[0] ** 2
    steps_done[i] = k
  info = dict(op.info) | {"method": "slq", "probe": probe, "num_probes": num_probes, "num_steps": num_steps,
                          "reorthogonalize": bool(reorthogonalize), "basis_dtype": basis.name,
                          "breakdown_tol": float(breakdown_tol),
                          "breakdowns": int(np.sum(steps_done < num_steps))} | key_info(key)
  return QuadratureResult(nodes, weights, steps_done, d, products.count, info)


def moments(result: QuadratureResult, k: int) -> tuple[float, float]:
  """(estimate, std_error) of the k-th spectral moment (1/d) tr(A^k) = (1/d) sum_i lambda_i^k.

  Per probe sum_j w_j theta_j^k (exact for v^T A^k v when k <= 2 num_steps - 1); mean over probes and
  sample std / sqrt(num_probes) (NaN with one probe).
  """
  k = check_count("k", k, 0)
  per_probe = np.sum(result.weights * result.nodes ** k, axis=1)
  n = len(per_probe)
  std_error = float(np.std(per_probe, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
  return float(per_probe.mean()), std_error
