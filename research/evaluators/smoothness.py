"""Trajectory smoothness tracked during training (Santurkar et al. 2018, arXiv:1805.11604, section 3.1 and
Figure 4): an `Evaluator` owning the `smoothness` section of the run config (`default_config()` here;
`every_steps = 0` and `at_end = False`: off).

At each of its steps t it takes the gradient g of the training loss (`config.loss.name`; label smoothing
and weight decay are not part of it) on a fixed probe set (the first `num_examples` examples of `split`)
and evaluates the loss and gradient at w_t - c eta_t g for each step multiple c of `multiples`, with
eta_t the learning rate (`lr_source`: "schedule", the schedule's value at step t, i.e. the one the next
update uses; "peak", `schedule.lr`). This is the plain gradient step (Santurkar et al. probe along the
gradient); with momentum or Adam the optimizer's actual update points elsewhere. Only the trainable
parameters (`params.*`) move; BatchNorm running statistics stay as they are.

BatchNorm (`bn_mode`): "batch" (the default) normalizes with batch statistics, the loss training
descends; the probe set is then cut into ghost batches of `chunk_size` examples (0: as many as a training
step normalizes over, `training_chunk`: SAM's micro-batch, `training.chunk_size` or the batch size), each
normalized with its own statistics, the loss being their mean, and it must consist of whole ghost
batches (a ragged last one would be normalized with its padding). "eval" uses the running
statistics (the loss a deterministic function of the parameters); `chunk_size` is then only memory.

Metrics in metrics.jsonl (losses in the loss's units: nats for cross-entropy; parameter-space distances
in the parameters' units):
- `smooth/loss_range`: max_c L(w_c) - min_c L(w_c), the variation of the loss along the step (Fig. 4a);
- `smooth/grad_change`: max_c ||grad L(w_c) - g||_2, gradient predictiveness (Fig. 4b);
- `smooth/beta`: max_c ||grad L(w_c) - g|| / (c eta ||g||), effective beta-smoothness (Fig. 4c);
- `smooth/grad_norm`: ||g||; `smooth/loss`: L(w_t) on the probe set; `smooth/lr`: eta_t;
- `smooth/seconds`: the time the measurement took.
At a step where eta_t = 0 (a warm-up's first step) there is no step to probe: only `smooth/lr` and
`smooth/seconds` are logged. Every measurement also writes `smoothness/step<S><tag>.json` (atomically):
the settings (split, examples, bn_mode, ghost batch size, multiples, lr and its source) and the values
per multiple (losses, gradient changes, betas), from which Figure 4's shaded ranges are drawn.
"""

import time
from pathlib import Path

import ml_collections

from research.core import rundir
from research.core.errors import UserError, choices_message
from research.core.evaluator import Evaluator, register
from research.curvature import operators
from research.measures import smoothness
from research.models.functional import BN_MODES
from research.training import config as config_lib
from research.training import loop, schedules

SPLITS = ("train", "eval_train")
LR_SOURCES = ("schedule", "peak")

# The domain of each numeric key (`research.training.config.Interval` syntax; a tuple's entries each).
RANGES = {
    "every_steps": "[0, inf); 0: off", "num_examples": "[0, inf); 0: all",
    "chunk_size": "[0, inf); 0: the examples a training step normalizes over", "multiples": "(0, inf)",
}


def default_config() -> ml_collections.ConfigDict:
  """Trajectory smoothness on a fixed probe set; off unless every_steps > 0 or at_end."""
  return ml_collections.ConfigDict(dict(
      every_steps=0, at_end=False, split="train", num_examples=512, chunk_size=0, bn_mode="batch",
      multiples=smoothness.DEFAULT_MULTIPLES, lr_source="schedule"))


def _check(c) -> None:
  config_lib.check_ranges("smoothness", c, RANGES)
  if c.split not in SPLITS:
    raise UserError(choices_message("smoothness.split", c.split, SPLITS))
  if c.bn_mode not in BN_MODES:
    raise UserError(choices_message("smoothness.bn_mode", c.bn_mode, BN_MODES))
  if c.lr_source not in LR_SOURCES:
    raise UserError(choices_message("smoothness.lr_source", c.lr_source, LR_SOURCES))
  numbers = [isinstance(m, int | float) and not isinstance(m, bool) for m in c.multiples]
  ok = len(numbers) > 0 and all(numbers)
  if not ok:
    raise UserError(f"smoothness.multiples must be a non-empty tuple of positive step multiples of the "
                    f"learning rate, got {tuple(c.multiples)!r}")


