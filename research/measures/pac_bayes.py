"""PAC-Bayes flatness (Jiang, Neyshabur, Mobahi, Krishnan & Bengio 2020, "Fantastic generalization
measures and where to find them", arXiv:1912.02178, Sections 7-8 and Appendix C.3-C.4).

sigma is the largest standard deviation of Gaussian weight noise whose expected train-accuracy drop is
`target` (0.1 in the paper):
  drop(sigma) = acc(w) - E_u acc(w + u),   u ~ N(0, sigma^2 I)                       (plain)
  u_i ~ N(0, sigma'^2 w_i^2 + eps^2)                                                (magnitude-aware)
found by bisection on [0, sigma_max] (the paper's [0, 2], depth 15), stopping early once
|drop - target| < tolerance (1e-2). The expectation is a Monte-Carlo mean over `num_samples` noise
draws z_j fixed once (u_j = sigma z_j, or z_j * sqrt(sigma^2 w^2 + eps^2)), so drop(sigma) is a
deterministic function of sigma during the search; the record gives the standard error of the drop
over the samples at the final sigma.

The derived terms (Jiang et al. eqs. 47-49 and 52-54, omega parameters, m training examples):
  pacbayes.init = ||w - w0||^2 / (4 sigma^2) + log(m / sigma) + 10
  pacbayes.orig = ||w||^2 / (4 sigma^2) + log(m / sigma) + 10
  pacbayes.flatness = 1 / sigma^2
  pacbayes.mag.init = 1/4 sum_i log((eps^2 + (sigma'^2 + 1) ||w - w0||^2 / omega)
                                    / (eps^2 + sigma'^2 (w_i - w0_i)^2)) + log(m / sigma') + 10
  pacbayes.mag.orig = the same with ||w||^2 in the numerator
  pacbayes.mag.flatness = 1 / sigma'^2
Unlike the paper we do not fold BatchNorm into the preceding layers first; pass a `param_filter` to
restrict the noise and the norms to the weights you mean.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from research.core.errors import UserError
from research.measures.common import (
  Measurement,
  as_chunks,
  check_count,
  check_positive,
  data_settings,
  flatten,
  mean_over,
  std_error,
)


def _accuracy(logits_fn: Callable, layout, args, chunk):
  """Accuracy over one chunk's real examples at args = (flat, rest)."""
  flat, rest = args
  logits = logits_fn(layout.params_at(flat, rest), chunk)
  correct = (jnp.argmax(logits, -1) == chunk["label"]).astype(logits.dtype)
  mask = chunk["mask"].astype(logits.dtype)
  return (correct * mask).sum() / jnp.maximum(mask.sum(), 1.0)


@functools.partial(jax.jit, static_argnames=("magnitude_aware",))
def _noisy(flat, key, sigma, eps, *, magnitude_aware: bool):
  """w + sigma z, or w + z sqrt(sigma^2 w^2 + eps^2), z = normal(key)."""
  z = jax.random.normal(key, flat.shape, flat.dtype)
  if magnitude_aware:
    return flat + z * jnp.sqrt(sigma**2 * flat**2 + eps**2)
  return flat + sigma * z


