"""Linear interpolation between two solutions and the height of the barrier between them.

theta(t) = (1 - t) theta_a + t theta_b, evaluated on a grid of t (default 21 points in [0, 1], and
optionally beyond) with `scan` along the direction theta_b - theta_a. Pairs of interest: init to final
(Goodfellow et al. 2015), small batch to large batch (Keskar et al. 2017), seed A to seed B (mode
connectivity).

Barrier height, for a metric E (the loss, or the error 1 - accuracy), over the grid points t in [0, 1]:

  B = max_t [ E(theta(t)) - ((1 - t) E(theta_a) + t E(theta_b)) ]

the definition of Entezari et al. 2022 ("The Role of Permutation Invariance in Linear Mode
Connectivity", Eq. 1): the largest rise above the straight line between the endpoint values. It is 0
when E is convex along the segment (and never negative: t = 0 gives 0). Also reported,
`barrier_mean`: max_t E(theta(t)) - (E(theta_a) + E(theta_b)) / 2, the "instability" of Frankle et
al. 2020 ("Linear Mode Connectivity and the Lottery Ticket Hypothesis"), which they use for the test
error. Garipov et al. 2018 measure the same kind of rise along a learned curve rather than a
segment. Both are maxima over the sampled t, so lower bounds of the supremum on the segment; the
arg max is recorded.
"""

import dataclasses
from pathlib import Path

import numpy as np

from research.core.errors import UserError
from research.landscape.directions import difference
from research.landscape.scan import ScanResult, scan


def barrier(ts: np.ndarray, values: np.ndarray) -> dict:
  """Barrier heights of `values` (E at each t) over the points with 0 <= t <= 1; needs t = 0 and 1."""
  ts, values = np.asarray(ts, np.float64), np.asarray(values, np.float64)
  ends = [np.flatnonzero(np.isclose(ts, t, rtol=0, atol=1e-12)) for t in (0.0, 1.0)]
  if not all(len(e) for e in ends):
    raise UserError("the interpolation grid must contain t = 0 and t = 1 to measure a barrier")
  e0, e1 = values[ends[0][0]], values[ends[1][0]]
  inside = (ts >= 0.0) & (ts <= 1.0)
  rise = values[inside] - ((1.0 - ts[inside]) * e0 + ts[inside] * e1)
  i = int(np.argmax(rise))
  return {"barrier": float(rise[i]), "t_max": float(ts[inside][i]),
          "barrier_mean": float(values[inside].max() - 0.5 * (e0 + e1)),
          "start": float(e0), "end": float(e1)}


@dataclasses.dataclass(frozen=True)
class InterpolationResult:
  """`curve`: the 1-D scan along theta_b - theta_a (values[split]["loss" | "accuracy"] at `ts`);
  `barriers[split]["loss" | "error"]`: the dict of `barrier`."""
  curve: ScanResult
  barriers: dict[str, dict[str, dict]]

  @property
  def ts(self) -> np.ndarray:
    return self.curve.axes[0]

  def to_dict(self) -> dict:
    return self.curve.to_dict() | {"barriers": self.barriers}

  def save(self, path: str | Path) -> tuple[Path, Path]:
    """`path`.json and `path`.npz as `ScanResult.save`, the barriers in the JSON and its info."""
    return dataclasses.replace(self.curve, info=self.curve.info | {"barriers": self.barriers}).save(path)


def interpolate(model, params_a, params_b, splits: dict, *, ts=None, info: dict | None = None,
                **options) -> InterpolationResult:
  """Loss and accuracy along the segment from params_a (t = 0) to params_b (t = 1), and barriers.

  ts: the t values (default 21 points in [0, 1]; may extend beyond, e.g. np.linspace(-0.5, 1.5, 41),
  which must still contain 0 and 1). `options` go to `scan` (loss_name, points_per_batch, chunk_size,
  shard). With BatchNorm, `point_model(..., bn_mode="recompute")` is usually what is wanted: running
  statistics of either endpoint do not fit the points between (Frankle et al. 2020 recompute them).
  """
  ts = np.linspace(0.0, 1.0, 21) if ts is None else np.asarray(ts, np.float64).ravel()
  if not (np.isclose(ts, 0.0, rtol=0, atol=1e-12).any() and np.isclose(ts, 1.0, rtol=0, atol=1e-12).any()):
    raise UserError("the interpolation grid ts must contain t = 0 and t = 1 to measure a barrier")
  direction = difference(params_a, params_b)
  curve = scan(model, params_a, [direction], [ts], splits, info=(info or {}) | {"kind": "interpolation"},
               **options)
  barriers = {name: {"loss": barrier(ts, v["loss"]), "error": barrier(ts, 1.0 - v["accuracy"])}
              for name, v in curve.values.items()}
  return InterpolationResult(curve, barriers)
