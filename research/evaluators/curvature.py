"""Curvature tracked during training: an `Evaluator` that measures on a fixed probe set every N steps.

Settings: the `curvature` section of the run config, owned here (`default_config()`; `every_steps = 0`
and `at_end = False`: off).

At each of its steps it builds the Hessian of the training loss (`config.loss.name`; label smoothing
and weight decay are not part of it) on a fixed probe set (the first `num_examples` training examples,
BatchNorm in `bn_mode`) and logs into `metrics.jsonl`:
- `curv/lambda_max` (and `curv/lambda_2` ... for k > 1), with `curv/lambda_max_residual` and
  `curv/lambda_max_converged`: Lanczos warm-started from the previous measurement's top eigenvectors,
  which then usually converges in a few products (`curv/products`);
- the structure of the top k (`research.curvature.quantities.spectrum_summary`): `curv/lambda_1_over_lambda_k`
  (k >= 2, lambda_k > 0), and `curv/top_gap_index`, `curv/top_gap_ratio` (3 positive values among the top k):
  the 1-based position i < k of the largest relative gap lambda_i / lambda_{i+1} and that ratio
  (`research.core.spectral.largest_gap`; C outliers above the bulk put it at about C when k > C);
- `curv/lambda_min` (`lambda_min=True`): the most negative curvature;
- `curv/trace`, `curv/trace_se` (`trace_probes > 0`): Hutchinson with its standard error, at every
  measurement or, with `trace_every > 0`, at the steps that are multiples of it and at the end; there also
  `curv/top_trace_fraction`, `curv/top_trace_fraction_se`: the sum of the top-k eigenvalues over that trace
  (which includes the negative eigenvalues) and its standard error from trace_se;
- `curv/precond_lambda_max` (`preconditioned=True`, Adam-type optimizers): the top eigenvalue of
  P^-1/2 H P^-1/2 with P = sqrt(v_hat) + eps from the optimizer state, the quantity Cohen et al. 2022
  (arXiv:2207.14484) compare with 38 / eta for beta1 = 0.9 (2 (1 + beta1) / ((1 - beta1) eta));
- `curv/grad_top_fraction`, `curv/grad_curvature` (`gradient=True`): the fraction of the probe-set
  gradient in the top-k eigenspace (Gur-Ari et al. 2018) and g^T H g / |g|^2;
- `curv/noise_scale` (`noise_scale=True`): B_simple from per-example gradients (McCandlish et al. 2018);
- `curv/seconds`: the time the measurement took.
Every `save_every` steps (and at the end) the eigenvalues, residuals and settings go to
`curvature/step<S>_hessian_<split>.json` and the eigenvectors to its `.npz`, in the record format of
`experiments.measure --what` (so reports read both alike), with the top-k structure under
`results.spectrum`, and the operator's settings under `operator` (`bn_mode`, `chunk_size`, and in `batch` mode
`ghost_batch_size`: every chunk is a ghost batch with its own statistics, so `num_examples` must be a
multiple of `chunk_size`); `density_every` adds a stochastic Lanczos quadrature (`slq_nodes` / `slq_weights`
in the `.npz`, `results.density` with its `resolution`: node spacing, kernel width and what the settings
cannot resolve, `research.core.spectral.resolution`). SLQ counts no outliers: m steps show at most m
distinct eigenvalues; the top k and their largest gap are the outlier count. After a resume the warm start
comes from the latest saved eigenvectors.
"""

import time
import zipfile
from pathlib import Path

import jax
import ml_collections
import numpy as np

from research.core import rundir, spectral
from research.core.errors import UserError, choices_message
from research.core.evaluator import Evaluator, register
from research.curvature import density, lanczos, operators, quantities, trace
from research.models.functional import BN_MODES
from research.training import config as config_lib

SPLITS = ("train", "eval_train")
# Entries of `quantities.spectrum_summary` logged as `curv/<name>` when present.
SPECTRUM_METRICS = ("lambda_1_over_lambda_k", "top_gap_index", "top_gap_ratio", "top_trace_fraction",
                    "top_trace_fraction_se", "top_converged_all")


# The domain of each numeric key (`research.training.config.Interval` syntax).
RANGES = {
    "every_steps": "[0, inf); 0: off", "num_examples": "[0, inf); 0: all", "chunk_size": "[0, inf)",
    "k": "[1, inf)", "tol": "(0, inf)", "max_restarts": "[0, inf)", "trace_probes": "[0, inf); 0: off",
    "trace_every": "[0, inf); 0: off", "save_every": "[0, inf); 0: off", "density_every": "[0, inf); 0: off",
    "density_probes": "[1, inf)", "density_steps": "[1, inf)", "seed": "[0, inf)",
}