def pac_bayes_sigma(logits_fn: Callable, params, data, key: jax.Array, *, target: float = 0.1,
                    magnitude_aware: bool = False, magnitude_eps: float = 1e-3, num_samples: int = 10,
                    sigma_max: float = 2.0, depth: int = 15, tolerance: float = 1e-2, param_filter=None,
                    info: dict | None = None) -> Measurement:
  """The largest sigma whose expected train-accuracy drop is `target` (module docstring).

  logits_fn(params, batch) -> (n, C); data: the training examples (batch dict or Chunks); noise draw
  j is normal(fold_in(key, j)) for every sigma tried. value: sigma (sigma' if magnitude_aware);
  std_error: that of sigma, the drop's standard error over the secant slope of drop(sigma) to the
  nearest other sigma evaluated. details: the drop at sigma, its standard error, every (sigma, drop)
  evaluated, why the search stopped ("tolerance" or "depth"), and `target_reached` (False when even
  sigma_max does not drop the accuracy by the target: raise sigma_max).
  """
  target = check_positive("target", target)
  sigma_max = check_positive("sigma_max", sigma_max)
  magnitude_eps = check_positive("magnitude_eps", magnitude_eps)
  tolerance = check_positive("tolerance", tolerance)
  num_samples = check_count("num_samples", num_samples)
  depth = check_count("depth", depth)
  chunks = as_chunks(data)
  fp = flatten(params, param_filter)
  accuracy = mean_over(_accuracy, logits_fn, fp.layout)
  base = float(accuracy((fp.flat, fp.rest), chunks))

  def drops(sigma):
    noisy = lambda j: _noisy(fp.flat, jax.random.fold_in(key, j), sigma, magnitude_eps,
                             magnitude_aware=magnitude_aware)
    return np.array([base - float(accuracy((noisy(j), fp.rest), chunks)) for j in range(num_samples)])

  lo, hi = 0.0, sigma_max
  history, sigma, samples, stopped = [], sigma_max, None, "depth"
  for _ in range(depth):
    sigma = 0.5 * (lo + hi)
    samples = drops(sigma)
    drop = float(samples.mean())
    history.append((sigma, drop))
    if abs(drop - target) < tolerance:
      stopped = "tolerance"
      break
    if drop > target:
      hi = sigma
    else:
      lo = sigma
  drop, drop_se = float(samples.mean()), std_error(samples)
  # sigma's error: the drop's standard error over the secant slope to the nearest other evaluated sigma.
  sigma_se = float("nan")
  others = [(abs(s - sigma), s, d) for s, d in history if s != sigma]
  if others:
    _, s1, d1 = min(others)
    if d1 != drop:
      sigma_se = drop_se * abs(s1 - sigma) / abs(d1 - drop)
  settings = data_settings(chunks, key, target=target, magnitude_aware=magnitude_aware,
                           magnitude_eps=magnitude_eps if magnitude_aware else None,
                           num_samples=num_samples, sigma_max=sigma_max, depth=depth, tolerance=tolerance,
                           num_params=fp.size, search="bisection") | (info or {})
  details = {"accuracy": base, "drop": drop, "drop_std_error": drop_se, "iterations": len(history),
             "history": history, "stopped": stopped,
             "target_reached": any(d >= target - tolerance for _, d in history)}
  name = "pac_bayes_sigma_magnitude" if magnitude_aware else "pac_bayes_sigma"
  return Measurement(name, sigma, sigma_se, settings, details)


def pac_bayes_bounds(params, init_params, *, num_examples: int, sigma: float | None = None,
                     magnitude_sigma: float | None = None, magnitude_eps: float = 1e-3,
                     param_filter=None) -> dict:
  """The derived terms of Jiang et al. (module docstring) for whichever of sigma, sigma' is given.

  params, init_params: the trained and initial parameter pytrees (same structure); num_examples: m,
  the number of training examples. Returns {"pacbayes.init": ..., ...} as floats.
  """
  m = check_count("num_examples", num_examples)
  magnitude_eps = check_positive("magnitude_eps", magnitude_eps)
  w = np.asarray(flatten(params, param_filter).flat, np.float64)
  w0 = np.asarray(flatten(init_params, param_filter).flat, np.float64)
  if w.shape != w0.shape:
    raise UserError(f"params ({w.size}) and init_params ({w0.size}) differ in size")
  dist, omega = w - w0, w.size
  out = {}
  if sigma is not None:
    s = check_positive("sigma", sigma)
    out |= {"pacbayes.init": dist @ dist / (4 * s**2) + np.log(m / s) + 10,
            "pacbayes.orig": w @ w / (4 * s**2) + np.log(m / s) + 10,
            "pacbayes.flatness": 1 / s**2}
  if magnitude_sigma is not None:
    s = check_positive("magnitude_sigma", magnitude_sigma)
    e2 = magnitude_eps**2
    denominator = e2 + s**2 * dist**2
    for name, ref in (("init", dist), ("orig", w)):
      numerator = e2 + (s**2 + 1) * (ref @ ref) / omega
      out[f"pacbayes.mag.{name}"] = 0.25 * np.log(numerator / denominator).sum() + np.log(m / s) + 10
    out["pacbayes.mag.flatness"] = 1 / s**2
  return {k: float(v) for k, v in out.items()}
