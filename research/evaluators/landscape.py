"""The loss landscape of the trained network: an `Evaluator` that scans around the parameters at the end
of training (and optionally every N steps).

Settings: the `landscape` section of the run config, owned here (`default_config()`; `at_end = False`
and `every_steps = 0`: off).

At each of its steps it evaluates loss and accuracy at theta + a d_1 (`kind = "1d"`) or
theta + a d_1 + b d_2 (`"2d"`) for a, b on `num_points` evenly spaced values in [-span, span] (an odd
count, so that the centre, the trained point itself, is on the grid), on the first `num_examples`
examples of each split in `splits`, with `research.landscape.scan`. Directions (`directions`):
- `"random"`: Gaussian, normalized per filter against the parameters (`normalization = "filter"`, Li et
  al. 2018, "Visualizing the Loss Landscape of Neural Nets", arXiv:1712.09913), biases and
  normalization parameters zeroed, drawn from `seed` (`research.landscape.random_directions`); the
  span is then relative to the weights' own scale (span 1 moves each filter by its own norm);
- `"eigen"`: the top Hessian eigenvectors of the training loss on the scanned `eval_train` examples
  (unit norm, so span is a Euclidean distance in parameter space), BatchNorm in eval mode for the
  Hessian when `bn_mode = "recompute"`.

The grid goes to `landscape/step<S>_<kind>.json` and `.npz` (`ScanResult.save`: axes, values per split
and metric, every setting incl. the directions' seeds, timing). Metrics into `metrics.jsonl`, per split:
- `land/loss_<split>`, `land/accuracy_<split>`: at the centre (the trained parameters on the subset);
- `land/rise_<split>`: the mean loss at the ends of the axes through the centre (coefficient +-span
  along each direction, the others 0: 2 points in 1-D, 4 in 2-D) minus the centre loss, in nats: how
  much the loss rises at distance span (sharpness at the scale of the weights; Li et al.'s
  flat-vs-sharp comparison in numbers);
- `land/nonconvex_<split>`: the fraction of interior grid points where the finite-difference curvature
  of the loss surface (the second difference in 1-D, the smallest eigenvalue of the 2 x 2 Hessian of
  central differences in 2-D) is below -1% of the largest absolute curvature on the grid: 0 for a convex
  bowl, large for the chaotic landscapes of deep nets without skip connections (Li et al., Figs. 5, 7);
- `land/seconds`: the time the scan (and the directions) took.
"""

import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from research.core.errors import UserError, choices_message
from research.core.evaluator import Evaluator, register
from research.curvature import operators
from research.landscape import directions as directions_lib
from research.landscape.model import BN_MODES, point_model
from research.landscape.scan import ScanResult, scan
from research.training import config as config_lib

KINDS = ("1d", "2d")
DIRECTIONS = ("random", "eigen")
SPLITS = ("eval_train", "test", "valid", "train")
NONCONVEX_TOLERANCE = 0.01  # relative to the largest absolute curvature on the grid


# The domain of each numeric key (`research.training.config.Interval` syntax).
RANGES = {
    "every_steps": "[0, inf); 0: off", "num_points": "[3, inf)", "span": "(0, inf)",
    "num_examples": "[0, inf); 0: all", "chunk_size": "[0, inf)", "stats_examples": "[0, inf)",
    "stats_batch_size": "[1, inf)", "seed": "[0, inf)",
}


def _check(c) -> None:
  config_lib.check_ranges("landscape", c, RANGES)
  if c.kind not in KINDS:
    raise UserError(choices_message("landscape.kind", c.kind, KINDS))
  if c.directions not in DIRECTIONS:
    raise UserError(choices_message("landscape.directions", c.directions, DIRECTIONS))
  if c.normalization not in directions_lib.NORMALIZATIONS:
    raise UserError(choices_message("landscape.normalization", c.normalization,
                                    directions_lib.NORMALIZATIONS))
  if c.bn_mode not in BN_MODES:
    raise UserError(choices_message("landscape.bn_mode", c.bn_mode, BN_MODES))
  if not c.splits:
    raise UserError(f"landscape.splits is empty; valid choices: {', '.join(SPLITS)}")
  for split in c.splits:
    if split not in SPLITS:
      raise UserError(choices_message("landscape.splits entry", split, SPLITS))
  if c.num_points < 3 or c.num_points % 2 == 0:
    raise UserError(f"landscape.num_points = {c.num_points} must be odd and >= 3 (the centre on the grid)")
  if not c.span > 0:
    raise UserError(f"landscape.span = {c.span} must be > 0")
  for name in ("every_steps", "num_examples", "chunk_size", "stats_examples"):
    if c[name] < 0:
      raise UserError(f"landscape.{name} = {c[name]} must be >= 0")
  if c.stats_batch_size < 1:
    raise UserError(f"landscape.stats_batch_size = {c.stats_batch_size} must be >= 1")


