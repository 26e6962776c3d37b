"""Sharpness and generalization measures of the trained network: an `Evaluator` (it owns the `measures`
section of the run config, `default_config()` here; `every_steps = 0` and `at_end = False`: off).

At each of its steps it measures the network on a fixed probe set (the first `num_examples` examples
of `split`, BatchNorm in `bn_mode`, the training loss `config.loss.name` without label smoothing or
weight decay) with the library functions of `research.measures`, every one of `names` (comma-separated,
in the order of `MEASURES`):

  name                 function                            metrics (`sharp/...` in metrics.jsonl)
  worst_case           worst_case_sharpness (rho, norm)    worst_case_l2 (or _linf; + _se with m > 0),
                                                           worst_case_l2_restart_spread
  worst_case_adaptive  ... adaptive=True (adaptive_rho)    worst_case_adaptive_l2(_restart_spread)
  average              average_sharpness (average_sigma)   average_plain, average_plain_se
  average_adaptive     ... (average_adaptive_sigma)        average_adaptive, average_adaptive_se
  epsilon              epsilon_sharpness (Keskar)          epsilon_sharpness(_restart_spread)
  pac_bayes            pac_bayes_sigma + pac_bayes_bounds pac_bayes_sigma(_se), pacbayes_init, _orig,
                                                          pacbayes_flatness
  pac_bayes_magnitude  ... magnitude_aware=True           pac_bayes_sigma_magnitude(_se), pacbayes_mag_*
  margin               output_margin (percentile)         output_margin, inverse_margin_sq
  norms                norm_measures (+ over margin when  log_prod_of_fro, log_sum_of_fro, ..._spec,
                       `margin` is measured too)          fro_over_spec, param_norm, fro_dist,
                                                          dist_spec_init, distance_from_init
  path_norm            path_norm (no preprocessing)       path_norm
  fisher_rao           fisher_rao_norm                    fisher_rao_norm_sq
  lambda_max           lambda_max (lambda_max_tol)        lambda_max, lambda_max_se (Ritz residual)
  hessian_trace        hessian_trace (trace_probes)       hessian_trace, hessian_trace_se
  num_params           num_params                         num_params

`rho` and `adaptive_rho` are radii of the worst-case ball; `average_sigma` and `average_adaptive_sigma`
are per-coordinate standard deviations of the average-case Gaussian (formerly `average_rho` and
`average_adaptive_rho`; an old config naming those keys is refused with the new name). The maxima are
the best of `restarts` random starts (default 10: one start can stop at a lower local maximum, see
`research.measures.sharpness`); `..._restart_spread` is the best minus the median restart (0 when the
restarts agreed; the record keeps every restart's value).

Only the trainable parameters (`params.*`) are perturbed or counted; BatchNorm statistics stay fixed.
The initial parameters (distance from init, `fro_dist`, PAC-Bayes `init` terms) are the run's step-0
parameters, rebuilt from `config.seed` by the loop's own initialization (`Context.initial_params`).
Keys: measure `name` at step S uses fold_in(fold_in(key(seed), S), MEASURES.index(name)),
the same for every rescaling, so two parameter sets see the same random starts and noise draws.
PAC-Bayes bounds use m = the number of training examples.

Reparameterization (Dinh, Pascanu, Bengio & Bengio 2017, "Sharp minima can generalize for deep nets",
arXiv:1703.04933; `research.measures.reparameterize`): with `rescale_alphas` (e.g. "0.1,10") every
measure is repeated on the function-preserving rescaled parameters for each alpha: `rescale_kind` relu
rescales (W1, b1, W2) -> (alpha W1, alpha b1, W2 / alpha) for `rescale_layers` = "first,second";
batchnorm rescales layer `layer` and BatchNorm `norm`'s running statistics for "layer,norm". Metrics:
`sharp/<metric>@alpha=<a>` (alpha formatted with %g) and `sharp/max_output_change@alpha=<a>`, the largest
|logit change| over the probe set (the proof that the function is the same; the record also has the
largest |logit| for scale).

Records: `<workdir>/measures/step<S>.json` (written atomically): the settings, each measure's
`Measurement.to_dict()` records with its wall time, the rescaled measurements (alpha, kind, layers,
max output change), and the metrics.
"""

