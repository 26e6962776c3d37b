"""python -m experiments.measure --workdir RUN --sections curvature[,...] [--checkpoint STEP]
[--config.<section>.<key>=value ...]
python -m experiments.measure --workdir RUN --what lambda_max,top_k,trace,density,noise_scale,gradient
[--checkpoint STEP] [--operator hessian|ggn|fisher|empirical_fisher] [--split train|eval_train|valid|test]
[--num_examples N] [--chunk_size C] [--bn_mode eval|batch] [--k 5] [--seed 0] [--tol 1e-4]
[--num_probes 20] [--density_probes P] [--num_steps 60]

Measures a trained checkpoint of run directory RUN (the latest by default).

`--sections`: with the evaluators training runs on its schedule: the named config sections are switched
on at that checkpoint, with the given overrides. Records go where training writes them
(`RUN/curvature/`, ...); the metrics are printed and appended to `RUN/posthoc.jsonl`. The Hessian's
quantities are settings of the `curvature` section: lambda_max (`k=1`), the top k (`k=5`), lambda_min
(`lambda_min=True`), the Hutchinson trace (`trace_probes=20`), the SLQ density (`density_every=1`,
`density_probes`, `density_steps`), `noise_scale=True`, `gradient=True`, on `split` train or eval_train
with `num_examples`, `chunk_size`, `bn_mode`, `seed`, `tol`; e.g.
`--sections curvature --config.curvature.k=5 --config.curvature.trace_probes=20`.

`--what`: one operator of `research.curvature` on any split, for what the curvature evaluator does not
measure: the GGN, Fisher and empirical Fisher (`--operator`), the valid and test splits, the k smallest
eigenvalues (`top_k`: k largest and k smallest), Hutch++ next to Hutchinson (`trace`). It writes
`RUN/curvature/step<S>_<operator>_<split>.json` (`..._posthoc<UTC time>.json` when that file exists:
records are never overwritten) with every number's error estimate, its settings and the command line
that reproduces it (`launch`), and `.npz` (eigenvectors, SLQ nodes and weights; `analysis.report` draws
the density from them). `results.spectrum`: the top-k's structure (`quantities.spectrum_summary`: largest
relative gap, lambda_1 / lambda_k, share of the trace with `trace`); `results.density.resolution`: what
the SLQ settings cannot resolve. With `--bn_mode batch` every chunk is a ghost batch with its own
statistics (`operator.ghost_batch_size`), so the number of examples must be a multiple of `--chunk_size`.

Several processes (one per host, or per Slurm task) run the same command with `--coordinator_address`,
`--num_processes`, `--process_id` (or the JAX_* variables, or under `srun`): every process computes, process
0 writes the records.

Exit status: 0 measured, 2 bad input (one `error:` line).
"""

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np

from research.core.errors import USER_ERROR_EXIT_CODE, UserError, choices_message, error_line

WHAT = ("lambda_max", "top_k", "trace", "density", "noise_scale", "gradient")
OPERATORS = ("hessian", "ggn", "fisher", "empirical_fisher")
SPLITS = ("train", "eval_train", "valid", "test")


def _summary(record: dict) -> dict:
  """The headline numbers of a `measure_operator` record (spectrum, trace and its standard error)."""
  res = record["results"]
  out = {k: v for k, v in res.get("spectrum", {}).items() if not isinstance(v, list)}
  for name in ("trace_hutchinson", "trace_hutch_plus_plus"):
    if name in res:
      out[name] = res[name]["estimate"]
      if "std_error" in res[name]:
        out[f"{name}_se"] = res[name]["std_error"]
  if "density" in res:
    out["density_node_spacing"] = res["density"]["resolution"]["node_spacing"]
  return out


