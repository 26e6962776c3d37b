"""Hessian-based flatness measures, from the curvature engine (research.curvature).

The operator (`hessian_operator`) is the Hessian of the exact mean loss over the data, products by
forward-over-reverse differentiation, compiled once per model and parameter layout.

- lambda_max: the top eigenvalue of the Hessian of the mean loss (thick-restart Lanczos,
  `curvature.eigenpairs`; error estimate: the Ritz residual ||H x - theta x||). Keskar et al. 2017 and
  Jiang et al. 2020 relate it to sharpness; it changes under Dinh et al.'s rescaling (Dinh, Pascanu,
  Bengio & Bengio 2017, "Sharp minima can generalize for deep nets", arXiv:1703.04933).
- trace: tr(H) by Hutchinson's estimator (`curvature.trace.hutchinson`; error: its standard error).
- effective_rank: tr(H) / lambda_max, the number of directions as curved as the sharpest one would
  carry the whole trace (1 for rank one, d for H = c I); its standard error is that of the trace
  divided by lambda_max (lambda_max's own error is far smaller). Negative eigenvalues lower it.
"""

from collections.abc import Callable

import jax
import numpy as np

from research.curvature import lanczos, operators
from research.curvature import trace as trace_lib
from research.curvature.linear_operator import LinearOperator
from research.measures.common import (
  Measurement,
  as_chunks,
  check_count,
  check_positive,
)


def hessian_operator(loss_fn: Callable, params, data, *, param_filter=None,
                     info: dict | None = None) -> LinearOperator:
  """The Hessian of the mean loss over `data` as a `curvature.LinearOperator`: `curvature.hessian`, whose
  product is compiled once per (loss_fn, parameter structure), so measuring many parameter sets of one
  model (checkpoints, rescalings) does not recompile."""
  return operators.hessian(loss_fn, params, as_chunks(data), param_filter=param_filter, info=info)


def _operator(loss_fn, params, data, param_filter, info):
  return hessian_operator(loss_fn, params, data, param_filter=param_filter, info=info)


def _basis_dtype(op):
  return np.promote_types(op.dtype, np.float32)


def _lambda_max(op, key, tol, max_restarts) -> Measurement:
  top = lanczos.eigenpairs(op, 1, "largest", key=key, tol=tol, max_restarts=max_restarts,
                           basis_dtype=_basis_dtype(op))
  settings = dict(top.info) | trace_lib.key_info(key)
  return Measurement("lambda_max", float(top.values[0]), float(top.residual_norms[0]), settings,
                     {"converged": bool(top.converged[0]), "num_products": top.num_products})


def _trace(op, key, num_probes) -> Measurement:
  est = trace_lib.hutchinson(op, key, num_probes)
  return Measurement("hessian_trace", est.estimate, est.std_error, dict(est.info),
                     {"num_products": est.num_products})


def lambda_max(loss_fn: Callable, params, data, key: jax.Array, *, tol: float = 1e-5,
               max_restarts: int = 20, param_filter=None, info: dict | None = None) -> Measurement:
  """The top Hessian eigenvalue; std_error is the Ritz residual norm (a bound on the eigenvalue error
  for a symmetric matrix); details: converged, number of products."""
  tol = check_positive("tol", tol)
  max_restarts = check_count("max_restarts", max_restarts, 0)
  return _lambda_max(_operator(loss_fn, params, data, param_filter, info), key, tol, max_restarts)


def hessian_trace(loss_fn: Callable, params, data, key: jax.Array, *, num_probes: int = 100,
                  param_filter=None, info: dict | None = None) -> Measurement:
  """tr(H) by Hutchinson with `num_probes` Rademacher probes, with its standard error."""
  num_probes = check_count("num_probes", num_probes)
  return _trace(_operator(loss_fn, params, data, param_filter, info), key, num_probes)


def hessian_measures(loss_fn: Callable, params, data, key: jax.Array, *, num_probes: int = 100,
                     tol: float = 1e-5, max_restarts: int = 20, param_filter=None,
                     info: dict | None = None) -> dict[str, Measurement]:
  """{"lambda_max", "hessian_trace", "effective_rank"} (module docstring) from one Hessian operator;
  Lanczos uses fold_in(key, 0), Hutchinson fold_in(key, 1)."""
  tol = check_positive("tol", tol)
  num_probes = check_count("num_probes", num_probes)
  max_restarts = check_count("max_restarts", max_restarts, 0)
  op = _operator(loss_fn, params, data, param_filter, info)
  top = _lambda_max(op, jax.random.fold_in(key, 0), tol, max_restarts)
  tr = _trace(op, jax.random.fold_in(key, 1), num_probes)
  rank = Measurement("effective_rank", tr.value / top.value, tr.std_error / abs(top.value),
                     {"definition": "trace / lambda_max"} | tr.settings,
                     {"lambda_max": top.value, "trace": tr.value})
  return {"lambda_max": top, "hessian_trace": tr, "effective_rank": rank}
