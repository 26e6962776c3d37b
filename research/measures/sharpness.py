"""Sharpness of a minimum: how much the loss rises under bounded or random weight perturbations.

With L(w) the mean loss over the data and a scale vector c (c = 1 plain; c = |w| adaptive, so that the
measure is invariant to rescalings that leave the function unchanged, Kwon et al. 2021 "ASAM",
arXiv:2102.11600; Andriushchenko et al. 2023 "A modern look at the relationship between sharpness and
generalization", arXiv:2302.07011):

- worst-case (SAM-style, Foret et al. 2021, arXiv:2010.01412):
  S_max(rho) = max_{||u||_p <= rho} L(w + c * u) - L(w), p in {2, inf}.
  m-sharpness (Andriushchenko et al. 2023, eq. 2): the data cut into batches B of m examples, each
  maximized on its own, S = mean_B [max_u L_B(w + c * u) - L_B(w)].
- average-case: S_avg(sigma) = E_{z ~ N(0, I)} L(w + sigma c * z) - L(w): sigma is the standard
  deviation of each coordinate of the perturbation (not a radius: the perturbation's norm is about
  sigma sqrt(d)). On a quadratic 1/2 w^T A w at its minimum, S_avg = sigma^2 tr(A) / 2 for c = 1, while
  S_max (p = 2) = rho^2 lambda_max(A) / 2.
  Antithetic pairs: each sample is (L(w + d) + L(w - d)) / 2 - L(w), which removes the odd terms of
  the Taylor expansion; the standard error is that of the pair samples.
- epsilon-sharpness (Keskar et al. 2017, "On large-batch training ...", arXiv:1609.04836, Metric 2.1):
  phi = 100 (max_{y in C} L(w + A y) - L(w)) / (1 + L(w)), over the box
  C = {y : |y_i| <= eps (|(A^+ w)_i| + 1)}, in the full space (A = I) or a random p-dimensional
  subspace (A a (d, p) Gaussian matrix, A^+ its pseudo-inverse). The box is the l-inf ball of radius
  eps with c = |A^+ w| + 1, so it is solved by the same ascent.

The maxima are found by projected gradient ascent (normalized gradient steps for l2, sign steps for
l-inf, as in PGD; step-size control as in Auto-PGD, Croce & Hein 2020, arXiv:2003.01690, simplified):
from a random start in the ball (a start at the minimum stalls: the gradient is zero there) it steps
from the best point so far with step size eta (initially 2 rho), accepts a step only if it raises the
loss, and halves eta when it does not. It stops after `steps` steps, when eta < 1e-3 rho, or when an
accepted step gains less than `tol` times the sharpness found. Each start ends at (or on its way to)
a local maximum, so the result is a lower bound of the true maximum, and `num_restarts` random starts
(default 10) take the best. What holds for p = 2 on a quadratic L(w + u) - L(w) = g^T u + 1/2 u^T A u
(A positive semi-definite; tests/test_measures.py checks both against the closed form):
- at its minimum (g = 0) the only local maxima are rho times the top eigenvectors, all global, so one
  start is exact: rho^2 lambda_max(A) / 2;
- off its minimum (g != 0) the sphere can hold a second, lower local maximum (the trust-region
  subproblem has at most one local non-global solution, Martinez 1994, SIAM J. Optim. 4(1)), where
  some random starts stop, so a single start can be low and restarts are needed;
  the global maximum is u = (t I - A)^-1 g with t > lambda_max(A) the root of ||u|| = rho.
Every record keeps the per-restart values (`restart_values`, sharpness units), the spread between the
best and the median restart (`restart_spread`; 0 when the restarts agreed) and the number of restarts
within 1e-3 (relative) of the best (`restarts_at_best`), and per restart the last accepted gain and the
final step size as the solver's error indicators.

Why our own: no JAX library computes these; optax's SAM (`optax.contrib.sam`) takes one ascent step
for training, not a converged maximum with restarts.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from research.measures.common import (
  Measurement,
  as_chunks,
  batches_of,
  check_choice,
  check_count,
  check_positive,
  chunk_loss,
  data_settings,
  flatten,
  mean_over,
  std_error,
)

NORMS = ("l2", "linf")


def _scale(flat: jax.Array, adaptive: bool) -> jax.Array:
  return jnp.abs(flat) if adaptive else jnp.ones_like(flat)


def _project(u: jax.Array, rho: float, norm: str) -> jax.Array:
  if norm == "linf":
    return jnp.clip(u, -rho, rho)
  n = jnp.linalg.norm(u)
  return jnp.where(n > rho, u * (rho / jnp.maximum(n, 1e-30)), u)


def _random_start(key: jax.Array, size: int, rho: float, norm: str, dtype) -> jax.Array:
  """Uniform in the l-inf box, or uniform in the l2 ball (a Gaussian direction, radius rho U^(1/d))."""
  if norm == "linf":
    return jax.random.uniform(key, (size,), dtype, -rho, rho)
  k1, k2 = jax.random.split(key)
  z = jax.random.normal(k1, (size,), dtype)
  r = rho * jax.random.uniform(k2, (), dtype) ** (1.0 / size)
  return z * (r / jnp.linalg.norm(z))


def _ascent_direction(g: jax.Array, norm: str) -> jax.Array:
  if norm == "linf":
    return jnp.sign(g)
  return g / jnp.maximum(jnp.linalg.norm(g), 1e-30)


@functools.partial(jax.jit, static_argnames=("norm",))
def _step(u, g, eta, rho, *, norm: str):
  return _project(u + eta * _ascent_direction(g, norm), rho, norm)


def maximize(value_and_grad: Callable, size: int, dtype, key: jax.Array, *, rho: float, norm: str,
             steps: int, num_restarts: int = 1, tol: float = 1e-7, base: float = 0.0) -> dict:
  """max over ||u||_p <= rho of f(u) by projected ascent with step halving (module docstring).

  value_and_grad(u) -> (f(u), df/du); `base` is subtracted when judging relative gains.
  Returns {"value", "u", "restarts": [per-restart dicts with value, steps, last_gain, step_size,
  converged]}.
  """
  step = lambda u, g, eta: _step(u, g, eta, rho, norm=norm)
  best_overall, best_u, restarts = -np.inf, None, []
  for r in range(num_restarts):
    u = _random_start(jax.random.fold_in(key, r), size, rho, norm, dtype)
    f, g = value_and_grad(u)
    f = float(f)
    eta, last_gain, converged, taken = 2.0 * rho, float("nan"), False, 0
    while taken < steps:
      taken += 1
      cand = step(u, g, eta)
      fc, gc = value_and_grad(cand)
      fc = float(fc)
      if fc > f:
        last_gain = fc - f
        u, f, g = cand, fc, gc
        if last_gain <= tol * max(abs(f - base), 1e-30):
          converged = True
          break
      else:
        eta /= 2.0
        if eta < 1e-3 * rho:
          converged = True
          break
    restarts.append({"value": f, "steps": taken, "last_gain": last_gain, "step_size": eta,
                     "converged": converged})
    if f > best_overall:
      best_overall, best_u = f, u
  return {"value": best_overall, "u": best_u, "restarts": restarts}


def restart_summary(values: list[float]) -> dict:
  """How far the restarts agreed, from their per-restart values (any units, e.g. sharpness).

  {"restart_values", "restart_spread": best - median restart (0 when they agreed), "restarts_at_best":
  how many are within 1e-3 (relative) of the best}.
  """
  v = np.asarray(values, np.float64)
  best = float(v.max())
  return {"restart_values": [float(x) for x in v], "restart_spread": best - float(np.median(v)),
          "restarts_at_best": int(np.sum(v >= best - 1e-3 * abs(best)))}


def _perturbed(loss_fn: Callable, layout, args, chunk):
  """(L(w + scale * u), dL/du) on one chunk, args = (flat, rest, scale, u)."""
  flat, rest, scale, u = args
  return jax.value_and_grad(lambda v: loss_fn(layout.params_at(flat + scale * v, rest), chunk))(u)


def _perturbed_in_subspace(loss_fn: Callable, layout, args, chunk):
  """(L(w + basis (box * u)), dL/du) on one chunk, args = (flat, rest, box, basis, u)."""
  flat, rest, box, basis, u = args
  return jax.value_and_grad(lambda v: loss_fn(layout.params_at(flat + basis @ (box * v), rest), chunk))(u)


def worst_case_sharpness(loss_fn: Callable, params, data, key: jax.Array, *, rho: float, norm: str = "l2",
                         adaptive: bool = False, m: int | None = None, steps: int = 20,
                         num_restarts: int = 10, tol: float = 1e-7, param_filter=None,
                         info: dict | None = None) -> Measurement:
  """max_{||u||_p <= rho} L(w + c * u) - L(w), c = 1 or |w| (adaptive); m-sharpness if `m` is given.

  loss_fn(params, batch) -> mean loss; data: batch dict or Chunks; key: random starts (restart r of
  batch b uses fold_in(fold_in(key, b), r)). With `m`, the real examples are cut into consecutive
  batches of m (the last one may be smaller) and the value is the example-weighted mean of the
  per-batch sharpness, with the standard error over batches; without `m` it is one maximization over
  all the data (std_error NaN; the solver's last gain and step size are in `details`). The value is the
  best of `num_restarts` starts, a lower bound (module docstring); `details["restart_spread"]` is the
  best minus the median restart (with `m`: the example-weighted mean over batches), 0 when they agreed.
  param_filter: a predicate on parameter path names (as in research.curvature); the others stay fixed.
  """
  rho = check_positive("rho", rho)
  norm = check_choice("norm", norm, NORMS)
  steps = check_count("steps", steps)
  num_restarts = check_count("num_restarts", num_restarts)
  chunks = as_chunks(data)
  if m is not None:
    m = check_count("m", m)
  fp = flatten(params, param_filter)
  scale = _scale(fp.flat, adaptive)
  value_and_grad = mean_over(_perturbed, loss_fn, fp.layout)
  loss = mean_over(chunk_loss, loss_fn, fp.layout)
  groups = [chunks] if m is None else batches_of(chunks, m)
  values, counts, per_batch = [], [], []
  for b, group in enumerate(groups):
    base = float(loss((fp.flat, fp.rest), group))
    out = maximize(lambda u, g=group: value_and_grad((fp.flat, fp.rest, scale, u), g), fp.size, fp.flat.dtype,
                   jax.random.fold_in(key, b), rho=rho, norm=norm, steps=steps, num_restarts=num_restarts,
                   tol=tol, base=base)
    values.append(out["value"] - base)
    counts.append(group.num_examples)
    per_batch.append({"base_loss": base, "sharpness": out["value"] - base, "restarts": out["restarts"]}
                     | restart_summary([r["value"] - base for r in out["restarts"]]))
  value = float(np.average(values, weights=counts))
  settings = data_settings(chunks, key, rho=rho, norm=norm, adaptive=adaptive, m=m, steps=steps,
                           num_restarts=num_restarts, tol=tol, num_params=fp.size) | (info or {})
  details = per_batch[0]
  if m is not None:
    spread = float(np.average([b["restart_spread"] for b in per_batch], weights=counts))
    details = {"batches": per_batch, "restart_spread": spread}
  name = f"worst_case_{'adaptive_' if adaptive else ''}{norm}"
  return Measurement(name, value, std_error(values) if m is not None else float("nan"), settings, details)


@jax.jit
def _gaussian(key: jax.Array, std: jax.Array) -> jax.Array:
  return std * jax.random.normal(key, std.shape, std.dtype)


def average_sharpness(loss_fn: Callable, params, data, key: jax.Array, *, sigma: float,
                      adaptive: bool = False, num_pairs: int = 32, param_filter=None,
                      info: dict | None = None) -> Measurement:
  """E_{z ~ N(0, I)} L(w + sigma c * z) - L(w) by `num_pairs` antithetic pairs (2 losses each).

  sigma is the per-coordinate standard deviation (times |w_i| when adaptive), not a radius. Pair j uses
  z_j = normal(fold_in(key, j)), so two calls with the same key see the same noise.
  Returns the mean over pairs and its standard error (sample std / sqrt(num_pairs)).
  """
  sigma = check_positive("sigma", sigma)
  num_pairs = check_count("num_pairs", num_pairs)
  chunks = as_chunks(data)
  fp = flatten(params, param_filter)
  scale = _scale(fp.flat, adaptive)
  loss = mean_over(chunk_loss, loss_fn, fp.layout)
  base = float(loss((fp.flat, fp.rest), chunks))
  samples = []
  for j in range(num_pairs):
    d = _gaussian(jax.random.fold_in(key, j), sigma * scale)
    plus, minus = loss((fp.flat + d, fp.rest), chunks), loss((fp.flat - d, fp.rest), chunks)
    samples.append(0.5 * (float(plus) + float(minus)) - base)
  settings = data_settings(chunks, key, sigma=sigma, adaptive=adaptive, num_pairs=num_pairs,
                           sampling="antithetic", num_params=fp.size) | (info or {})
  name = f"average_{'adaptive' if adaptive else 'plain'}"
  return Measurement(name, float(np.mean(samples)), std_error(samples), settings,
                     {"base_loss": base, "samples": samples})


def epsilon_sharpness(loss_fn: Callable, params, data, key: jax.Array, *, epsilon: float = 1e-3,
                      subspace_dim: int | None = None, steps: int = 20, num_restarts: int = 10,
                      tol: float = 1e-7, param_filter=None, info: dict | None = None) -> Measurement:
  """Keskar et al.'s phi = 100 (max_{y in C} L(w + A y) - L(w)) / (1 + L(w)) (module docstring).

  subspace_dim p: None for the full space (A = I), else A is a (d, p) standard Gaussian matrix drawn
  from fold_in(key, 2**31 - 1) ((d, p) floats of memory). Each of the `num_restarts` ascents starts at a
  random point of the box; `details["restart_spread"]` is the best minus the median restart, in phi units.
  """
  epsilon = check_positive("epsilon", epsilon)
  steps = check_count("steps", steps)
  num_restarts = check_count("num_restarts", num_restarts)
  chunks = as_chunks(data)
  fp = flatten(params, param_filter)
  if subspace_dim is None:
    basis = None
    box = jnp.abs(fp.flat) + 1.0
  else:
    p = check_count("subspace_dim", subspace_dim)
    basis = jax.random.normal(jax.random.fold_in(key, 2**31 - 1), (fp.size, p), fp.flat.dtype)
    box = jnp.abs(jnp.linalg.pinv(basis) @ fp.flat) + 1.0

  base = float(mean_over(chunk_loss, loss_fn, fp.layout)((fp.flat, fp.rest), chunks))
  if basis is None:
    run = mean_over(_perturbed, loss_fn, fp.layout)
    value_and_grad = lambda u: run((fp.flat, fp.rest, box, u), chunks)
  else:
    run = mean_over(_perturbed_in_subspace, loss_fn, fp.layout)
    value_and_grad = lambda u: run((fp.flat, fp.rest, box, basis, u), chunks)
  size = fp.size if basis is None else basis.shape[1]
  out = maximize(value_and_grad, size, fp.flat.dtype, key, rho=epsilon,
                 norm="linf", steps=steps, num_restarts=num_restarts, tol=tol, base=base)
  value = 100.0 * (out["value"] - base) / (1.0 + base)
  settings = data_settings(chunks, key, epsilon=epsilon, subspace_dim=subspace_dim, steps=steps,
                           num_restarts=num_restarts, tol=tol, num_params=fp.size) | (info or {})
  phi = [100.0 * (r["value"] - base) / (1.0 + base) for r in out["restarts"]]
  return Measurement("epsilon_sharpness", value, float("nan"), settings,
                     {"base_loss": base, "max_loss": out["value"], "restarts": out["restarts"]}
                     | restart_summary(phi))