import functools
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from research.backend import xla
from research.core import mesh as mesh_lib
from research.core import rundir
from research.core.errors import UserError, choices_message
from research.core.evaluator import Evaluator, register
from research.curvature import operators, trace
from research.measures import hessian, norms, pac_bayes, reparameterize, sharpness
from research.measures.common import Measurement
from research.models.functional import BN_MODES
from research.training import config as config_lib

MEASURES = ("worst_case", "worst_case_adaptive", "average", "average_adaptive", "epsilon", "pac_bayes",
            "pac_bayes_magnitude", "margin", "norms", "path_norm", "fisher_rao", "lambda_max",
            "hessian_trace", "num_params")
SPLITS = ("train", "eval_train")
RESCALE_KINDS = ("relu", "batchnorm")
NEEDS_INIT = ("pac_bayes", "pac_bayes_magnitude", "norms")
config_lib.rename_key("measures.average_rho", "measures.average_sigma")
config_lib.rename_key("measures.average_adaptive_rho", "measures.average_adaptive_sigma")


def parse_names(text: str) -> list[str]:
  """The measure names of a comma-separated string, checked against `MEASURES`, in `MEASURES` order."""
  names = [n.strip() for n in text.split(",") if n.strip()]
  if not names:
    raise UserError(f"measures.names is empty; valid choices: {', '.join(MEASURES)}")
  for n in names:
    if n not in MEASURES:
      raise UserError(choices_message("measure (measures.names)", n, MEASURES))
  return [n for n in MEASURES if n in names]


def parse_alphas(text: str) -> list[float]:
  """The positive alphas of a comma-separated string ("" -> none)."""
  out = []
  for part in (p.strip() for p in text.split(",") if p.strip()):
    try:
      alpha = float(part)
    except ValueError:
      raise UserError(f"measures.rescale_alphas: {part!r} is not a number (e.g. \"0.1,10\")") from None
    if not (np.isfinite(alpha) and alpha > 0):
      raise UserError(f"measures.rescale_alphas: alpha must be positive and finite, got {part!r}")
    out.append(alpha)
  return out


# The domain of each numeric key (`research.training.config.Interval` syntax).
RANGES = {
    "every_steps": "[0, inf); 0: off", "num_examples": "[0, inf); 0: all", "chunk_size": "[0, inf)",
    "seed": "[0, inf)", "rho": "(0, inf)", "adaptive_rho": "(0, inf)", "steps": "[1, inf)",
    "restarts": "[1, inf)", "m": "[0, inf); 0: the whole probe set", "average_sigma": "(0, inf)",
    "average_adaptive_sigma": "(0, inf)", "average_pairs": "[1, inf)", "epsilon": "(0, inf)",
    "epsilon_subspace": "[0, inf); 0: the full space", "pac_bayes_target": "(0, inf)",
    "pac_bayes_samples": "[1, inf)", "pac_bayes_sigma_max": "(0, inf)", "pac_bayes_depth": "[1, inf)",
    "pac_bayes_tolerance": "(0, inf)", "pac_bayes_magnitude_eps": "[0, inf)",
    "margin_percentile": "[0, 100]", "lambda_max_tol": "(0, inf)", "trace_probes": "[1, inf)",
}


def _check(c) -> tuple[list[str], list[float], list[str]]:
  config_lib.check_ranges("measures", c, RANGES)
  names = parse_names(c.names)
  if c.split not in SPLITS:
    raise UserError(choices_message("measures.split", c.split, SPLITS))
  if c.bn_mode not in BN_MODES:
    raise UserError(choices_message("measures.bn_mode", c.bn_mode, BN_MODES))
  if c.norm not in sharpness.NORMS:
    raise UserError(choices_message("measures.norm", c.norm, sharpness.NORMS))
  if c.rescale_kind not in RESCALE_KINDS:
    raise UserError(choices_message("measures.rescale_kind", c.rescale_kind, RESCALE_KINDS))
  for name in ("every_steps", "num_examples", "chunk_size", "m", "epsilon_subspace"):
    if c[name] < 0:
      raise UserError(f"measures.{name} = {c[name]} must be >= 0")
  alphas = parse_alphas(c.rescale_alphas)
  layers = [p.strip() for p in c.rescale_layers.split(",") if p.strip()]
  if alphas and len(layers) != 2:
    what = "first,second" if c.rescale_kind == "relu" else "layer,norm"
    raise UserError(f"measures.rescale_layers must name two layers ({what!r} for rescale_kind "
                    f"{c.rescale_kind}), got {c.rescale_layers!r}")
  return names, alphas, layers