def coefficients(num_points: int, span: float) -> np.ndarray:
  """`num_points` evenly spaced values in [-span, span] with the middle one exactly 0."""
  a = np.linspace(-span, span, num_points)
  a[num_points // 2] = 0.0
  return a


def nonconvex_fraction(values: np.ndarray, axes, rel_tol: float = NONCONVEX_TOLERANCE) -> float:
  """Fraction of interior grid points where the loss surface curves down (see the module docstring).

  values: (n,) or (n, m) on the grid of `axes` (evenly spaced). 1-D: second differences; 2-D: the
  smallest eigenvalue of [[f_aa, f_ab], [f_ab, f_bb]] from central differences.
  """
  f = np.asarray(values, np.float64)
  h = [float(a[1] - a[0]) for a in axes]
  if f.ndim == 1:
    lowest = (f[2:] - 2 * f[1:-1] + f[:-2]) / h[0] ** 2
    scale = np.abs(lowest)
  elif f.ndim == 2:
    faa = (f[2:, 1:-1] - 2 * f[1:-1, 1:-1] + f[:-2, 1:-1]) / h[0] ** 2
    fbb = (f[1:-1, 2:] - 2 * f[1:-1, 1:-1] + f[1:-1, :-2]) / h[1] ** 2
    fab = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * h[0] * h[1])
    mean, radius = (faa + fbb) / 2, np.sqrt(((faa - fbb) / 2) ** 2 + fab ** 2)
    lowest = mean - radius
    scale = np.abs(mean) + radius  # the largest absolute eigenvalue
  else:
    raise UserError(f"nonconvex_fraction takes a 1-D or 2-D grid, got {f.ndim} dimensions")
  finite = np.isfinite(lowest)
  if not finite.any():
    return float("nan")
  threshold = -rel_tol * float(scale[finite].max())
  return float(np.mean(lowest[finite] < threshold)) if threshold < 0 else 0.0


def summary_metrics(result: ScanResult) -> dict:
  """`land/...` metrics of a scan centred on the trained point (see the module docstring)."""
  centre = tuple(len(a) // 2 for a in result.axes)
  ends = []
  for j, a in enumerate(result.axes):
    for i in (0, len(a) - 1):
      ends.append(tuple(i if k == j else c for k, c in enumerate(centre)))
  out = {}
  for split, v in result.values.items():
    loss = np.asarray(v["loss"], np.float64)
    out[f"land/loss_{split}"] = float(loss[centre])
    out[f"land/accuracy_{split}"] = float(np.asarray(v["accuracy"])[centre])
    out[f"land/rise_{split}"] = float(np.mean([loss[e] for e in ends]) - loss[centre])
    out[f"land/nonconvex_{split}"] = nonconvex_fraction(loss, result.axes)
  return out


def _subset(split, n: int):
  n = len(split) if n == 0 else min(n, len(split))
  return split.images[:n], split.labels[:n]


def default_config() -> ml_collections.ConfigDict:
  """A loss-landscape scan of the trained parameters; off unless
  at_end or every_steps > 0. `kind` 1d | 2d, `num_points` per axis (odd: the centre is on the grid),
  coefficients in [-span, span] along `directions` (random: Gaussian, `normalization` filter | layer |
  none, Li et al. 2018; eigen: the top Hessian eigenvectors, unit norm), on the first `num_examples`
  examples of each of `splits` (0: all), BatchNorm in `bn_mode` (eval | batch | recompute; recompute
  uses the first `stats_examples` training images in batches of `stats_batch_size`)."""
  return ml_collections.ConfigDict(dict(
      at_end=False, every_steps=0, kind="2d", num_points=11, span=1.0, directions="random",
      normalization="filter", splits=("eval_train", "test"), num_examples=512, chunk_size=512,
      bn_mode="eval", stats_examples=1024, stats_batch_size=256, seed=0))


def build(config: ml_collections.ConfigDict):
  """The landscape `Evaluator` for a training config (`config.landscape`), or None when it is off."""
  c = config.landscape
  if not c.every_steps and not c.at_end:
    return None
  _check(c)

  def measure(ctx) -> dict:
    start = time.time()
    ds = ctx.dataset
    splits = {}
    for name in c.splits:
      images, labels = _subset(getattr(ds, name), c.num_examples)
      if len(images):
        splits[name] = (images, labels)
    if not splits:
      raise UserError(f"landscape.splits {', '.join(c.splits)} are all empty in this dataset")
    chunk = c.chunk_size or max(len(x[0]) for x in splits.values())
    params = ctx.state.params
    num = 1 if c.kind == "1d" else 2
    if c.directions == "random":
      dirs = directions_lib.random_directions(params, c.seed, num, normalization=c.normalization)
    else:
      hessian_bn = "eval" if c.bn_mode == "recompute" else c.bn_mode
      loss_fn, _ = operators.model_functions(ctx.graphdef, ctx.state.model_state, bn_mode=hessian_bn,
                                             preprocess=ds.preprocess, loss_name=ctx.config.loss.name)
      images, labels = _subset(ds.eval_train, c.num_examples)
      chunks = operators.make_chunks(images, labels, c.chunk_size or len(images))
      key = jax.random.fold_in(jax.random.key(c.seed), ctx.step)
      dirs, _ = directions_lib.eigen_directions(loss_fn, params, chunks, num, key=key)
    stats = None
    if c.bn_mode == "recompute":
      stats = np.asarray(ds.train.images[:max(c.stats_examples, c.stats_batch_size)])
    model = point_model(ctx.graphdef, ctx.state.model_state, bn_mode=c.bn_mode, preprocess=ds.preprocess,
                        stats_images=stats, stats_batch_size=c.stats_batch_size)
    axis = coefficients(c.num_points, c.span)
    info = {"source": "tracking", "run": str(ctx.workdir), "step": ctx.step, "kind": c.kind,
            "settings": c.to_dict()}
    result = scan(model, params, dirs, [axis] * num, splits, loss_name=ctx.config.loss.name,
                  chunk_size=chunk, info=info)
    if ctx.is_writer:
      out_dir = Path(ctx.workdir) / "landscape"
      result.save(out_dir / f"step{ctx.step}_{c.kind}{ctx.tag}")
    metrics = summary_metrics(result)
    metrics["land/seconds"] = time.time() - start
    return metrics

  return Evaluator("landscape", measure, every_steps=c.every_steps, at_end=c.at_end)


register('landscape', default_config=default_config, build=build)
