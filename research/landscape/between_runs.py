"""Linear interpolation between the final checkpoints of two run directories (Keskar et al. 2017, Fig. 3:
small-batch to large-batch solution; Goodfellow et al. 2015; mode connectivity between seeds).

`interpolate_runs(run_a, run_b, ...)` loads both checkpoints (`research.training.load_run`), checks that
they share the architecture and the data, and evaluates theta(t) = (1 - t) theta_a + t theta_b on the
first `num_examples` examples of each split with `research.landscape.interpolate` (loss, accuracy,
barrier heights). BatchNorm: `bn_mode="auto"` recomputes the statistics at every point (`"recompute"`,
from the first `stats_examples` training images) when the model has BatchNorm layers, since neither
endpoint's running statistics fit the points between, and is `"eval"` otherwise (then exact: the model
has no statistics). The result's info names both runs and their checkpoint steps.
"""

from pathlib import Path

import jax
import numpy as np
from flax import nnx

from research.core.errors import UserError, choices_message
from research.landscape.interpolation import InterpolationResult, interpolate
from research.landscape.model import BN_MODES, point_model
from research.training import load_run

SPLITS = ("eval_train", "test", "valid", "train")


def pair_name(run_a: str | Path, run_b: str | Path) -> str:
  """`<name of a>__<name of b>`: the file stem of a pair's result."""
  return f"{Path(run_a).name}__{Path(run_b).name}"


def _same(config_a, config_b, section: str) -> bool:
  return config_a[section].to_json_best_effort() == config_b[section].to_json_best_effort()


def interpolate_runs(run_a: str | Path, run_b: str | Path, *, ts=None,
                     splits: tuple[str, ...] = ("eval_train", "test"), num_examples: int = 1000,
                     chunk_size: int | None = None, bn_mode: str = "auto", stats_examples: int = 1024,
                     stats_batch_size: int = 256) -> InterpolationResult:
  """Loss and accuracy along the segment from run_a's final parameters (t = 0) to run_b's (t = 1).

  ts: the t values (default 21 in [0, 1]; must contain 0 and 1). num_examples: the first n examples of
  each split (0: all). The data of run_a is used; the runs must have the same data and model configs
  (data order and seed aside: `data.options.seed` defaults to the run's seed, so pair runs of one seed).
  """
  if bn_mode not in (*BN_MODES, "auto"):
    raise UserError(choices_message("BatchNorm mode", bn_mode, (*BN_MODES, "auto")))
  for split in splits:
    if split not in SPLITS:
      raise UserError(choices_message("split", split, SPLITS))
  config_a, ds, graphdef, state_a, step_a = load_run(run_a)
  config_b, _, graphdef_b, state_b, step_b = load_run(run_b)
  for section in ("data", "model"):
    if not _same(config_a, config_b, section):
      raise UserError(f"{run_a} and {run_b} differ in their {section} config; interpolation needs the "
                      "same architecture and data")
  if config_a.data.options.get("seed", config_a.seed) != config_b.data.options.get("seed", config_b.seed):
    raise UserError(f"{run_a} and {run_b} use different data seeds ({config_a.seed} vs {config_b.seed}); "
                    "pair runs of the same seed")
  if config_a.loss.name != config_b.loss.name:
    raise UserError(f"{run_a} and {run_b} train different losses ({config_a.loss.name} vs "
                    f"{config_b.loss.name})")
  has_bn = len(jax.tree.leaves(nnx.filter_state(state_a.model_state, nnx.BatchStat))) > 0
  mode = ("recompute" if has_bn else "eval") if bn_mode == "auto" else bn_mode
  data = {}
  for name in splits:
    split = getattr(ds, name)
    n = len(split) if num_examples == 0 else min(num_examples, len(split))
    if n:
      data[name] = (split.images[:n], split.labels[:n])
  if not data:
    raise UserError(f"the splits {', '.join(splits)} are empty in {run_a}'s data")
  stats = np.asarray(ds.train.images[:max(stats_examples, stats_batch_size)]) if mode == "recompute" else None
  model = point_model(graphdef, state_a.model_state, bn_mode=mode, preprocess=ds.preprocess,
                      stats_images=stats, stats_batch_size=stats_batch_size)
  info = {"run_a": str(run_a), "run_b": str(run_b), "step_a": step_a, "step_b": step_b,
          "batch_size_a": config_a.training.batch_size, "batch_size_b": config_b.training.batch_size,
          "seed_a": config_a.seed, "seed_b": config_b.seed}
  chunk = chunk_size or max(len(x[0]) for x in data.values())
  return interpolate(model, state_a.params, state_b.params, data, ts=ts, info=info,
                     loss_name=config_a.loss.name, chunk_size=chunk)