def _is_parameter(name: str) -> bool:
  return name.startswith("params.")


def _metric(name: str) -> str:
  return name.replace(".", "_")


@functools.partial(xla.jit, static_argnums=(0,))
def _logits(logits_fn, tree, chunk):
  return logits_fn(tree, chunk)


def output_change(logits_fn, tree, other, chunks) -> dict:
  """max |logits(other) - logits(tree)| and max |logits(tree)| over the real examples of `chunks`."""
  diff, scale = 0.0, 0.0
  mask = mesh_lib.to_host(chunks.arrays["mask"]) > 0
  for c in range(chunks.num_chunks):
    chunk = jax.tree.map(lambda x, c=c: x[c], chunks.arrays)
    a = mesh_lib.to_host(_logits(logits_fn, tree, chunk))  # examples split over processes: gathered
    b = mesh_lib.to_host(_logits(logits_fn, other, chunk))
    keep = mask[c]
    diff = max(diff, float(np.abs(b - a)[keep].max()))
    scale = max(scale, float(np.abs(a)[keep].max()))
  return {"max_output_change": diff, "max_abs_logit": scale}


def measure(names: list[str], c, fns: dict, tree: dict, init_tree: dict | None, chunks, key: jax.Array,
            *, input_shape: tuple, num_train: int, loss_name: str) -> tuple[dict, list[dict]]:
  """({metric name without prefix: value}, [records]) of the measures `names` at `tree` = {"params",
  "model_state", ...} (e.g. "inputs": the input statistics). fns: {"loss": loss_fn(tree, batch),
  "logits": logits_fn(tree, batch), "raw_logits": logits of {"params", "model_state"} without
  preprocessing}; only "params" is perturbed or measured."""
  only = {"param_filter": _is_parameter}
  loss_fn, logits_fn = fns["loss"], fns["logits"]
  out, records = {}, []
  gamma = None

  def add(m: Measurement, metric: str | None = None) -> dict:
    metric = metric or m.name
    out[_metric(metric)] = m.value
    if np.isfinite(m.std_error):
      out[_metric(metric) + "_se"] = m.std_error
    if "restart_spread" in m.details:
      out[_metric(metric) + "_restart_spread"] = m.details["restart_spread"]
    return m.to_dict()

  def plain(values: dict, settings: dict) -> list[dict]:
    recs = []
    for k, v in values.items():
      out[_metric(k)] = float(v)
      recs.append(Measurement(k, float(v), float("nan"), settings).to_dict())
    return recs

  for name in names:
    start = time.time()
    k = jax.random.fold_in(key, MEASURES.index(name))
    if name in ("worst_case", "worst_case_adaptive"):
      adaptive = name == "worst_case_adaptive"
      m = sharpness.worst_case_sharpness(loss_fn, tree, chunks, k, rho=c.adaptive_rho if adaptive else c.rho,
                                         norm=c.norm, adaptive=adaptive, m=c.m or None, steps=c.steps,
                                         num_restarts=c.restarts, **only)
      recs = [add(m)]
    elif name in ("average", "average_adaptive"):
      adaptive = name == "average_adaptive"
      m = sharpness.average_sharpness(loss_fn, tree, chunks, k,
                                      sigma=c.average_adaptive_sigma if adaptive else c.average_sigma,
                                      adaptive=adaptive, num_pairs=c.average_pairs, **only)
      recs = [add(m)]
    elif name == "epsilon":
      m = sharpness.epsilon_sharpness(loss_fn, tree, chunks, k, epsilon=c.epsilon,
                                      subspace_dim=c.epsilon_subspace or None, steps=c.steps,
                                      num_restarts=c.restarts, **only)
      recs = [add(m)]
    elif name in ("pac_bayes", "pac_bayes_magnitude"):
      magnitude = name == "pac_bayes_magnitude"
      m = pac_bayes.pac_bayes_sigma(logits_fn, tree, chunks, k, target=c.pac_bayes_target,
                                    magnitude_aware=magnitude, magnitude_eps=c.pac_bayes_magnitude_eps,
                                    num_samples=c.pac_bayes_samples, sigma_max=c.pac_bayes_sigma_max,
                                    depth=c.pac_bayes_depth, tolerance=c.pac_bayes_tolerance, **only)
      recs = [add(m)]
      sigma = {"magnitude_sigma": m.value} if magnitude else {"sigma": m.value}
      bounds = pac_bayes.pac_bayes_bounds(tree, init_tree, num_examples=num_train,
                                          magnitude_eps=c.pac_bayes_magnitude_eps, **sigma, **only)
      recs += plain(bounds, {"num_examples": num_train, "from": m.name})
    elif name == "margin":
      m = norms.output_margin(logits_fn, tree, chunks, percentile=c.margin_percentile)
      gamma = m.value
      recs = [add(m)]
      out["inverse_margin_sq"] = m.details["inverse_margin_sq"]
    elif name == "norms":
      values = norms.norm_measures(tree, init_tree, margin=gamma if gamma and gamma > 0 else None, **only)
      recs = plain(values, {"init": "step-0 parameters rebuilt from config.seed", "margin": gamma})
    elif name == "path_norm":
      raw = lambda p, batch, s=tree["model_state"]: fns["raw_logits"]({"params": p, "model_state": s}, batch)
      recs = plain({"path_norm": norms.path_norm(raw, tree["params"], input_shape)},
                   {"input": "all ones", "input_shape": list(input_shape)})
    elif name == "fisher_rao":
      recs = [add(norms.fisher_rao_norm(logits_fn, tree, chunks, loss_name=loss_name, **only))]
    elif name == "lambda_max":
      recs = [add(hessian.lambda_max(loss_fn, tree, chunks, k, tol=c.lambda_max_tol, **only))]
    elif name == "hessian_trace":
      recs = [add(hessian.hessian_trace(loss_fn, tree, chunks, k, num_probes=c.trace_probes, **only))]
    else:  # num_params
      recs = plain({"num_params": norms.num_params(tree, **only)}, {})
    records.append({"measure": name, "seconds": time.time() - start, "records": recs})
  return out, records


