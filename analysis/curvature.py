"""python -m analysis.curvature --workdir RUN [--checkpoint STEP] --what lambda_max,top_k,trace,density
[--split train] [--num_examples N] [--operator hessian] [--bn_mode eval] [--k 5] [--seed 0]
[--num_probes 20] [--density_probes P] [--num_steps 60] [--tol 1e-4]

Measures a trained checkpoint of run directory RUN and writes, under RUN/curvature/:
`step<S>_<operator>_<split>.json` (`..._posthoc<UTC time>.json` when that file exists already: records
are never overwritten) (every number with its error estimate and settings: operator,
BatchNorm mode, split, number of examples, chunk size, seed, products), `.npz` (eigenvectors, SLQ nodes
and weights) and, for `density`, a PNG of the smoothed spectral density (log scale for PSD operators).

What: lambda_max (the top eigenpair), top_k (the k largest and the k smallest, i.e. lambda_min),
trace (Hutchinson with standard error, and Hutch++), density (stochastic Lanczos quadrature),
noise_scale (gradient noise scale, exact from per-example gradients), gradient (g^T H g / |g|^2 and
the gradient's fraction in the top-k eigenspace).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from research.core.errors import UserError

WHAT = ("lambda_max", "top_k", "trace", "density", "noise_scale", "gradient")
OPERATORS = ("hessian", "ggn", "fisher", "empirical_fisher")
SPLITS = ("train", "eval_train", "valid", "test")


def measure(workdir: Path, *, what: list[str], checkpoint: int | None = None, split: str = "train",
            num_examples: int | None = 1000, operator: str = "hessian", bn_mode: str = "eval", k: int = 5,
            seed: int = 0, chunk_size: int = 500, num_probes: int = 20, num_steps: int = 60,
            tol: float = 1e-4, density_probes: int | None = None) -> dict:
  """Runs the measurements and writes them; returns the JSON record.

  num_probes: Hutchinson probes of the trace; density_probes (default min(num_probes, 10)) and
  num_steps: stochastic Lanczos quadrature probes and Lanczos steps per probe; tol: eigenpairs'
  relative residual tolerance."""
  from research import curvature
  from research.curvature import density, quantities, trace
  from research.training import load_run

  for w in what:
    if w not in WHAT:
      raise UserError(f"unknown measurement {w!r}; valid choices: {', '.join(WHAT)}")
  if operator not in OPERATORS:
    raise UserError(f"unknown operator {operator!r}; valid choices: {', '.join(OPERATORS)}")
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
  config, ds, graphdef, state, step = load_run(workdir, checkpoint)
  data_split = getattr(ds, split)
  n = len(data_split) if num_examples is None else min(num_examples, len(data_split))
  if n == 0:
    raise UserError(f"split {split!r} of this run is empty")
  chunks = curvature.make_chunks(data_split.images[:n], data_split.labels[:n], chunk_size)
  loss_name = config.loss.name
  loss_fn, logits_fn = curvature.model_functions(graphdef, state.model_state, bn_mode=bn_mode,
                                                 preprocess=ds.preprocess, loss_name=loss_name)
  key = jax.random.key(seed)
  info = {"split": split, "bn_mode": bn_mode, "step": step, "seed": seed}
  if operator == "hessian":
    op = curvature.hessian(loss_fn, state.params, chunks, info=info)
  elif operator == "ggn":
    op = curvature.ggn(logits_fn, loss_name, state.params, chunks, info=info)
  elif operator == "fisher":
    op = curvature.fisher(logits_fn, loss_name, state.params, chunks, jax.random.fold_in(key, 1), info=info)
  else:
    op = curvature.empirical_fisher(logits_fn, loss_name, state.params, chunks, info=info)

  record = {"run": str(workdir), "operator": op.info, "results": {}}
  arrays = {}
  timings = {}
  top = None
  if "lambda_max" in what or "top_k" in what or "gradient" in what:
    t = time.time()
    kk = k if ("top_k" in what or "gradient" in what) else 1
    top = curvature.eigenpairs(op, kk, "largest", key=jax.random.fold_in(key, 2), tol=tol)
    record["results"]["top"] = top.to_dict()
    arrays["top_vectors"] = top.vectors
    bottom = None
    if "top_k" in what:  # the most negative eigenvalues converge slowly: only when asked for
      bottom = curvature.eigenpairs(op, kk, "smallest", key=jax.random.fold_in(key, 3), tol=tol)
      record["results"]["bottom"] = bottom.to_dict()
      arrays["bottom_vectors"] = bottom.vectors
    record["results"]["spectrum"] = quantities.spectrum_summary(top, bottom)
    timings["eigenpairs"] = time.time() - t
  if "trace" in what:
    t = time.time()
    # One probe per product: a dataset operator vmapped over many probes multiplies activation memory.
    record["results"]["trace_hutchinson"] = trace.hutchinson(op, jax.random.fold_in(key, 4),
                                                             num_probes, batch=1).to_dict()
    record["results"]["trace_hutch_plus_plus"] = trace.hutch_plus_plus(
        op, jax.random.fold_in(key, 5), max(3 * (num_probes // 3), 3), batch=1).to_dict()
    timings["trace"] = time.time() - t
  if "density" in what:
    t = time.time()
    probes = min(num_probes, 10) if density_probes is None else density_probes
    steps = min(num_steps, op.size)
    quad = density.slq(op, jax.random.fold_in(key, 6), num_probes=probes, num_steps=steps)
    record["results"]["density"] = {"num_products": quad.num_products, "num_probes": probes,
                                    "num_steps": steps, "outliers": density.outliers(quad).to_dict()}
    arrays["slq_nodes"], arrays["slq_weights"] = quad.nodes, quad.weights
    timings["density"] = time.time() - t
  if "noise_scale" in what or "gradient" in what:
    g = curvature.mean_gradient(loss_fn, state.params, chunks)
    if "noise_scale" in what:
      record["results"]["noise_scale"] = quantities.gradient_noise_scale(loss_fn, state.params, chunks)
    if "gradient" in what:
      record["results"]["gradient"] = {
          "grad_norm": float(jnp.linalg.norm(g)),
          "gradient_curvature": quantities.gradient_curvature(op, g),
          "top_subspace_fraction": quantities.top_subspace_fraction(g, top.vectors), "k": k}
  record["timings_s"] = timings
  out_dir = Path(workdir) / "curvature"
  out_dir.mkdir(exist_ok=True)
  stem = f"step{step}_{operator}_{split}"
  if (out_dir / f"{stem}.json").exists():  # never overwrite a record (e.g. training's own tracking)
    stem += "_posthoc" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
  from research.core import rundir

  rundir.write_json_atomic(out_dir / f"{stem}.json", record)
  if arrays:
    np.savez(out_dir / f"{stem}.npz", **arrays)
  if "density" in what:
    _plot_density(quad, out_dir / f"{stem}_density.png", op.info, log_scale=operator != "hessian")
  return record


def _plot_density(quad, path: Path, info: dict, *, log_scale: bool) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from research.curvature import density

  nodes = quad.nodes[quad.weights > 0]
  lo, hi = float(nodes.min()), float(nodes.max())
  pad = 0.05 * (hi - lo + 1e-12)
  grid = np.linspace(lo - pad, hi + pad, 1000)
  sigma = max((hi - lo) / 200, 1e-12)
  dens = density.smooth(quad, grid, sigma)
  fig, ax = plt.subplots(figsize=(5, 3.2))
  ax.semilogy(grid, np.maximum(dens, 1e-12))
  ax.set_xlabel("eigenvalue")
  ax.set_ylabel("density (log scale)")
  ax.set_title(f"{info.get('operator')} spectrum, step {info.get('step')} "
               f"({info.get('num_examples')} examples)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.curvature", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--checkpoint", type=int, default=None)
  parser.add_argument("--what", default="lambda_max,trace")
  parser.add_argument("--split", default="train")
  parser.add_argument("--num_examples", type=int, default=1000)
  parser.add_argument("--operator", default="hessian")
  parser.add_argument("--bn_mode", default="eval")
  parser.add_argument("--k", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--chunk_size", type=int, default=500)
  parser.add_argument("--num_probes", type=int, default=20, help="Hutchinson probes of the trace")
  parser.add_argument("--density_probes", type=int, default=None,
                      help="SLQ probes of the density (default: min(num_probes, 10))")
  parser.add_argument("--num_steps", type=int, default=60, help="Lanczos steps per SLQ probe")
  parser.add_argument("--tol", type=float, default=1e-4, help="relative residual tolerance of eigenpairs")
  args = parser.parse_args(argv)
  from research import native, xla

  try:
    xla.tune_host_allocator()  # before JAX runs anything
    native.conv_choice()  # $RESEARCH_CONV checked before any work
    xla.use_compilation_cache()
    record = measure(Path(args.workdir), what=[w for w in args.what.split(",") if w],
                     checkpoint=args.checkpoint, split=args.split, num_examples=args.num_examples,
                     operator=args.operator, bn_mode=args.bn_mode, k=args.k, seed=args.seed,
                     chunk_size=args.chunk_size, num_probes=args.num_probes, num_steps=args.num_steps,
                     tol=args.tol, density_probes=args.density_probes)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({k: v for k, v in record["results"].get("spectrum", {}).items()}, indent=1))
  if "trace_hutchinson" in record["results"]:
    t = record["results"]["trace_hutchinson"]
    print(f"trace {t['estimate']:.4g} +- {t['std_error']:.2g}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
