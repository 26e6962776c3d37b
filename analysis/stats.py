"""Statistics over seeds: mean, standard deviation, percentile-bootstrap confidence intervals, Kendall tau.

With few seeds (3-5) a bootstrap interval is crude: it cannot be wider than the spread of the seeds
and is exactly a point when all seeds agree. Reports therefore always state the number of seeds next
to an interval. Resampling is seeded (`seed`), so the same runs give the same intervals.
"""

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats


def _finite(values) -> np.ndarray:
  x = np.asarray(pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce"), np.float64)
  return x[np.isfinite(x)]


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, num_resamples: int = 10000,
                 seed: int = 0, statistic: Callable[[np.ndarray], np.ndarray] = None) -> tuple[float, float]:
  """Percentile bootstrap interval (lo, hi) of a statistic (default: the mean) of finite `values`.

  Resamples the values with replacement `num_resamples` times (Efron & Tibshirani 1993, ch. 13).
  Fewer than 2 values: (nan, nan). `statistic` maps (num_resamples, n) -> (num_resamples,).
  """
  x = _finite(values)
  if len(x) < 2:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  samples = x[rng.integers(0, len(x), size=(num_resamples, len(x)))]
  stats = samples.mean(axis=1) if statistic is None else statistic(samples)
  alpha = (1 - level) / 2
  lo, hi = np.quantile(stats, [alpha, 1 - alpha])
  return float(lo), float(hi)


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], *, level: float = 0.95,
             num_resamples: int = 10000, seed: int = 0) -> tuple[float, float, float]:
  """(ratio of means, lo, hi): mean(numerator) / mean(denominator) with a percentile bootstrap interval,
  the two groups resampled independently (e.g. lambda_max without BatchNorm / with, over seeds).

  Fewer than 2 values in either group: the interval is (nan, nan).
  """
  a, b = _finite(numerator), _finite(denominator)
  ratio = float(a.mean() / b.mean()) if len(a) and len(b) and b.mean() != 0 else float("nan")
  if len(a) < 2 or len(b) < 2:
    return ratio, float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  ma = a[rng.integers(0, len(a), size=(num_resamples, len(a)))].mean(axis=1)
  mb = b[rng.integers(0, len(b), size=(num_resamples, len(b)))].mean(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratios = ma / mb
  ratios = ratios[np.isfinite(ratios)]
  if not len(ratios):
    return ratio, float("nan"), float("nan")
  alpha = (1 - level) / 2
  lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
  return ratio, float(lo), float(hi)


def describe(values: Sequence[float], *, level: float = 0.95, seed: int = 0) -> dict:
  """{n, mean, std, ci_low, ci_high} of the finite values; std is the sample std (ddof=1, nan for n=1)."""
  x = _finite(values)
  n = len(x)
  lo, hi = bootstrap_ci(x, level=level, seed=seed)
  return {"n": n, "mean": float(x.mean()) if n else float("nan"),
          "std": float(x.std(ddof=1)) if n > 1 else float("nan"), "ci_low": lo, "ci_high": hi}


def aggregate(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], *, level: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
  """Long table, one row per (group, metric): the `by` columns, `metric`, n, mean, std, ci_low, ci_high.

  Groups are the distinct values of `by` (typically every override except the seed), in order of
  first appearance; an empty `by` is one group of all rows. Non-finite values are left out (n counts
  the finite ones). Missing metric columns are skipped.
  """
  by = [b for b in by if b in table.columns]
  metrics = [m for m in metrics if m in table.columns]
  rows = []
  groups = table.groupby(by, sort=False, dropna=False) if by else [((), table)]
  for key, group in groups:
    key = key if isinstance(key, tuple) else (key,)
    for m in metrics:
      rows.append(dict(zip(by, key)) | {"metric": m} | describe(group[m], level=level, seed=seed))
  return pd.DataFrame(rows, columns=[*by, "metric", "n", "mean", "std", "ci_low", "ci_high"])


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
  """(tau_b, two-sided p-value, n) over the pairs where both are finite (Kendall 1938; the rank
  correlation Jiang et al. 2020, "Fantastic generalization measures", use). n < 3: (nan, nan, n)."""
  x = np.asarray(pd.to_numeric(pd.Series(list(x)), errors="coerce"), np.float64)
  y = np.asarray(pd.to_numeric(pd.Series(list(y)), errors="coerce"), np.float64)
  ok = np.isfinite(x) & np.isfinite(y)
  n = int(ok.sum())
  if n < 3:
    return float("nan"), float("nan"), n
  res = scipy.stats.kendalltau(x[ok], y[ok])
  return float(res.statistic), float(res.pvalue), n


def difference_ci(a: Sequence[float], b: Sequence[float], *, level: float = 0.95, num_resamples: int = 10000,
                  seed: int = 0) -> tuple[float, float, float]:
  """(mean(a) - mean(b), lo, hi) with a percentile bootstrap interval, groups resampled independently.
  Fewer than 2 values in either group: the interval is (nan, nan)."""
  x, y = _finite(a), _finite(b)
  diff = float(x.mean() - y.mean()) if len(x) and len(y) else float("nan")
  if len(x) < 2 or len(y) < 2:
    return diff, float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  mx = x[rng.integers(0, len(x), size=(num_resamples, len(x)))].mean(axis=1)
  my = y[rng.integers(0, len(y), size=(num_resamples, len(y)))].mean(axis=1)
  alpha = (1 - level) / 2
  lo, hi = np.quantile(mx - my, [alpha, 1 - alpha])
  return diff, float(lo), float(hi)