def rescaled(c, alpha: float, layers: list[str], tree: dict) -> dict:
  """`tree` after Dinh et al.'s function-preserving rescaling by `alpha` (module docstring)."""
  if c.rescale_kind == "relu":
    return tree | {"params": reparameterize.rescale_relu_layers(tree["params"], layers[0], layers[1], alpha)}
  params, state = reparameterize.rescale_before_batchnorm(tree["params"], tree["model_state"], layers[0],
                                                          layers[1], alpha)
  return tree | {"params": params, "model_state": state}


def default_config() -> ml_collections.ConfigDict:
  """Sharpness and generalization measures of the trained network; off unless every_steps > 0 or
  at_end. `names`: comma-separated (`MEASURES` above);
  `rescale_alphas`: comma-separated alphas of Dinh et al.'s function-preserving rescaling of the layers
  `rescale_layers` ("first,second" for `rescale_kind` relu, "layer,norm" for batchnorm)."""
  return ml_collections.ConfigDict(dict(
      every_steps=0, at_end=False, names="worst_case,worst_case_adaptive", split="train",
      num_examples=1000, chunk_size=1000, bn_mode="eval", seed=0,
      rho=0.05, adaptive_rho=0.5, norm="l2", steps=20, restarts=10, m=0,
      average_sigma=0.01, average_adaptive_sigma=0.1, average_pairs=16,
      epsilon=1e-3, epsilon_subspace=0,
      pac_bayes_target=0.1, pac_bayes_samples=10, pac_bayes_sigma_max=2.0, pac_bayes_depth=15,
      pac_bayes_tolerance=1e-2, pac_bayes_magnitude_eps=1e-3,
      margin_percentile=10.0, lambda_max_tol=1e-3, trace_probes=20,
      rescale_alphas="", rescale_kind="relu", rescale_layers=""))


