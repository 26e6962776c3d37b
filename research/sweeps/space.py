"""Search spaces: lists of overrides `{dotted config key: value}`, one dict per trial.

A config file's `get_sweep(arg)` returns such a list (STYLE.md 8: a sweep is data). The builders
compose: `product(grid({"schedule.lr": [0.1, 0.01]}), seeds(3))` is 6 trials, the learning rate varying
slowest. Random and Halton search map points of the unit cube through per-key distributions
(`Uniform`, `LogUniform`, `IntUniform`, `Choice`); Halton points (scrambled, scipy.stats.qmc) cover the
cube more evenly than random ones for the same number of trials (Bergstra & Bengio 2012 make the case
for random over grid search; AlgoPerf tunes with quasi-random points).

Values are plain Python scalars (or tuples of them), so they go to JSON and to `--config.k=v` as they are.
"""

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import qmc

from research.core.errors import UserError

Override = dict[str, object]


def _plain(value):
  """numpy scalars to Python; lists to tuples (configs hold tuples)."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, list | tuple):
    return tuple(_plain(v) for v in value)
  return value


def _axes(axes: Mapping[str, Sequence]) -> dict[str, list]:
  out = {}
  for key, values in axes.items():
    if not isinstance(key, str) or not key:
      raise UserError(f"sweep keys are dotted config keys like 'schedule.lr', got {key!r}")
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
      raise UserError(f"sweep axis {key!r} needs a list of values, got {values!r}")
    if len(values) == 0:
      raise UserError(f"sweep axis {key!r} has no values")
    out[key] = [_plain(v) for v in values]
  return out


def grid(axes: Mapping[str, Sequence]) -> list[Override]:
  """Every combination (the first key varies slowest): `grid({"a": [1, 2], "b": [3, 4]})` is 4 trials."""
  axes = _axes(axes)
  return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def zipped(axes: Mapping[str, Sequence]) -> list[Override]:
  """The i-th values together: `zipped({"a": [1, 2], "b": [3, 4]})` is [{a: 1, b: 3}, {a: 2, b: 4}]."""
  axes = _axes(axes)
  lengths = {k: len(v) for k, v in axes.items()}
  if len(set(lengths.values())) > 1:
    raise UserError(f"zipped axes need equal lengths, got {lengths}")
  return [dict(zip(axes, combo)) for combo in zip(*axes.values())]


def seeds(num_or_values: int | Sequence[int], key: str = "seed") -> list[Override]:
  """`seeds(3)` is seeds 0, 1, 2; `seeds([5, 7])` those seeds."""
  values = range(num_or_values) if isinstance(num_or_values, int) else num_or_values
  return grid({key: list(values)})


def product(*sweeps: Sequence[Override]) -> list[Override]:
  """Every combination of trials of the given sweeps, merged (the first sweep varies slowest)."""
  out = []
  for combo in itertools.product(*sweeps):
    merged = {}
    for overrides in combo:
      shared = merged.keys() & overrides.keys()
      if shared:
        raise UserError(f"product of sweeps that set the same keys: {', '.join(sorted(shared))}")
      merged |= overrides
    out.append(merged)
  return out


def concat(*sweeps: Sequence[Override]) -> list[Override]:
  """The trials of each sweep, one after the other (e.g. a grid for SGD and another for Adam)."""
  return [dict(o) for sweep in sweeps for o in sweep]


@dataclasses.dataclass(frozen=True)
class Uniform:
  """Uniform on [low, high]."""
  low: float
  high: float

  def map(self, u: np.ndarray) -> list:
    return [float(self.low + x * (self.high - self.low)) for x in u]


@dataclasses.dataclass(frozen=True)
class LogUniform:
  """log(value) uniform on [log low, log high], for learning rates and weight decay (low > 0)."""
  low: float
  high: float

  def __post_init__(self):
    if not 0 < self.low <= self.high:
      raise UserError(f"LogUniform needs 0 < low <= high, got {self.low}, {self.high}")

  def map(self, u: np.ndarray) -> list:
    lo, hi = math.log(self.low), math.log(self.high)
    return [float(min(max(math.exp(lo + x * (hi - lo)), self.low), self.high)) for x in u]


@dataclasses.dataclass(frozen=True)
class IntUniform:
  """Integers low..high (both included), equally likely."""
  low: int
  high: int

  def map(self, u: np.ndarray) -> list:
    n = self.high - self.low + 1
    return [int(self.low + min(int(x * n), n - 1)) for x in u]


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of `values`, equally likely."""
  values: tuple

  def __init__(self, values: Sequence):
    if len(values) == 0:
      raise UserError("Choice needs at least one value")
    object.__setattr__(self, "values", tuple(_plain(v) for v in values))

  def map(self, u: np.ndarray) -> list:
    n = len(self.values)
    return [self.values[min(int(x * n), n - 1)] for x in u]


Distribution = Uniform | LogUniform | IntUniform | Choice


def _from_unit(space: Mapping[str, Distribution], points: np.ndarray) -> list[Override]:
  """Trials from points of the unit cube, shape (num_trials, len(space)), one column per key."""
  columns = {}
  for j, (key, dist) in enumerate(space.items()):
    if not hasattr(dist, "map"):
      raise UserError(f"search space key {key!r} needs a Uniform, LogUniform, IntUniform or Choice, got "
                      f"{dist!r}")
    columns[key] = dist.map(points[:, j])
  return [{k: columns[k][i] for k in space} for i in range(points.shape[0])]


def random_search(space: Mapping[str, Distribution], num_trials: int, seed: int = 0) -> list[Override]:
  """`num_trials` independent uniform points of the cube through `space`; the same for the same seed."""
  points = np.random.default_rng(seed).random((num_trials, len(space)))
  return _from_unit(space, points)


def halton(space: Mapping[str, Distribution], num_trials: int, seed: int = 0) -> list[Override]:
  """The first `num_trials` points of a scrambled Halton sequence (scramble seeded) through `space`."""
  points = qmc.Halton(d=len(space), scramble=True, rng=seed).random(num_trials)
  return _from_unit(space, points)