def build(config: ml_collections.ConfigDict):
  """The smoothness `Evaluator` for a training config (`config.smoothness`), or None when it is off."""
  c = config.smoothness
  _check(c)
  if not c.every_steps and not c.at_end:
    return None
  memory = {"fns": None, "schedule": None}

  def learning_rate(ctx) -> float:
    if c.lr_source == "peak":
      return float(ctx.config.schedule.lr)
    if memory["schedule"] is None:
      spe, _ = loop.schedule_lengths(ctx.config, ctx.dataset)
      memory["schedule"] = schedules.make_schedule(ctx.config.schedule, total_steps=ctx.total_steps,
                                                   steps_per_epoch=spe)
    return float(memory["schedule"](ctx.step))

  def measure(ctx) -> dict:
    start = time.time()
    split = getattr(ctx.dataset, c.split)
    chunk = c.chunk_size or training_chunk(ctx.config, len(ctx.dataset.train))
    chunks = operators.first_examples(split, c.num_examples, chunk)
    if c.bn_mode == "batch" and chunks.num_examples % chunks.chunk_size:
      raise UserError(f"smoothness: with bn_mode 'batch' the probe set ({chunks.num_examples} examples of "
                      f"{c.split}) must be whole ghost batches of {chunks.chunk_size}; set "
                      f"smoothness.num_examples to a multiple of it")
    lr = learning_rate(ctx)
    if lr == 0.0:
      return {"smooth/lr": 0.0, "smooth/seconds": time.time() - start}
    if memory["fns"] is None:  # once per run: its compiled products are reused at every step
      memory["fns"] = operators.StateFunctions(ctx.graphdef, ctx.dataset, bn_mode=c.bn_mode,
                                                loss_name=ctx.config.loss.name)
    loss_fn, params = memory["fns"].loss_fn, memory["fns"].tree(ctx.state.params, ctx.state.model_state)
    r = smoothness.gradient_step_smoothness(loss_fn, params, chunks, lr=lr, multiples=tuple(c.multiples),
                                            param_filter=_is_parameter)
    metrics = {"smooth/loss_range": r["loss_range"], "smooth/grad_change": r["grad_change_max"],
               "smooth/beta": r["beta_smoothness"], "smooth/grad_norm": r["grad_norm"],
               "smooth/loss": r["loss"], "smooth/lr": lr}
    if ctx.is_writer:
      settings = {"split": c.split, "bn_mode": c.bn_mode, "lr_source": c.lr_source, "step": ctx.step,
                  "ghost_batch_size": chunks.chunk_size if c.bn_mode == "batch" else None,
                  "loss": ctx.config.loss.name}
      record = {"run": str(ctx.workdir), "source": "posthoc" if ctx.tag else "tracking",
                "settings": settings, "results": r, "metrics": metrics}
      out_dir = ctx.workdir / "smoothness"
      out_dir.mkdir(parents=True, exist_ok=True)
      rundir.write_json_atomic(Path(out_dir / f"step{ctx.step}{ctx.tag}.json"), record)
    metrics["smooth/seconds"] = time.time() - start
    return metrics

  return Evaluator("smoothness", measure, every_steps=c.every_steps, at_end=c.at_end)


def training_chunk(config: ml_collections.ConfigDict, num_train: int) -> int:
  """The number of examples a training step normalizes BatchNorm over (`research.training.loop`'s chunk):
  SAM's micro-batch when it has one, else `training.chunk_size`, else the batch (the training set when
  full-batch)."""
  t, sam = config.training, config.optimizer.sam
  batch = num_train if t.full_batch else t.batch_size
  chunk = sam.micro_batch if (sam.rho > 0 and sam.micro_batch > 0) else (t.chunk_size or batch)
  return min(chunk, batch)


def _is_parameter(name: str) -> bool:
  return name.startswith("params.")


register("smoothness", default_config=default_config, build=build)