def build(config: ml_collections.ConfigDict):
  """The measures `Evaluator` for a training config (`config.measures`), or None when it is off."""
  c = config.get("measures")
  if c is None or (not c.every_steps and not c.at_end):
    return None
  names, alphas, layers = _check(c)
  memory = {"fns": None}

  def functions(ctx) -> dict:
    """{"loss", "logits"} of the tree {"params", "model_state", "inputs"} (`operators.StateFunctions`)
    and "raw_logits" of {"params", "model_state"} on inputs already preprocessed, with "state" the
    `StateFunctions` that makes trees: built once per run, so each compiles once per network."""
    if memory["fns"] is None:
      graphdef, loss_name = ctx.graphdef, ctx.config.loss.name
      state = operators.StateFunctions(graphdef, ctx.dataset, bn_mode=c.bn_mode, loss_name=loss_name)

      def raw_logits(tree, batch):
        _, logits_fn = operators.model_functions(graphdef, tree["model_state"], bn_mode=c.bn_mode,
                                                 preprocess=lambda x: x, loss_name=loss_name)
        return logits_fn(tree["params"], batch)

      memory["fns"] = {"loss": state.loss_fn, "logits": state.logits_fn, "raw_logits": raw_logits,
                       "state": state}
    return memory["fns"]

  def run(ctx) -> dict:
    start = time.time()
    chunks = operators.first_examples(getattr(ctx.dataset, c.split), c.num_examples, c.chunk_size)
    n = chunks.num_examples
    loss_name = ctx.config.loss.name
    fns = functions(ctx)
    tree = fns["state"].tree(ctx.state.params, ctx.state.model_state)
    init_tree = None
    if any(n in NEEDS_INIT for n in names):
      init_tree = fns["state"].tree(ctx.initial_params, ctx.state.model_state)
    key = jax.random.fold_in(jax.random.key(c.seed), ctx.step)
    kw = dict(input_shape=tuple(ctx.dataset.input_shape), num_train=len(ctx.dataset.train),
              loss_name=loss_name)
    values, records = measure(names, c, fns, tree, init_tree, chunks, key, **kw)
    metrics = {f"sharp/{k}": v for k, v in values.items()}
    rescalings = []
    for alpha in alphas:
      other = rescaled(c, alpha, layers, tree)
      change = output_change(fns["logits"], tree, other, chunks)
      other_values, other_records = measure(names, c, fns, other, init_tree, chunks, key, **kw)
      tag = f"@alpha={alpha:g}"
      metrics |= {f"sharp/{k}{tag}": v for k, v in other_values.items()}
      metrics[f"sharp/max_output_change{tag}"] = change["max_output_change"]
      rescalings.append({"alpha": alpha, "kind": c.rescale_kind, "layers": layers, **change,
                         "values": other_values, "measurements": other_records})
    record = {"run": str(ctx.workdir), "step": ctx.step, "source": "tracking",
              "settings": c.to_dict() | {"names": names, "num_examples": n, "loss": loss_name,
                                         "num_train": kw["num_train"]},
              "values": values, "measurements": records, "rescaled": rescalings, "metrics": metrics,
              "seconds": time.time() - start}
    if ctx.is_writer:
      out_dir = Path(ctx.workdir) / "measures"
      out_dir.mkdir(parents=True, exist_ok=True)
      rundir.write_json_atomic(out_dir / f"step{ctx.step}{ctx.tag}.json", trace.to_jsonable(record))
    metrics["sharp/seconds"] = time.time() - start
    return metrics

  return Evaluator("measures", run, every_steps=c.every_steps, at_end=c.at_end)


register('measures', default_config=default_config, build=build)
