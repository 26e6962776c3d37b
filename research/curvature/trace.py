"""Stochastic trace and diagonal estimators of a symmetric operator, each with its own standard error.

- `hutchinson` (Girard 1989; Hutchinson 1990): tr(A) ~ mean_i z_i^T A z_i over Rademacher z_i.
- `hutch_plus_plus` (Meyer, Musco, Musco & Woodruff 2021, "Hutch++", arXiv:2010.09649): a third of the
  products find Q = orth(A S), a third give tr(Q^T A Q) exactly, the last third run Hutchinson on the
  deflated (I - QQ^T) A (I - QQ^T).
- `xtrace` (Epperly, Tropp & Webber 2024, "XTrace: making the most of every sample in stochastic trace
  estimation", SIMAX 45(1); arXiv:2301.07825): every test vector serves both the low-rank part and the
  Hutchinson part, through leave-one-out low-rank approximations; the spread of the m leave-one-out
  estimates is its error estimate.
- `diagonal` (Bekas, Kokiopoulou & Saad 2007, Appl. Numer. Math. 57(11)): diag(A) ~ mean_i z_i * (A z_i);
  `block_traces` sums it over index segments (per-layer traces when the segments are parameter blocks,
  e.g. from `operators.parameter_blocks`).

Every estimate counts its products and copies `op.info`, the method and the key into its `info`.
Probe i is drawn from `split(key, n)[i]`, so results do not depend on `batch` (the number of probes
generated at once, a memory knob). Small dense algebra (k x k matrices) runs in float64 NumPy.

`op.matvec` is only ever called from Python, one (size,) vector at a time (`_Products`), never traced
into a jit, vmap, map or loop of ours: on XLA:CPU a convolutional model's product inside a loop
construct runs about 10x slower than as its own call (simple_cnn, 512 examples: 10-11 s against 1.0 s),
and a vmapped product multiplies the activation memory of a dataset operator by the batch size. Probe
generation, orthogonalization and accumulation are small jitted functions of fixed shapes around it.
Each product is checked: a non-finite one stops the estimator with a `UserError`.

Why our own: matfree (the library STYLE.md 16 points to) has Hutchinson-type estimators but no XTrace,
no per-entry standard errors of the diagonal, and no product counts or records; these are a few dozen
lines each on top of `LinearOperator`.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from research.core.errors import UserError
from research.curvature.linear_operator import LinearOperator


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
  """A trace estimate in the operator's units, its standard error, and how it was obtained."""
  estimate: float
  std_error: float  # NaN when a single probe leaves no sample variance
  num_products: int
  info: dict

  def to_dict(self) -> dict:
    return {"estimate": float(self.estimate), "std_error": float(self.std_error),
            "num_products": int(self.num_products), "info": to_jsonable(self.info)}


@dataclasses.dataclass(frozen=True)
class DiagonalEstimate:
  """diag(A) estimate (size,) float64 with per-entry standard errors (size,)."""
  estimate: np.ndarray
  std_error: np.ndarray
  num_products: int
  info: dict

  def to_dict(self) -> dict:
    return {"estimate": np.asarray(self.estimate).tolist(), "std_error": np.asarray(self.std_error).tolist(),
            "num_products": int(self.num_products), "info": to_jsonable(self.info)}


