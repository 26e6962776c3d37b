"""Reading a Hessian spectrum: the structure of its top eigenvalues, and a spectral density from stochastic
Lanczos quadrature (SLQ) nodes and weights with the resolution it has. Pure NumPy, shared by
`research.curvature` (which computes the eigenvalues, nodes and weights) and `analysis` (which reads them
from a run's records and `.npz`).

- `largest_gap(values)`: where the top-k eigenvalues (Lanczos) fall off: the position and size of their
  largest relative gap, the count of outliers above the bulk that Sagun et al. 2017 (arXiv:1706.04454) and
  Papyan 2019 (arXiv:1901.08244) read from the top of the spectrum.
- `smooth`, `log_density`: the density (Gaussian kernel on the nodes); `resolution`: what a quadrature of
  m steps and n probes can and cannot show (`GHORBANI`: the settings of Ghorbani et al. 2019).
- `outliers`: a rule on SLQ Ritz values kept for old readers only; not a reported quantity (see there).

The density functions take a quadrature `result`: anything with `nodes` and `weights`, (num_probes,
num_steps) arrays as `research.curvature.density.slq` returns them, and `size`, the operator's dimension d.
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


# Ghorbani, Krishnan & Xiao 2019 (arXiv:1901.10159) SLQ settings, under this project's config names
# (`--config.curvature.density_steps=90`, ...): m = 90 Lanczos steps per probe; their code's README
# (google/spectral-density) says 80-90 steps are enough for most models and runs one probe per Lanczos job
# (`--lanczos_draws=1`), jobs in parallel: how many probes each figure averages is not stated there.
# Their density code smooths with a Gaussian kernel of variance 1e-5 * max(1, node range).
GHORBANI = {"density_probes": 1, "density_steps": 90, "kernel_variance": 1e-5}


def largest_gap(values) -> tuple[int | None, float]:
  """(i, lambda_i / lambda_{i+1}) of the largest relative gap among the top eigenvalues.

  values: (k,) top eigenvalues (Lanczos, any order; sorted descending here). Over the positions
  i = 1 .. k-1 (1-based) where lambda_{i+1} > 0, the ratio lambda_i / lambda_{i+1} >= 1 (the gap on a log
  scale); i is the position of the largest ratio (the first one on ties). With C outliers above a bulk the
  gap sits at i = C (Sagun et al. 2017, arXiv:1706.04454; about C, or C - 1 from the rank C - 1 of the
  softmax output Hessian, Papyan 2019, arXiv:1901.08244), which the top-k can show only when k > C: an
  index at k - 1 may mean k is too small. (None, nan) with fewer than 3 positive values (no two gaps to
  compare).
  """
  v = np.sort(np.asarray(values, np.float64).ravel())[::-1]
  if not np.isfinite(v).all():
    raise UserError(f"eigenvalues must be finite, got {v.tolist()}")
  v = v[v > 0]  # descending: the positive values are the first ones, at their own positions
  if len(v) < 3:
    return None, float("nan")
  ratios = v[:-1] / v[1:]
  i = int(np.argmax(ratios))
  return i + 1, float(ratios[i])


def resolution(result: Quadrature, kernel_width: float | None = None) -> dict:
  """What an SLQ run of m steps and n probes can resolve, as a record: numbers and one sentence.

  m Lanczos steps give m nodes per probe over the range [min, max] of the spectrum, so features of the
  density narrower than about (max - min) / m (`node_spacing`) are not resolved, and a smoothing kernel
  narrower than that draws single nodes rather than a density (`kernel_width`: the width used, default
  the node spacing). At most m distinct eigenvalues appear per probe; an extreme node approximates an
  eigenvalue only when that eigenvalue is separated from the rest, and the weight of an isolated
  eigenvalue averages 1/d (d the operator size) with a chi-square(1) spread per probe (Ubaru, Chen & Saad
  2017): its mass in the density is noise.
  """
  live = result.weights > 0
  if not live.any():
    raise UserError("the quadrature has no node with positive weight")
  num_probes, num_steps = result.nodes.shape
  lo, hi = float(result.nodes[live].min()), float(result.nodes[live].max())
  spacing = (hi - lo) / num_steps
  width = spacing if kernel_width is None else float(kernel_width)
  d = int(result.size)
  text = (f"{num_probes} probe{'s' if num_probes > 1 else ''} of m = {num_steps} Lanczos steps over nodes "
          f"in [{lo:.3g}, {hi:.3g}]: density features narrower than (max - min) / m = {spacing:.2g} are not "
          f"resolved and eigenvalues closer than that merge; at most {num_steps} distinct eigenvalues appear "
          f"per probe, so no count of separated eigenvalues can be read from the nodes (use the Lanczos "
          f"top-k and its largest gap); an isolated eigenvalue's weight is 1/d = {1 / d:.2g} on average "
          f"with a chi-square spread per probe, so its height in the density is noise")
  if width < spacing:
    text += f"; the kernel width {width:.2g} is below the node spacing: single nodes show as spikes"
  text += ("; with one probe the density has no error bar." if num_probes == 1 else
           f"; the spread over the {num_probes} probes gives the error of the density's moments.")
  return {"num_steps": int(num_steps), "num_probes": int(num_probes), "size": d, "node_range": [lo, hi],
          "node_spacing": spacing, "kernel_width": width, "max_distinct_eigenvalues": int(num_steps),
          "isolated_eigenvalue_weight": 1.0 / d, "cannot_resolve": text}


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs) -> np.ndarray:
  order = np.argsort(values)
  cdf = np.cumsum(weights[order])
  cdf = cdf / cdf[-1]
  return np.array([values[order][min(np.searchsorted(cdf, q), len(cdf) - 1)] for q in qs])


def outliers(result: Quadrature, threshold: float | None = None, *, gap: float = 0.5) -> Outliers:
  """Ritz values above a gap over the SLQ bulk. NOT a reported quantity: kept importable for old readers.

  With a few probes of tens of steps the pooled nodes of the bulk are sparse, so the rule below puts the
  "bulk edge" inside the bulk and counts most Ritz values as outliers (also at initialization), and the
  count can never exceed the number of Lanczos steps. Report `largest_gap` of the Lanczos top-k instead.

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