def _overrides(extra: list[str]) -> dict:
  out = {}
  for arg in extra:
    if not arg.startswith("--config.") or "=" not in arg:
      raise UserError(f"unrecognized argument {arg!r}; overrides look like --config.<section>.<key>=value")
    key, value = arg[len("--config."):].split("=", 1)
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def measure_operator(workdir: str | Path, *, what: list[str], checkpoint: int | None = None,
                     split: str = "train", num_examples: int | None = 1000, operator: str = "hessian",
                     bn_mode: str = "eval", k: int = 5, seed: int = 0, chunk_size: int = 500,
                     num_probes: int = 20, num_steps: int = 60, tol: float = 1e-4,
                     density_probes: int | None = None) -> dict:
  """Measures `what` of one operator on a checkpoint, writes the record and its arrays; returns the record.

  num_probes: Hutchinson probes of the trace; density_probes (default min(num_probes, 10)) and
  num_steps: stochastic Lanczos quadrature probes and Lanczos steps per probe; tol: eigenpairs'
  relative residual tolerance."""
  import jax
  import jax.numpy as jnp

  from research import curvature
  from research.core import rundir, spectral
  from research.curvature import density, quantities, trace
  from research.training import load_run

  for w in what:
    if w not in WHAT:
      raise UserError(choices_message("measurement", w, WHAT))
  if not what:
    raise UserError(f"name at least one measurement; valid choices: {', '.join(WHAT)}")
  if operator not in OPERATORS:
    raise UserError(choices_message("operator", operator, OPERATORS))
  if split not in SPLITS:
    raise UserError(choices_message("split", split, SPLITS))
  workdir = Path(workdir)
  config, ds, graphdef, state, step = load_run(workdir, checkpoint)
  settings = dict(what=",".join(what), checkpoint=step, split=split, num_examples=num_examples,
                  operator=operator, bn_mode=bn_mode, k=k, seed=seed, chunk_size=chunk_size,
                  num_probes=num_probes, num_steps=num_steps, tol=tol, density_probes=density_probes)
  argv = ["python", "-m", "experiments.measure", "--workdir", str(workdir)]
  argv += [f"--{key}={value}" for key, value in settings.items() if value is not None]
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

  record = {"run": str(workdir), "operator": op.info, "results": {},
            "launch": {"argv": argv, "cwd": str(Path.cwd())}}
  arrays = {}
  timings = {}
  top = bottom = None
  if "lambda_max" in what or "top_k" in what or "gradient" in what:
    t = time.time()
    kk = k if ("top_k" in what or "gradient" in what) else 1
    top = curvature.eigenpairs(op, kk, "largest", key=jax.random.fold_in(key, 2), tol=tol)
    record["results"]["top"] = top.to_dict()
    arrays["top_vectors"] = top.vectors
    if "top_k" in what:  # the most negative eigenvalues converge slowly: only when asked for
      bottom = curvature.eigenpairs(op, kk, "smallest", key=jax.random.fold_in(key, 3), tol=tol)
      record["results"]["bottom"] = bottom.to_dict()
      arrays["bottom_vectors"] = bottom.vectors
    timings["eigenpairs"] = time.time() - t
  hutchinson = None
  if "trace" in what:
    t = time.time()
    # One probe per product: a dataset operator vmapped over many probes multiplies activation memory.
    hutchinson = trace.hutchinson(op, jax.random.fold_in(key, 4), num_probes, batch=1)
    record["results"]["trace_hutchinson"] = hutchinson.to_dict()
    record["results"]["trace_hutch_plus_plus"] = trace.hutch_plus_plus(
        op, jax.random.fold_in(key, 5), max(3 * (num_probes // 3), 3), batch=1).to_dict()
    timings["trace"] = time.time() - t
  if top is not None:  # the top-k's structure, and its share of the trace when both were measured
    record["results"]["spectrum"] = quantities.spectrum_summary(top, bottom, hutchinson)
  if "density" in what:
    t = time.time()
    probes = min(num_probes, 10) if density_probes is None else density_probes
    steps = min(num_steps, op.size)
    quad = density.slq(op, jax.random.fold_in(key, 6), num_probes=probes, num_steps=steps)
    record["results"]["density"] = {"num_products": quad.num_products, "num_probes": probes,
                                    "num_steps": steps, "resolution": spectral.resolution(quad)}
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
  out_dir = workdir / "curvature"
  stem = f"step{step}_{operator}_{split}"
  if (out_dir / f"{stem}.json").exists():  # never overwrite a record (e.g. training's own tracking)
    stem += "_posthoc" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
  if rundir.is_writer():
    out_dir.mkdir(exist_ok=True)
    rundir.write_json_atomic(out_dir / f"{stem}.json", record)
    if arrays:
      np.savez(out_dir / f"{stem}.npz", **arrays)
  return record


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.measure", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="run directory")
  mode = parser.add_mutually_exclusive_group(required=True)
  mode.add_argument("--sections", help="comma-separated config sections to measure (evaluators)")
  mode.add_argument("--what", help=f"measurements of one operator: {', '.join(WHAT)}")
  parser.add_argument("--checkpoint", type=int, default=None, help="checkpoint step (default: the latest)")
  group = parser.add_argument_group("with --what")
  group.add_argument("--operator", default="hessian", help=", ".join(OPERATORS))
  group.add_argument("--split", default="train", help=", ".join(SPLITS))
  group.add_argument("--num_examples", type=int, default=1000)
  group.add_argument("--chunk_size", type=int, default=500)
  group.add_argument("--bn_mode", default="eval")
  group.add_argument("--k", type=int, default=5, help="eigenpairs for top_k and gradient")
  group.add_argument("--seed", type=int, default=0)
  group.add_argument("--tol", type=float, default=1e-4, help="relative residual tolerance of eigenpairs")
  group.add_argument("--num_probes", type=int, default=20, help="Hutchinson probes of the trace")
  group.add_argument("--density_probes", type=int, default=None,
                     help="SLQ probes of the density (default: min(num_probes, 10))")
  group.add_argument("--num_steps", type=int, default=60, help="Lanczos steps per SLQ probe")
  cluster = parser.add_argument_group("multi-process (else JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                                      "JAX_PROCESS_ID, or a Slurm step of several tasks)")
  cluster.add_argument("--coordinator_address", default=None, help="host:port of process 0's coordinator")
  cluster.add_argument("--num_processes", type=int, default=None)
  cluster.add_argument("--process_id", type=int, default=None)
  args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  from research import backend
  from research.core import distributed
  from research.evaluators import posthoc

  try:
    backend.setup()  # before JAX runs anything
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    if args.what is not None:
      if extra:
        raise UserError(f"unrecognized argument {extra[0]!r} (config overrides go with --sections)")
      record = measure_operator(args.workdir, what=[w for w in args.what.split(",") if w],
                                checkpoint=args.checkpoint, split=args.split, num_examples=args.num_examples,
                                operator=args.operator, bn_mode=args.bn_mode, k=args.k, seed=args.seed,
                                chunk_size=args.chunk_size, num_probes=args.num_probes,
                                num_steps=args.num_steps, tol=args.tol, density_probes=args.density_probes)
      metrics = _summary(record)
    else:
      metrics = posthoc.measure_checkpoint(args.workdir, [s for s in args.sections.split(",") if s],
                                           overrides=_overrides(extra), step=args.checkpoint)
  except (UserError, OSError) as e:  # OSError: the workdir or the dataset on disk
    print(error_line(e), file=sys.stderr)
    return USER_ERROR_EXIT_CODE
  print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