def _check(c) -> None:
  config_lib.check_ranges("curvature", c, RANGES)
  if c.split not in SPLITS:
    raise UserError(choices_message("curvature.split", c.split, SPLITS))
  if c.bn_mode not in BN_MODES:
    raise UserError(choices_message("curvature.bn_mode", c.bn_mode, BN_MODES))
  for name in ("every_steps", "num_examples", "chunk_size", "trace_probes", "trace_every", "save_every",
               "density_every"):
    if c[name] < 0:
      raise UserError(f"curvature.{name} = {c[name]} must be >= 0")
  if c.k < 1:
    raise UserError(f"curvature.k = {c.k} must be >= 1")
  if c.bn_mode == "batch" and c.num_examples and c.chunk_size and c.num_examples % c.chunk_size:
    raise UserError(_GHOST_MESSAGE.format(n=c.num_examples, c=c.chunk_size))


_GHOST_MESSAGE = ("curvature.num_examples ({n}) must be a multiple of curvature.chunk_size ({c}) in bn_mode "
                  "batch: every chunk is a ghost batch whose BatchNorm statistics would include the padding")


def _latest_vectors(directory: Path, split: str) -> np.ndarray | None:
  suffix = f"_hessian_{split}"
  found = []
  for p in directory.glob(f"step*{suffix}.npz"):
    step = p.stem[len("step"):-len(suffix)]
    if step.isdigit():
      found.append((int(step), p))
  for _, path in sorted(found, reverse=True):
    try:
      with np.load(path) as f:
        return f["top_vectors"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # half-written: try older
      continue
  return None


def default_config() -> ml_collections.ConfigDict:
  """Curvature tracked during training; off unless every_steps > 0
  or at_end. A fixed probe set: the first `num_examples` examples of `split` (0: all).

  `extras_at_init` = False: the trace and the density start after initialization (step 0 measures the
  top eigenvalues only). Density settings: the quick default is 3 probes of 60 Lanczos steps; Ghorbani
  et al. 2019 use 90 steps (`research.core.spectral.GHORBANI`: `--config.curvature.density_steps=90`);
  the record's `results.density.resolution` says what the settings used cannot resolve.
  """
  return ml_collections.ConfigDict(dict(
      every_steps=0, at_end=False, split="train", num_examples=1000, chunk_size=1000, bn_mode="eval",
      k=1, tol=1e-3, max_restarts=10, lambda_min=False, trace_probes=0, trace_every=0, preconditioned=False,
      gradient=False, noise_scale=False, save_every=0, density_every=0, density_probes=3,
      density_steps=60, extras_at_init=True, seed=0))


def build(config: ml_collections.ConfigDict):
  """The tracking `Evaluator` for a training config (`config.curvature`), or None when it is off."""
  c = config.curvature
  if not c.every_steps and not c.at_end:
    return None
  _check(c)
  memory = {"vectors": None, "loaded": False, "fns": None}

  def measure(ctx) -> dict:
    start = time.time()
    out_dir = ctx.workdir / "curvature"
    if not memory["loaded"]:
      memory["vectors"], memory["loaded"] = _latest_vectors(out_dir, c.split), True
    chunks = operators.first_examples(getattr(ctx.dataset, c.split), c.num_examples, c.chunk_size)
    if c.bn_mode == "batch" and chunks.num_examples % chunks.chunk_size:  # e.g. a split shorter than asked
      raise UserError(_GHOST_MESSAGE.format(n=chunks.num_examples, c=chunks.chunk_size))
    if memory["fns"] is None:  # once per run: its compiled products are reused at every step
      memory["fns"] = operators.StateFunctions(ctx.graphdef, ctx.dataset, bn_mode=c.bn_mode,
                                                loss_name=ctx.config.loss.name)
    loss_fn, params = memory["fns"].loss_fn, memory["fns"].tree(ctx.state.params, ctx.state.model_state)
    only = {"param_filter": _is_parameter}
    info = {"split": c.split, "bn_mode": c.bn_mode, "step": ctx.step, "seed": c.seed}
    op = operators.hessian(loss_fn, params, chunks, info=info, **only)
    key = jax.random.fold_in(jax.random.key(c.seed), ctx.step)
    warm = memory["vectors"]
    if warm is not None and warm.shape[1] != op.size:
      warm = None
    top = lanczos.eigenpairs(op, c.k, "largest", key=jax.random.fold_in(key, 0), tol=c.tol,
                             max_restarts=c.max_restarts, warm_start=warm)
    memory["vectors"] = np.asarray(top.vectors)
    metrics = {"curv/lambda_max": float(top.values[0]),
               "curv/lambda_max_residual": float(top.residual_norms[0]),
               "curv/lambda_max_converged": float(top.converged[0]), "curv/products": top.num_products}
    metrics |= {f"curv/lambda_{i + 1}": float(v) for i, v in enumerate(top.values[1:], start=1)}
    operator_info = dict(op.info)
    results, arrays = {"top": top.to_dict()}, {"top_vectors": np.asarray(top.vectors)}
    bottom = None
    if c.lambda_min:
      bottom = lanczos.eigenpairs(op, 1, "smallest", key=jax.random.fold_in(key, 1), tol=c.tol,
                                  max_restarts=c.max_restarts)
      metrics |= {"curv/lambda_min": float(bottom.values[0]),
                  "curv/lambda_min_converged": float(bottom.converged[0])}
      results["bottom"] = bottom.to_dict()
    final = ctx.step == ctx.total_steps
    extras = c.extras_at_init or ctx.step > 0  # the trace and the density at step 0 too
    est = None
    if c.trace_probes and extras and (not c.trace_every or ctx.step % c.trace_every == 0 or final):
      est = trace.hutchinson(op, jax.random.fold_in(key, 2), c.trace_probes, batch=1)
      metrics |= {"curv/trace": est.estimate, "curv/trace_se": est.std_error}
      results["trace_hutchinson"] = est.to_dict()
    results["spectrum"] = spectrum = quantities.spectrum_summary(top, bottom, est)
    metrics |= {f"curv/{name}": float(spectrum[name]) for name in SPECTRUM_METRICS if name in spectrum}
    if c.preconditioned and ctx.step > 0:  # at step 0 an Adam-type state has no second moment yet
      o = ctx.config.optimizer
      diag = operators.adam_preconditioner(ctx.state.opt_state, b2=o.b2, eps=o.eps)
      pre = lanczos.eigenpairs(operators.preconditioned(op, diag), 1, key=jax.random.fold_in(key, 3),
                               tol=c.tol, max_restarts=c.max_restarts)
      metrics |= {"curv/precond_lambda_max": float(pre.values[0]),
                  "curv/precond_lambda_max_converged": float(pre.converged[0])}
      results["preconditioned_top"] = pre.to_dict()
    if c.gradient:
      g = operators.mean_gradient(loss_fn, params, chunks, **only)
      metrics |= {"curv/grad_top_fraction": quantities.top_subspace_fraction(g, top.vectors),
                  "curv/grad_curvature": quantities.gradient_curvature(op, g)}
      results["gradient"] = {"grad_norm": float(np.linalg.norm(np.asarray(g, np.float64))),
                             "gradient_curvature": metrics["curv/grad_curvature"],
                             "top_subspace_fraction": metrics["curv/grad_top_fraction"], "k": c.k}
    if c.noise_scale:
      results["noise_scale"] = quantities.gradient_noise_scale(loss_fn, params, chunks, **only)
      metrics["curv/noise_scale"] = results["noise_scale"]["gradient_noise_scale"]
    if c.density_every and extras and (ctx.step % c.density_every == 0 or final):
      quad = density.slq(op, jax.random.fold_in(key, 4), num_probes=c.density_probes,
                         num_steps=min(c.density_steps, op.size))
      results["density"] = {"num_products": quad.num_products, "num_probes": c.density_probes,
                            "num_steps": min(c.density_steps, op.size),
                            "resolution": spectral.resolution(quad)}
      arrays |= {"slq_nodes": quad.nodes, "slq_weights": quad.weights}
    saved = (c.save_every and ctx.step % c.save_every == 0) or final or "density" in results
    if saved and ctx.is_writer:
      out_dir.mkdir(parents=True, exist_ok=True)
      stem = out_dir / f"step{ctx.step}_hessian_{c.split}{ctx.tag}"
      np.savez(f"{stem}.npz", **arrays)
      record = {"run": str(ctx.workdir), "source": "posthoc" if ctx.tag else "tracking",
                "operator": operator_info, "results": results, "metrics": metrics}
      record = _without_parameter_names(trace.to_jsonable(record))
      rundir.write_json_atomic(Path(f"{stem}.json"), record)
    metrics["curv/seconds"] = time.time() - start
    return metrics

  return Evaluator("curvature", measure, every_steps=c.every_steps, at_end=c.at_end)


def _without_parameter_names(value):
  """The record without the operators' list of every parameter name (the whole model here)."""
  if isinstance(value, dict):
    return {k: _without_parameter_names(v) for k, v in value.items() if k != "parameters"}
  if isinstance(value, list):
    return [_without_parameter_names(v) for v in value]
  return value


def _is_parameter(name: str) -> bool:
  return name.startswith("params.")



register('curvature', default_config=default_config, build=build)
