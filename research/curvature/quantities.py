"""Numbers researchers log next to the spectrum.

- `spectrum_summary`: the top-k's structure (lambda_1 / lambda_k, the position and size of its largest
  relative gap, its share of the Hutchinson trace) and lambda_min, from Lanczos results with their
  residuals and convergence flags.
- `gradient_curvature`: g^T H g / |g|^2, the curvature along the gradient (one product).
- `top_subspace_fraction`: |P_k g|^2 / |g|^2, the fraction of the gradient in the top-k eigenspace
  (Gur-Ari, Roberts & Dyer 2018, arXiv:1812.04754).
- Gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, arXiv:1812.06162, eq. 2.8),
  with Sigma the per-example gradient covariance and G the mean gradient: `gradient_noise_scale` exactly
  from per-example gradients (vmapped per chunk), `gradient_noise_scale_two_batch` with the paper's
  unbiased two-batch-size estimator (Appendix A.1).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from research.core import spectral
from research.core.errors import UserError
from research.curvature import operators
from research.curvature.lanczos import EigenResult
from research.curvature.linear_operator import LinearOperator
from research.curvature.trace import TraceEstimate


def spectrum_summary(top: EigenResult, bottom: EigenResult | None = None,
                     trace: TraceEstimate | None = None) -> dict:
  """The structure of the top-k spectrum, from Lanczos results (and a Hutchinson trace when measured).

  - `lambda_max` with its residual and convergence flag; `top_values`, `top_residual_norms`,
    `top_converged` (k,);
  - `top_converged_all`: whether every one of the top k converged; the ratios and the gap below read the
    k-th value, which an unconverged Ritz value underestimates, so they are given only when it is True;
  - k >= 2: `lambda_1_over_lambda_2`, and `lambda_1_over_lambda_k` when lambda_k > 0;
  - `top_gap_index`, `top_gap_ratio`: `research.core.spectral.largest_gap` of the top-k (1-based i of the
    largest lambda_i / lambda_{i+1}; needs 3 positive values);
  - with `trace`: `top_trace_fraction` = sum of the top-k eigenvalues / tr(H) and its standard error
    `top_trace_fraction_se` = fraction * trace_se / |trace| (delta method; the top-k taken as exact, their
    residuals being far smaller). tr(H) counts negative eigenvalues too, so the fraction can exceed 1
    and is not the share of positive curvature; `trace`, `trace_se` are copied next to it;
  - with `bottom`: `lambda_min` and |lambda_min| / lambda_max.
  """
  values = np.asarray(top.values, np.float64)
  out = {"lambda_max": float(values[0]), "lambda_max_residual": float(top.residual_norms[0]),
         "lambda_max_converged": bool(top.converged[0]), "k": len(values), "top_values": values.tolist(),
         "top_residual_norms": np.asarray(top.residual_norms, np.float64).tolist(),
         "top_converged": [bool(c) for c in top.converged],
         "top_converged_all": bool(np.all(top.converged))}
  if len(values) > 1 and out["top_converged_all"]:
    out["lambda_1_over_lambda_2"] = float(values[0] / values[1])
    if values[-1] > 0:
      out["lambda_1_over_lambda_k"] = float(values[0] / values[-1])
  index, ratio = spectral.largest_gap(values) if out["top_converged_all"] else (None, float("nan"))
  if index is not None:
    out["top_gap_index"], out["top_gap_ratio"] = index, ratio
  if trace is not None and trace.estimate != 0:
    fraction = float(values.sum() / trace.estimate)
    out |= {"top_trace_fraction": fraction,
            "top_trace_fraction_se": abs(fraction) * float(trace.std_error) / abs(float(trace.estimate)),
            "trace": float(trace.estimate), "trace_se": float(trace.std_error)}
  if bottom is not None:
    out["lambda_min"] = float(bottom.values[0])
    out["lambda_min_converged"] = bool(bottom.converged[0])
    out["abs_lambda_min_over_lambda_max"] = float(abs(bottom.values[0]) / values[0])
  return out


def gradient_curvature(op: LinearOperator, gradient) -> float:
  """g^T A g / |g|^2."""
  g = jnp.asarray(gradient, op.dtype)
  return float(g @ op.matvec(g) / (g @ g))


def top_subspace_fraction(gradient, vectors) -> float:
  """|V^T g|^2 / |g|^2 for orthonormal rows `vectors` (k, size)."""
  g = np.asarray(gradient, np.float64)
  v = np.asarray(vectors, np.float64)
  return float(((v @ g) ** 2).sum() / (g @ g))


def _per_example_sq_norms(loss_fn, params, chunks: operators.Chunks, param_filter=None):
  """(mean_i |g_i|^2, G) over the real examples, G the flattened mean gradient."""
  chosen, others, treedef, keep, _ = operators._split(params, param_filter)
  fn = operators._product_fn(_chunk_gradient_sums, loss_fn, None, treedef, keep)
  out = operators._chunk_mean(fn, chunks)((chosen, others, ravel_pytree(chosen)[0], None), chunks.arrays)
  return out["sq"], ravel_pytree(out["grad"])[0]


def _chunk_gradient_sums(loss_fn, _, merge, chosen, v, chunk, index, aux):
  """{"sq": mean_i |g_i|^2, "grad": mean_i g_i} over the chunk's real examples (vmapped per example)."""

  def single(sel, image, label):
    return loss_fn(merge(sel), {"image": image[None], "label": label[None],
                                "mask": jnp.ones((1,), jnp.float32)})

  grads = jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(chosen, chunk["image"], chunk["label"])
  sq = sum((g.reshape(g.shape[0], -1) ** 2).sum(1) for g in jax.tree.leaves(grads))
  mask = chunk["mask"].astype(sq.dtype)
  count = jnp.maximum(mask.sum(), 1.0)
  mean_grad = jax.tree.map(lambda g: jnp.tensordot(mask, g, axes=1) / count, grads)
  return {"sq": (sq * mask).sum() / count, "grad": mean_grad}