def to_jsonable(value):
  """`value` with NumPy / JAX scalars and arrays turned into Python numbers and lists."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return np.asarray(value).tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def key_info(key: jax.Array) -> dict:
  """{"seed": last word of the key data (the seed of `key(seed)`), "key": all words} for records."""
  data = np.asarray(jax.random.key_data(key)).ravel()
  return {"seed": int(data[-1]), "key": [int(x) for x in data]}


def check_count(name: str, value, minimum: int = 1) -> int:
  """`value` as an int, or a UserError when it is not an integer >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def _std_error(samples: np.ndarray) -> float:
  """Sample standard deviation (ddof=1) / sqrt(n); NaN for n = 1."""
  n = len(samples)
  return float(np.std(samples, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def _accumulation_dtype(dtype) -> np.dtype:
  """At least float32, whatever the product dtype (bfloat16 sums lose too much)."""
  return np.dtype(jnp.promote_types(dtype, jnp.float32))


class _Products:
  """`op.matvec` called from Python on one (size,) vector at a time: counted, checked for shape and for
  non-finite values (a `UserError` naming the product, rather than NaN propagating into the estimate)."""

  def __init__(self, op: LinearOperator, method: str):
    self.op, self.method, self.count = op, method, 0
    self.dtype = np.dtype(op.dtype)

  def __call__(self, v: jax.Array) -> jax.Array:
    out = self.op.matvec(jnp.asarray(v, self.dtype))
    self.count += 1
    if jnp.shape(out) != (self.op.size,):
      raise UserError(f"{self.method}: the operator's product {self.count} has shape {jnp.shape(out)}, "
                      f"expected ({self.op.size},)")
    if not bool(_all_finite(out)):
      raise UserError(f"{self.method}: the operator's product {self.count} is not finite (NaN or inf): "
                      "check the parameters and data (a diverged checkpoint?)")
    return out


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
  return jnp.isfinite(x).all()


@functools.partial(jax.jit, static_argnums=(1, 2))
def _rademacher(keys: jax.Array, size: int, dtype) -> jax.Array:
  """(b, size) signs, row i from keys[i]."""
  return jax.vmap(lambda k: jax.random.rademacher(k, (size,), dtype))(keys)


@jax.jit
def _quadratic_form(z, az):
  """z^T A z in the accumulation dtype of z (the operator dtype)."""
  acc = _accumulation_dtype(z.dtype)
  return jnp.sum(z.astype(acc) * az.astype(acc))


@jax.jit
def _diagonal_batch(z, az):
  """Mean (size,) and summed squared deviations (size,) of z_i * (A z_i) over the rows of z (b, size)
  and the products az (a tuple of b (size,) arrays)."""
  acc = _accumulation_dtype(z.dtype)
  samples = z.astype(acc) * jnp.stack(az).astype(acc)
  mean = samples.mean(axis=0)
  return mean, jnp.sum((samples - mean) ** 2, axis=0)


@functools.partial(jax.jit, static_argnums=(2,))
def _row(x: jax.Array, j, dtype) -> jax.Array:
  """x[j] cast to `dtype` (j traced: one compile per shape)."""
  return x[j].astype(dtype)


def _apply_rows(products: _Products, rows: jax.Array) -> tuple:
  """(A x_j for the rows x_j of `rows` (k, size)), each product on x_j cast to the operator dtype, as a
  tuple of the (size,) products as op.matvec returns them (the jitted consumer stacks and casts them)."""
  return tuple(products(_row(rows, j, products.dtype)) for j in range(rows.shape[0]))


def _info(op: LinearOperator, method: str, key: jax.Array, **extra) -> dict:
  return dict(op.info) | {"method": method} | key_info(key) | extra


def hutchinson(op: LinearOperator, key: jax.Array, num_probes: int, *, batch: int = 32) -> TraceEstimate:
  """tr(A) ~ (1/n) sum_i z_i^T A z_i, Rademacher z_i (Hutchinson 1990); n products.

  std_error = sample std / sqrt(n). For Rademacher probes the variance of one sample is
  2 (||A||_F^2 - sum_i A_ii^2). batch: probes generated at once ((batch, size) memory); the products
  are one at a time whatever it is.
  """
  num_probes = check_count("num_probes", num_probes)
  batch = check_count("batch", batch)
  dtype = np.dtype(op.dtype)
  products = _Products(op, "hutchinson")
  keys = jax.random.split(key, num_probes)
  samples = []
  for i in range(0, num_probes, batch):
    z = _rademacher(keys[i:i + batch], op.size, dtype)
    for j in range(z.shape[0]):
      zj = _row(z, j, dtype)
      samples.append(_quadratic_form(zj, products(zj)))
  samples = np.asarray(jnp.stack(samples), np.float64)
  info = _info(op, "hutchinson", key, probe="rademacher", num_probes=num_probes)
  return TraceEstimate(float(samples.mean()), _std_error(samples), products.count, info)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _hutch_plus_plus_signs(key, size, acc, num_columns):
  """The Rademacher S then G of Hutch++, (size, k + l) drawn in one call, as rows (k + l, size)."""
  return jax.random.rademacher(key, (size, num_columns), acc).T


@functools.partial(jax.jit, static_argnums=(1,))
def _orthonormal_rows(y_rows, acc):
  """Q^T (k, size) of Q, R = qr(Y) for Y = stack(y_rows).T (size, k) in the accumulation dtype."""
  q, _ = jnp.linalg.qr(jnp.stack(y_rows).T.astype(acc))
  return q.T


@functools.partial(jax.jit, static_argnums=(3,))
def _hutch_plus_plus_deflate(q_rows, aq_rows, signs, k):
  """tr(Q^T A Q) and the projected probes g' = (I - QQ^T) g as rows (l, size)."""
  q = q_rows.T
  low_rank = jnp.sum(q * jnp.stack(aq_rows).T.astype(q.dtype))
  g = signs[k:].T
  g = g - q @ (q.T @ g)
  return low_rank, g.T


@jax.jit
def _hutch_plus_plus_samples(g_rows, ag_rows):
  """The l samples g'^T A g'."""
  g = g_rows.T
  return jnp.sum(g * jnp.stack(ag_rows).T.astype(g.dtype), axis=0)


def hutch_plus_plus(op: LinearOperator, key: jax.Array, num_products: int, *,
                    batch: int = 32) -> TraceEstimate:
  """Hutch++ (Meyer et al. 2021, Algorithm 1) with `num_products` products.

  k = num_products // 3 Rademacher vectors S give Q = orth(A S) (k products) and tr(Q^T A Q) (k
  products); the remaining l = num_products - 2k Rademacher g_i, projected to g_i' = (I - QQ^T) g_i,
  give the Hutchinson estimate of tr((I - QQ^T) A (I - QQ^T)) (l products). Unbiased for any Q.
  std_error is that of the Hutchinson part (the low-rank part is exact given Q); NaN when l = 1.
  batch: accepted for compatibility and checked, but unused: S and G are drawn in one call (so the
  probes do not depend on it) and the products are one at a time.
  """
  num_products = check_count("num_products", num_products, 3)
  check_count("batch", batch)
  k = num_products // 3
  num_hutchinson = num_products - 2 * k
  if k > op.size:
    raise UserError(f"hutch_plus_plus: num_products // 3 = {k} exceeds the operator size {op.size}")
  products = _Products(op, "hutch_plus_plus")
  acc = _accumulation_dtype(op.dtype)
  signs = _hutch_plus_plus_signs(key, op.size, acc, k + num_hutchinson)
  q_rows = _orthonormal_rows(_apply_rows(products, signs[:k]), acc)
  low_rank, g_rows = _hutch_plus_plus_deflate(q_rows, _apply_rows(products, q_rows), signs, k)
  del signs
  samples = np.asarray(_hutch_plus_plus_samples(g_rows, _apply_rows(products, g_rows)), np.float64)
  info = _info(op, "hutch++", key, probe="rademacher", sketch_size=k, num_probes=num_hutchinson)
  return TraceEstimate(float(low_rank) + float(samples.mean()), _std_error(samples), products.count, info)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _xtrace_test_vectors(key, size, acc, m):
  """Omega^T (m, size): m Gaussian vectors scaled to norm sqrt(size)."""
  omega = jax.random.normal(key, (size, m), acc)
  omega = jnp.sqrt(size) * omega / jnp.linalg.norm(omega, axis=0)
  return omega.T


@functools.partial(jax.jit, static_argnums=(1,))
def _xtrace_qr(y_rows, acc):
  """Q^T (m, size) and R (m, m) of Y = A Omega = Q R, and Y^T, in the accumulation dtype."""
  y = jnp.stack(y_rows).T.astype(acc)
  q, r = jnp.linalg.qr(y)
  return q.T, r, y.T


@jax.jit
def _xtrace_sketch(omega_rows, y_rows, q_rows, r, z_rows):
  """H = Q^T A Q, W = Q^T Omega, T = (A Q)^T Omega, R, omega_i^T A omega_i, ||omega_i||^2."""
  omega, y, q = omega_rows.T, y_rows.T, q_rows.T
  z = jnp.stack(z_rows).T.astype(q.dtype)
  return (q.T @ z, q.T @ omega, z.T @ omega, r, jnp.sum(omega * y, axis=0), jnp.sum(omega * omega, axis=0))


def xtrace(op: LinearOperator, key: jax.Array, num_products: int, *, batch: int = 32) -> TraceEstimate:
  """XTrace (Epperly, Tropp & Webber 2024, Sec. 2) with m = num_products // 2 test vectors.

  Test vectors omega_i uniform on the sphere of radius sqrt(size) (the paper's "improved" variant).
  Y = A Omega = Q R (m products), Z = A Q (m products). Leave-one-out estimate i deflates with the
  projector P_i onto span(A Omega_{-i}) = span(Q R_{-i}) = Q s_i^perp, where s_i is the unit vector
  orthogonal to every column of R but the i-th (the normalized i-th column of R^{-T}):
    t_i = tr(P_i A) + rho_i^2 * omega_i^T (I - P_i) A (I - P_i) omega_i,
  and rho_i rescales omega_i so that ||(I - P_i) omega_i||^2 = size - m + 1 (the dimension it lives in).
  Estimate = mean_i t_i, std_error = std(t_i) / sqrt(m). All of it follows from H = Q^T Z, W = Q^T Omega,
  T = Z^T Omega, R and omega_i^T A omega_i, in O(m^3) float64 work (checked against the explicit
  leave-one-out QR to 1e-13).
  If A Omega is numerically rank deficient (rank A < m), range(A) lies in span(Q) and tr(Q^T A Q) is the
  trace itself: that is returned with std_error 0 and info["exact_range"] = True.
  batch: accepted for compatibility and checked, but unused: Omega is drawn in one call and the
  products are one at a time.
  """
  num_products = check_count("num_products", num_products, 4)
  check_count("batch", batch)
  d = op.size
  m = num_products // 2
  if m > d:
    raise UserError(f"xtrace: num_products // 2 = {m} exceeds the operator size {d}")
  products = _Products(op, "xtrace")
  acc = _accumulation_dtype(op.dtype)
  omega_rows = _xtrace_test_vectors(key, d, acc, m)
  q_rows, r, y_rows = _xtrace_qr(_apply_rows(products, omega_rows), acc)
  sketch = _xtrace_sketch(omega_rows, y_rows, q_rows, r, _apply_rows(products, q_rows))
  h, w, t, r, omega_a_omega, omega_sq = (np.asarray(a, np.float64) for a in sketch)
  info = _info(op, "xtrace", key, probe="sphere", num_vectors=m)

  diag_r = np.abs(np.diag(r))
  if diag_r.min() <= m * np.finfo(acc).eps * max(diag_r.max(), 1e-300):
    return TraceEstimate(float(np.trace(h)), 0.0, products.count, info | {"exact_range": True})
  # R^T S = I: column i of S = R^{-T} is orthogonal to every column R_j of R with j != i.
  s = scipy.linalg.solve_triangular(r, np.eye(m), trans="T")
  s = s / np.linalg.norm(s, axis=0)
  s_w = np.sum(s * w, axis=0)  # s_i^T W_i
  c = w - s * s_w  # Q-coordinates of P_i omega_i: (I - s_i s_i^T) W_i, column i
  low_rank = np.trace(h) - np.sum(s * (h @ s), axis=0)  # tr(P_i A) = tr(H) - s_i^T H s_i
  deflated = (omega_a_omega - np.sum(c * r, axis=0) - np.sum(c * t, axis=0)
              + np.sum(c * (h @ c), axis=0))  # omega_i^T (I - P_i) A (I - P_i) omega_i
  rho_sq = (d - m + 1) / (omega_sq - np.sum(w * w, axis=0) + s_w ** 2)
  estimates = low_rank + rho_sq * deflated
  return TraceEstimate(float(estimates.mean()), _std_error(estimates), products.count,
                       info | {"exact_range": False})


def diagonal(op: LinearOperator, key: jax.Array, num_probes: int, *, batch: int = 32) -> DiagonalEstimate:
  """diag(A) ~ (1/n) sum_i z_i * (A z_i), Rademacher z_i (Bekas, Kokiopoulou & Saad 2007); n products.

  Per-entry std_error = sample std / sqrt(n) (NaN for n = 1); the variance of entry j for one probe is
  sum_{k != j} A_jk^2. batch: probes generated (and their products kept) at once, then merged into
  two (size,) accumulators: (2 batch + 2, size) memory, not (n, size); products are one at a time.
  """
  num_probes = check_count("num_probes", num_probes)
  batch = check_count("batch", batch)
  dtype = np.dtype(op.dtype)
  products = _Products(op, "diagonal")
  keys = jax.random.split(key, num_probes)
  count, mean, m2 = 0, np.zeros(op.size), np.zeros(op.size)
  for i in range(0, num_probes, batch):
    z = _rademacher(keys[i:i + batch], op.size, dtype)
    b_mean, b_m2 = (np.asarray(a, np.float64) for a in _diagonal_batch(z, _apply_rows(products, z)))
    b = z.shape[0]
    total = count + b
    delta = b_mean - mean  # Chan et al. (1979) pairwise update of mean and squared deviations
    mean = mean + delta * (b / total)
    m2 = m2 + b_m2 + delta ** 2 * (count * b / total)
    count = total
  if num_probes > 1:
    std_error = np.sqrt(m2 / (num_probes - 1) / num_probes)
  else:
    std_error = np.full(op.size, np.nan)
  info = _info(op, "diagonal", key, probe="rademacher", num_probes=num_probes)
  return DiagonalEstimate(mean, std_error, products.count, info)


def _segments(sizes_or_segments, size: int) -> list[tuple[str, int, int]]:
  """[(name, start, stop)] from such triples or from consecutive block sizes (named "0", "1", ...)."""
  items = list(sizes_or_segments)
  if items and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in items):
    stops = np.cumsum(items)
    items = [(str(i), int(stop - n), int(stop)) for i, (n, stop) in enumerate(zip(items, stops))]
  segments = []
  for item in items:
    if not (isinstance(item, Sequence) and len(item) == 3):
      raise UserError(f"a segment is (name, start, stop) or a block size, got {item!r}")
    name, start, stop = item
    if not 0 <= start < stop <= size:
      raise UserError(f"segment {name!r} = [{start}, {stop}) is empty or outside [0, {size})")
    segments.append((str(name), int(start), int(stop)))
  names = [s[0] for s in segments]
  if len(set(names)) != len(names):
    raise UserError(f"segment names repeat: {names}")
  return segments


def block_traces(diag: DiagonalEstimate, sizes_or_segments: Sequence[tuple[str, int, int]] | Sequence[int]
                 ) -> dict[str, TraceEstimate]:
  """{name: trace of the diagonal block [start, stop)} from a diagonal estimate.

  sizes_or_segments: [(name, start, stop)] (e.g. `operators.parameter_blocks(params)`), or block sizes
  taken consecutively from index 0. estimate = the sum of the diagonal estimate over the segment.
  std_error is an upper bound: the entries share probes and are correlated, so the block's sample
  standard error is at most the sum of the entries' ones (triangle inequality), and that sum is
  reported (info["std_error_kind"] = "upper_bound"). For the exact error, run `hutchinson` on the
  block-restricted operator v -> mask * A (mask * v).
  """
  size = len(diag.estimate)
  out = {}
  for name, start, stop in _segments(sizes_or_segments, size):
    info = dict(diag.info) | {"method": "diagonal_block_sum", "block": name, "start": start, "stop": stop,
                              "std_error_kind": "upper_bound"}
    out[name] = TraceEstimate(float(np.sum(diag.estimate[start:stop])),
                              float(np.sum(diag.std_error[start:stop])), diag.num_products, info)
  return out
