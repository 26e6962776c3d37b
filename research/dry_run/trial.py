"""One trial on abstract shapes: `Planner().trial(config) -> TrialPlan`.

For a run config it builds, without data and without running anything: the dataset's split sizes and
shapes (`research.data.describe`), the seeded model and optimizer state under `jax.eval_shape` of the
loop's own `build_state` (parameter count, state shapes), the loop's train and eval steps
(`research.training.loop.make_steps`) traced on batches of the loop's shapes (the train state it returns
must be the one it takes: it is donated), and every evaluator the config switches on
(`research.dry_run.evaluators`). Each program is lowered and costed by XLA (`costs.lower`); a trial's
cost is the sum over its programs of FLOPs per call x calls.

A `Planner` remembers what it traced: two trials whose configs differ only in values that are constants
of the same program (`VALUE_KEYS`: seed, learning rate, weight decay, momentum, SAM's rho, dropout
rate, label noise, label smoothing; zero and non-zero kept apart, as zero may switch code off) share
their programs, so a grid over such values is traced once per distinct program.
"""

import dataclasses
import functools
import json
import math
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from research import data
from research.backend import xla
from research.core import evaluator as evaluator_lib
from research.core.errors import UserError
from research.dry_run import evaluators as plans
from research.dry_run.costs import Cost, Program, lower, num_evaluations, plain_tracer_attribute_errors
from research.training import loop
from research.training.config import validate

# research.training.step unrolls up to this many chunks on XLA:CPU (a rolled loop would count once)
UNROLLED_CHUNKS = 16
VALUE_KEYS = ("seed", "schedule.lr", "optimizer.weight_decay", "optimizer.momentum", "optimizer.sam.rho",
              "model.knobs.dropout", "data.options.label_noise", "loss.label_smoothing")
METRICS = ("loss", "accuracy", "grad_norm", "param_norm", "update_norm", "lr")


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
  return out


def structure(config: ml_collections.ConfigDict, section: str = "") -> str:
  """The config (or one section) as canonical JSON with `VALUE_KEYS` reduced to zero / non-zero (the
  seed dropped): equal for configs that trace to the same programs."""
  flat = _flat(config.to_dict() if hasattr(config, "to_dict") else dict(config), section and f"{section}.")
  out = {}
  for k, v in flat.items():
    if k == "seed":
      continue
    out[k] = ("non-zero" if v else "zero") if k in VALUE_KEYS else v
  return json.dumps(out, sort_keys=True, default=str)


@dataclasses.dataclass
class TrialPlan:
  """A trial's abstract build: sizes, shapes, what was checked, and its costs."""
  num_params: int
  total_steps: int
  steps_per_epoch: int
  batch_size: int
  chunk_size: int
  train_batch: dict  # name -> "(k, c, H, W, C) uint8"
  dataset: dict  # AbstractDataset.metadata()
  costs: list[Cost]
  checked: list[str]
  notes: list[str]

  @property
  def flops(self) -> float:
    return float(sum(c.total for c in self.costs))

  def flops_of(self, prefix: str) -> float:
    return float(sum(c.total for c in self.costs if c.what.startswith(prefix)))


@dataclasses.dataclass
class Setting:
  """What a trial's evaluators see, abstractly (the dry run's `research.core.evaluator.Context`)."""
  config: ml_collections.ConfigDict
  dataset: data.AbstractDataset
  graphdef: Any
  state: Any  # TrainState of jax.ShapeDtypeStruct
  total_steps: int
  steps_per_epoch: int
  model_key: str
  planner: "Planner"
  checked: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  def check(self, line: str) -> None:
    self.checked.append(line)

  def note(self, line: str) -> None:
    if line not in self.notes:
      self.notes.append(line)


def _shapes(tree) -> list[tuple]:
  return [(tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree)]


def _describe(b: dict) -> dict:
  return {k: f"{tuple(v.shape)} {v.dtype}" for k, v in b.items()}