def gradient_noise_scale(loss_fn, params, chunks: operators.Chunks, *, param_filter=None) -> dict:
  """Exact B_simple = tr(Sigma) / |G|^2 with tr(Sigma) = mean_i |g_i|^2 - |G|^2 (population covariance).

  Needs per-example gradients: valid in BatchNorm `eval` mode (in `batch` mode examples interact).
  """
  mean_sq, g = _per_example_sq_norms(loss_fn, params, chunks, param_filter)
  g_sq = float(g @ g)
  trace = float(mean_sq) - g_sq
  return {"gradient_noise_scale": trace / g_sq, "trace_sigma": trace, "grad_norm_sq": g_sq,
          "method": "exact", "num_examples": chunks.num_examples}


def gradient_noise_scale_two_batch(loss_fn, params, images, labels, key, *, small: int, big: int,
                                   num_pairs: int = 20) -> dict:
  """McCandlish et al.'s two-batch estimator from |G_B|^2 at batch sizes `small` < `big`.

  Batches are drawn without replacement from the n examples, so E|G_B|^2 = |G|^2 + c_B tr(Sigma) with
  c_B = (n - B) / ((n - 1) B) (the paper's 1 / B, corrected for a finite population); solving the two
  equations gives |G|^2 = (c_s |G_big|^2 - c_b |G_small|^2) / (c_s - c_b) and
  tr(Sigma) = (|G_small|^2 - |G_big|^2) / (c_s - c_b), with the squared norms averaged over `num_pairs`
  independent batch pairs before the ratio is taken. Sigma here is the population covariance.
  """
  n = len(labels)
  if not 1 <= small < big <= n:
    raise UserError(f"need 1 <= small < big <= number of examples ({n}), got {small} and {big}")
  grad = jax.jit(lambda p, batch: ravel_pytree(jax.grad(loss_fn)(p, batch))[0])
  sq = {small: [], big: []}
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
  for _ in range(num_pairs):
    for size in (small, big):
      idx = rng.choice(n, size, replace=False)
      g = grad(params, {"image": images[idx], "label": labels[idx].astype(np.int32),
                        "mask": np.ones(size, np.float32)})
      sq[size].append(float(g @ g))
  s, b = np.mean(sq[small]), np.mean(sq[big])
  c_s, c_b = (n - small) / ((n - 1) * small), (n - big) / ((n - 1) * big)
  g_sq = (c_s * b - c_b * s) / (c_s - c_b)
  trace = (s - b) / (c_s - c_b)
  return {"gradient_noise_scale": trace / g_sq, "trace_sigma": trace, "grad_norm_sq": g_sq,
          "method": "two_batch", "small": small, "big": big, "num_pairs": num_pairs}
