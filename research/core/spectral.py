"""Reading a spectral density from stochastic Lanczos quadrature nodes and weights: smoothing and the
outliers above the bulk. Pure NumPy, shared by `research.curvature.density` (which computes the nodes)
and `analysis` (which reads them from a run's `.npz`).

Each function takes a quadrature `result`: anything with `nodes` and `weights`, (num_probes, num_steps)
arrays as `research.curvature.density.slq` returns them (`outliers` also reads `size`, the operator's
dimension d).
"""

import dataclasses
from typing import Protocol

import numpy as np

from research.core.errors import UserError


class Quadrature(Protocol):
  """SLQ nodes and weights, (num_probes, num_steps), and the operator's dimension."""
  nodes: np.ndarray
  weights: np.ndarray
  size: int


@dataclasses.dataclass(frozen=True)
class Outliers:
  """Eigenvalues separated above the bulk, as seen by SLQ (see `outliers` for the rule)."""
  count: int  # max over probes of the Ritz values above `threshold`: a lower bound on the true count
  threshold: float  # the bulk edge used (inf when no gap was found)
  values: np.ndarray  # (count,) descending: mean over the probes that reach `count` of their top Ritz values
  per_probe: np.ndarray  # (num_probes,) Ritz values above the threshold, per probe
  estimated_count: float  # d * mean_probes(weight above threshold): unbiased for the count, but noisy

  def to_dict(self) -> dict:
    return {"count": int(self.count), "threshold": float(self.threshold), "values": self.values.tolist(),
            "per_probe": self.per_probe.tolist(), "estimated_count": float(self.estimated_count)}


def _gaussian_mixture(points: np.ndarray, centers: np.ndarray, weights: np.ndarray,
                      sigma: float) -> np.ndarray:
  """sum over probes (rows) and nodes of weights * N(points; center, sigma^2) / num_probes."""
  if not (np.isfinite(sigma) and sigma > 0):
    raise UserError(f"sigma must be a positive number, got {sigma!r}")
  points = np.asarray(points, np.float64)
  if points.ndim != 1:
    raise UserError(f"the grid must be 1-D, got shape {points.shape}")
  density = np.zeros(points.shape)
  for c, w in zip(centers, weights):  # one probe at a time: (grid, num_steps) memory
    z = (points[:, None] - c[None, :]) / sigma
    density += np.exp(-0.5 * z ** 2) @ w
  return density / (len(centers) * sigma * np.sqrt(2 * np.pi))


def smooth(result: Quadrature, grid: np.ndarray, sigma: float) -> np.ndarray:
  """Spectral density (grid,) per unit eigenvalue: Gaussian kernel of width sigma on each node.

  Averaged over probes; integrates to 1 over the real line (on `grid` when it covers the nodes +- 5
  sigma). Multiply by d for eigenvalues per unit.
  """
  return _gaussian_mixture(grid, result.nodes, result.weights, sigma)


def log_density(result: Quadrature, grid_log10: np.ndarray, sigma: float, *,
                floor: float | None = None) -> np.ndarray:
  """Density (grid,) of log10(lambda) per unit log10, for positive semi-definite operators.

  Nodes below `floor` (tiny, zero or negative: rounding or genuinely negative eigenvalues) are clipped
  to it before the log, so their mass shows as a bump at log10(floor) rather than vanishing. Default
  floor: 10 ** grid_log10[0], the left end of the grid. sigma is in decades. The clipped mass is
  `(result.weights * (result.nodes < floor)).sum(1).mean()`.
  """
  grid_log10 = np.asarray(grid_log10, np.float64)
  if grid_log10.ndim != 1 or grid_log10.size == 0:
    raise UserError(f"grid_log10 must be a non-empty 1-D grid, got shape {grid_log10.shape}")
  floor = 10.0 ** grid_log10[0] if floor is None else float(floor)
  if not floor > 0:
    raise UserError(f"floor must be positive, got {floor!r}")
  return _gaussian_mixture(grid_log10, np.log10(np.maximum(result.nodes, floor)), result.weights, sigma)


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs) -> np.ndarray:
  order = np.argsort(values)
  cdf = np.cumsum(weights[order])
  cdf = cdf / cdf[-1]
  return np.array([values[order][min(np.searchsorted(cdf, q), len(cdf) - 1)] for q in qs])


def outliers(result: Quadrature, threshold: float | None = None, *, gap: float = 0.5) -> Outliers:
  """Eigenvalues separated above the bulk of the spectrum.

  Rule. The bulk edge `threshold`, unless given: pool the nodes of all probes (weight > 0) with their
  weights (the SLQ estimate of the spectral distribution, in which k outliers weigh only ~k/d); take the
  bulk width s = q90 - q10 of it; scan the pooled nodes upward from its median, and put the threshold in
  the middle of the first gap between consecutive nodes wider than gap * s (s at least sqrt(eps) max
  |node|). No such gap: no outliers (threshold = inf).
  Count: per probe, the Ritz values above the threshold; `count` is the maximum over probes. By Cauchy
  interlacing the j-th largest Ritz value is <= lambda_j, so each probe's count is <= the true number of
  eigenvalues above the threshold, and isolated eigenvalues are found in few steps whatever their
  (chi-square, often tiny) weight, which is why weights are not used for counting.
  """
  live = result.weights > 0
  if threshold is None:
    values = result.nodes[live]
    mass = result.weights[live]
    q10, q50, q90 = _weighted_quantiles(values, mass, (0.1, 0.5, 0.9))
    width = max(q90 - q10, np.sqrt(np.finfo(np.float64).eps) * np.abs(values).max())
    upper = np.unique(values[values >= q50])
    gaps = np.diff(upper)
    wide = np.flatnonzero(gaps > gap * width)
    threshold = float((upper[wide[0]] + upper[wide[0] + 1]) / 2) if wide.size else float("inf")
  above = live & (result.nodes > threshold)
  per_probe = above.sum(axis=1)
  count = int(per_probe.max())
  top = [np.sort(row[a])[::-1] for row, a, n in zip(result.nodes, above, per_probe) if n == count]
  values = np.mean(top, axis=0) if count else np.zeros(0)
  estimated = float(result.size * np.sum(result.weights * above, axis=1).mean())
  return Outliers(count, float(threshold), values, per_probe, estimated)