class Planner:
  """Plans trials (`trial`), remembering every program it traced (`memo`)."""

  def __init__(self):
    self._memo: dict = {}

  def memo(self, key, build: Callable[[], Any]):
    if key not in self._memo:
      self._memo[key] = build()
    return self._memo[key]

  def trial(self, config: ml_collections.ConfigDict) -> TrialPlan:
    """Builds the trial of `config` on abstract shapes; raises UserError (or JAX's error) when any part
    would fail."""
    with plain_tracer_attribute_errors():
      return self._trial(config)

  def _trial(self, config: ml_collections.ConfigDict) -> TrialPlan:
    if not xla.on_cpu():
      raise UserError("the dry run counts FLOPs on XLA:CPU's code paths (unrolled chunks): run it with "
                      "JAX_PLATFORMS=cpu and without RESEARCH_DEVICE_PATHS=accelerator")
    config = validate(config)
    options = config.data.options.to_dict()
    options.setdefault("seed", config.seed)
    ds = data.describe(config.data.name, **options)
    spe, total = loop.schedule_lengths(config, ds)
    batch_size, chunk = loop.batch_chunking(config, len(ds.train))
    num_chunks = -(-batch_size // chunk)
    model_key = json.dumps([structure(config.model, "model"), ds.input_shape, ds.num_classes,
                            ds.normalization])
    init_key = ("init", model_key, structure(config.optimizer, "optimizer"),
                structure(config.schedule, "schedule"))

    def init():
      held = {}

      def build():
        graphdef, state, optimizer, schedule = loop.build_state(config, ds, total, spe)
        held.update(graphdef=graphdef, optimizer=optimizer, schedule=schedule)
        return state

      state = jax.eval_shape(build)
      return held["graphdef"], state, held["optimizer"], held["schedule"]

    graphdef, state, optimizer, schedule = self.memo(init_key, init)
    num_params = int(sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)))
    setting = Setting(config, ds, graphdef, state, total, spe, model_key, self)
    setting.check(f"model {config.model.name}: {num_params:,} parameters; state of "
                  f"{len(jax.tree.leaves(state))} arrays")

    train_fn, eval_fn, constants = loop.make_steps(config, ds, graphdef, optimizer, schedule)
    train_fn = functools.partial(train_fn, constants=constants)
    eval_fn = functools.partial(eval_fn, constants=constants)
    train_batch = plans.batch((num_chunks, chunk), ds.input_shape)
    t = config.training
    train_key = init_key + (structure(config.loss, "loss"), structure(config.data.augment, "augment"),
                            structure(config.optimizer.sam, "sam"), t.full_batch, batch_size, chunk)

    def train_program() -> Program:
      if num_chunks <= UNROLLED_CHUNKS:
        p = lower(train_fn, state, train_batch)
      else:  # a rolled loop counts its body once: one chunk's cost from two unrolled lowerings
        one = lower(train_fn, state, plans.batch((1, chunk), ds.input_shape))
        two = lower(train_fn, state, plans.batch((2, chunk), ds.input_shape))
        out = jax.eval_shape(train_fn, state, train_batch)
        p = Program(out, one.flops + (num_chunks - 1) * (two.flops - one.flops))
      new_state, metrics = p.out
      if jax.tree.structure(new_state) != jax.tree.structure(state) or _shapes(new_state) != _shapes(state):
        raise UserError("the train step returns a state that differs from the one it takes (shapes or "
                        "structure): it could not be donated")
      if set(metrics) != set(METRICS) or any(m.shape != () for m in metrics.values()):
        raise UserError(f"the train step's metrics are {sorted(metrics)}, expected scalars {list(METRICS)}")
      return p

    train = self.memo(train_key, train_program)
    setting.check(f"train step: batch {batch_size} as {num_chunks} x {chunk} "
                  f"({_describe(train_batch)['image']}), state in = state out, {total:,} steps")

    e = config.eval
    eval_every = e.every_steps or (e.every_epochs * spe if e.every_epochs else 0)
    splits = {name: len(getattr(ds, name)) for name in e.splits if len(getattr(ds, name))}

    def eval_program() -> Program:
      p = lower(eval_fn, state.params, state.model_state, plans.batch((e.batch_size,), ds.input_shape))
      if p.out["class_count"].shape != (ds.num_classes,) or p.out["loss"].shape != ():
        raise UserError(f"the eval step returns {_describe(p.out)}, expected per-class sums of "
                        f"({ds.num_classes},)")
      return p

    evaluation = self.memo(("eval", model_key, config.loss.name, e.batch_size), eval_program)
    eval_batches = sum(-(-n // e.batch_size) for n in splits.values())
    num_evals = num_evaluations(eval_every, total)
    described = ", ".join(f"{k} ({v})" for k, v in splits.items())
    setting.check(f"eval step: batches of {e.batch_size} on {described}, {num_evals} evaluations")
    costs = [Cost("train steps", train.flops, total),
             Cost("evaluations", evaluation.flops, num_evals * eval_batches,
                  f"{num_evals} x {eval_batches} batches of {e.batch_size}")]

    for ev in evaluator_lib.build_all(config):
      plan = plans.PLANS.get(ev.name)
      if plan is None:
        setting.note(f"evaluator {ev.name!r}: no dry-run plan (not checked, cost not counted)")
        continue
      costs += plan(setting, ev)
    if not ds.exact:
      setting.note("data.options.drop_test_duplicates: split sizes are upper bounds")
    return TrialPlan(num_params=num_params, total_steps=total, steps_per_epoch=spe, batch_size=batch_size,
                     chunk_size=chunk, train_batch=_describe(train_batch), dataset=ds.metadata(), costs=costs,
                     checked=setting.checked, notes=setting.notes)
