"""Programs on abstract shapes and what they cost: `lower(fn, *args) -> Program` (the abstract output by
`jax.eval_shape`, FLOPs from XLA's cost analysis of the lowered, never compiled program), `Cost` (a
program's FLOPs times how often a trial calls it), `Throughput` (FLOPs -> GPU-hours) and the loop's
schedules (`measurement_steps`, `num_evaluations`).

FLOPs are XLA's count for the unoptimized HLO (`jax.stages.Lowered.cost_analysis`): a multiply-add is 2
FLOPs; a loop (`lax.scan`, `while`) counts its body once, so every program here is lowered without one
(the train step's chunks are unrolled on XLA:CPU, evaluator functions are lowered on one chunk and
multiplied by the number of chunks).
"""

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax


@contextlib.contextmanager
def plain_tracer_attribute_errors() -> Iterator[None]:
  """While tracing, a tracer's missing `sharding` attribute raises a plain AttributeError.

  Flax's `Variable.set_value` asks every value a BatchNorm layer writes back in train mode for its
  `sharding` (`getattr(value, "sharding", None)`); on a tracer JAX answers with an AttributeError whose
  message names the value's origin, found by walking the whole trace so far: O(trace) per BatchNorm
  update, quadratic in depth (measured: 60% of the time to trace ResNet-110's train step, 11 of 18 s). The
  message is discarded by `getattr`'s default, so the dry run skips building it; only the text of such an
  error changes. The original property is restored on exit (and nothing is changed if JAX has moved it).
  """
  from jax._src import core  # private: where the property lives in the pinned JAX

  original = getattr(core, "Tracer", None) and core.Tracer.__dict__.get("sharding")
  if not isinstance(original, property):
    yield
    return

  def sharding(self):
    raise AttributeError(f"'sharding' is not available on a tracer ({type(self).__name__})")

  core.Tracer.sharding = property(sharding)
  try:
    yield
  finally:
    core.Tracer.sharding = original


def lanczos_products(k: int) -> int:
  """Products of one Lanczos solve for the k wanted eigenpairs: one Krylov basis of the solver's default
  size (`research.curvature.lanczos.eigenpairs`); no restart counted, warm starts usually need fewer."""
  return max(2 * k + 20, 30)


@dataclasses.dataclass(frozen=True)
class Throughput:
  """The GPU a cost is converted for: `peak_tflops` (TFLOP/s in `precision`) at a sustained
  `utilization`. The default is an A100's float32 peak without TF32 tensor cores (19.5 TFLOP/s) at 40%."""
  name: str = "A100"
  precision: str = "float32"
  peak_tflops: float = 19.5
  utilization: float = 0.4

  def gpu_hours(self, flops: float) -> float:
    return flops / (self.peak_tflops * 1e12 * self.utilization) / 3600.0

  def describe(self) -> str:
    return (f"the {self.name}'s {self.precision} peak of {self.peak_tflops:g} TFLOP/s at "
            f"{self.utilization:.0%} utilization = {self.peak_tflops * self.utilization:g} TFLOP/s sustained")


@dataclasses.dataclass(frozen=True)
class Program:
  """A traced function: its abstract output (a pytree of `jax.ShapeDtypeStruct`) and FLOPs per call."""
  out: Any
  flops: float


def lower(fn: Callable, *args) -> Program:
  """`fn(*args)` on abstract `args`: `jax.eval_shape` of the jitted function (the output's shapes and
  dtypes; any shape error is raised here), then XLA's cost analysis of its lowering (not compiled)."""
  jitted = jax.jit(fn)
  out = jax.eval_shape(jitted, *args)
  analysis = jitted.lower(*args).cost_analysis()
  if isinstance(analysis, list | tuple):  # older jaxlibs: one dict per computation
    analysis = analysis[0] if analysis else None
  flops = float((analysis or {}).get("flops", float("nan")))
  return Program(out, flops if flops >= 0 else float("nan"))


@dataclasses.dataclass(frozen=True)
class Cost:
  """One kind of work of a trial: `calls` calls of a program of `flops` FLOPs each; `note` says how the
  number of calls was counted."""
  what: str
  flops: float
  calls: float
  note: str = ""

  @property
  def total(self) -> float:
    return self.flops * self.calls


def measurement_steps(every_steps: int, at_end: bool, total_steps: int) -> list[int]:
  """The steps at which the training loop calls an evaluator: step 0 (the initialization) and the
  multiples of `every_steps` when it is > 0, and the last step when `at_end`
  (`research.core.evaluator.Evaluator.due` and `research.training.loop`)."""
  steps = list(range(0, total_steps + 1, every_steps)) if every_steps else []
  if at_end and total_steps not in steps:
    steps.append(total_steps)
  return steps


def num_evaluations(eval_every: int, total_steps: int) -> int:
  """How often the loop evaluates the splits: at the multiples of `eval_every` (0: never) and at the end."""
  if not eval_every:
    return 1
  return total_steps // eval_every + (1 if total_steps % eval_every else 0)
