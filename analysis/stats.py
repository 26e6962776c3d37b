"""Statistics over seeds: t and Welch intervals, a bootstrap interval for large samples, Kendall tau.

Seeds are few (2-5), so intervals come from the t distribution: Student's t for one group, Welch's
unequal-variance t with the Welch-Satterthwaite degrees of freedom for a difference of two groups
(Welch 1947), and Welch's interval on the logarithms for a ratio (a ratio of geometric means). These keep
their stated coverage for normal data at any n >= 2, where a percentile bootstrap over 2-3 seeds cannot
be wider than the spread of the seeds (a 2-vs-2 bootstrap interval is the extreme cross-differences of
the four values). The bootstrap is therefore offered only from 5 values on (Efron & Tibshirani 1993,
ch. 13). Every interval carries its method, its seed counts and, for t and Welch, a two-sided p-value.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

NAN = float("nan")
BOOTSTRAP_MIN = 5


@dataclasses.dataclass(frozen=True)
class Interval:
  """An estimate with a two-sided interval over seeds.

  estimate: mean, difference of means, or ratio (of geometric means); lo, hi: the interval (nan when it
  cannot be computed, then `reason` says why); method: "t", "welch", "welch-log" or "bootstrap"; n: finite
  values per group, e.g. (3,) or (3, 3); null: the value of "no effect" (0 for means and differences, 1
  for ratios); p_value: two-sided test of estimate == null (t / Welch), nan for the bootstrap.
  """
  estimate: float
  lo: float
  hi: float
  level: float
  method: str
  n: tuple
  null: float
  p_value: float = NAN
  reason: str = ""

  def seeds(self) -> str:
    """'1 seed', '3 seeds' or '3 vs 2 seeds'."""
    if len(self.n) == 1:
      return f"{self.n[0]} seed" + ("" if self.n[0] == 1 else "s")
    return " vs ".join(str(k) for k in self.n) + " seeds"

  @property
  def finite(self) -> bool:
    """Whether lo and hi are numbers."""
    return math.isfinite(self.lo) and math.isfinite(self.hi)

  def as_dict(self) -> dict:
    """The fields as plain JSON values (for a Finding's `values` and findings.json)."""
    return dataclasses.asdict(self) | {"n": list(self.n)}

  @classmethod
  def from_dict(cls, d: dict) -> "Interval":
    """Inverse of `as_dict`."""
    return cls(**{**d, "n": tuple(d["n"])})


def _finite(values) -> np.ndarray:
  x = np.asarray(pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce"), np.float64)
  return x[np.isfinite(x)]


def _t_based(estimate: float, se: float, df: float, level: float, method: str, n: tuple, null: float,
             transform: Callable[[float], float] = float) -> Interval:
  """estimate +- t_{df, (1+level)/2} se and the two-sided p-value of estimate == null, on the scale where
  the estimate is t-distributed; `transform` maps estimate and ends back (exp for a ratio)."""
  if se == 0:  # no spread, no interval: a point is not a 95% statement about the next seed
    return Interval(transform(estimate), NAN, NAN, level, method, n, transform(null), NAN,
                    "the values are identical within each group (zero spread: no interval)")
  q = float(scipy.stats.t.ppf((1 + level) / 2, df))
  p = float(2 * scipy.stats.t.sf(abs(estimate - null) / se, df))
  lo, hi = transform(estimate - q * se), transform(estimate + q * se)
  return Interval(transform(estimate), lo, hi, level, method, n, transform(null), p)


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
  """Mean of the finite values with Student's t interval (n - 1 degrees of freedom) and the p-value of
  mean == 0. Fewer than 2 values: lo = hi = nan."""
  x = _finite(values)
  n = len(x)
  mean = float(x.mean()) if n else NAN
  if n < 2:
    return Interval(mean, NAN, NAN, level, "t", (n,), 0.0, reason="an interval needs at least 2 seeds")
  return _t_based(mean, float(x.std(ddof=1) / math.sqrt(n)), n - 1, level, "t", (n,), 0.0)


def _welch(x: np.ndarray, y: np.ndarray, level: float, method: str, null: float,
           transform: Callable[[float], float] = float) -> Interval:
  nx, ny = len(x), len(y)
  est = float(x.mean() - y.mean()) if nx and ny else NAN
  if nx < 2 or ny < 2:
    return Interval(transform(est), NAN, NAN, level, method, (nx, ny), transform(null),
                    reason="an interval needs at least 2 seeds per group")
  vx, vy = x.var(ddof=1) / nx, y.var(ddof=1) / ny
  se = math.sqrt(vx + vy)
  df = (vx + vy) ** 2 / (vx**2 / (nx - 1) + vy**2 / (ny - 1)) if se > 0 else 1.0
  return _t_based(est, se, df, level, method, (nx, ny), null, transform)


def difference_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
  """mean(a) - mean(b) with Welch's interval (Welch-Satterthwaite degrees of freedom) and Welch's p-value;
  as scipy.stats.ttest_ind(a, b, equal_var=False). Fewer than 2 finite values in a group: nan."""
  return _welch(_finite(a), _finite(b), level, "welch", 0.0)


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
  """exp(mean log a - mean log b), the ratio of geometric means, with Welch's interval on the logarithms
  mapped back by exp (null 1). Any non-positive value: estimate and interval nan, `reason` says so."""
  x, y = _finite(a), _finite(b)
  bad = int((x <= 0).sum() + (y <= 0).sum())
  if bad:
    return Interval(NAN, NAN, NAN, level, "welch-log", (len(x), len(y)), 1.0,
                    reason=f"a ratio needs positive values ({bad} non-positive)")
  return _welch(np.log(x), np.log(y), level, "welch-log", 0.0, math.exp)


def compared(a: Sequence[float], b: Sequence[float], compare: str,
             level: float = 0.95) -> tuple[Interval, float, float, float] | None:
  """Group a against group b as a "ratio" (`ratio_interval`) or a "difference" (`difference_interval`):
  (the interval, the effect on the scale the interval is Welch on: mean log a - mean log b or mean a -
  mean b, and the seed-to-seed standard deviations of a and b on that scale). None with fewer than 2
  finite values in a group or, for a ratio, a non-positive value."""
  if compare not in ("ratio", "difference"):
    raise ValueError(f"compare must be 'ratio' or 'difference', not {compare!r}")
  x, y = _finite(a), _finite(b)
  if len(x) < 2 or len(y) < 2 or (compare == "ratio" and ((x <= 0).any() or (y <= 0).any())):
    return None
  if compare == "ratio":
    iv, x, y = ratio_interval(x, y, level=level), np.log(x), np.log(y)
  else:
    iv = difference_interval(x, y, level=level)
  return iv, float(x.mean() - y.mean()), float(x.std(ddof=1)), float(y.std(ddof=1))


def bootstrap_interval(values: Sequence[float], level: float = 0.95,
                       statistic: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0,
                       num_resamples: int = 10000) -> Interval:
  """Percentile bootstrap interval of a statistic (default: the mean) of the finite values (Efron &
  Tibshirani 1993, ch. 13); `statistic` maps (num_resamples, n) -> (num_resamples,). Resampling is seeded.
  Fewer than 5 values: nan (a percentile interval of so few cannot exceed their spread)."""
  x = _finite(values)
  n = len(x)
  stat = (lambda s: s.mean(axis=1)) if statistic is None else statistic
  est = float(stat(x[None, :])[0]) if n else NAN
  if n < BOOTSTRAP_MIN:
    return Interval(est, NAN, NAN, level, "bootstrap", (n,), 0.0,
                    reason=f"bootstrap needs at least {BOOTSTRAP_MIN} values per group")
  rng = np.random.default_rng(seed)
  s = stat(x[rng.integers(0, n, size=(num_resamples, n))])
  alpha = (1 - level) / 2
  lo, hi = np.quantile(s, [alpha, 1 - alpha])
  return Interval(est, float(lo), float(hi), level, "bootstrap", (n,), 0.0)


def describe(values: Sequence[float], *, level: float = 0.95) -> dict:
  """{n, mean, std, ci_low, ci_high} of the finite values: std is the sample std (ddof=1, nan for n = 1),
  the interval Student's t (`mean_interval`)."""
  iv = mean_interval(values, level)
  x = _finite(values)
  return {"n": len(x), "mean": iv.estimate, "std": float(x.std(ddof=1)) if len(x) > 1 else NAN,
          "ci_low": iv.lo, "ci_high": iv.hi}


def aggregate(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], *,
              level: float = 0.95) -> pd.DataFrame:
  """Long table, one row per (group, metric): the `by` columns, `metric`, n, mean, std, ci_low, ci_high
  (Student's t interval of the mean).

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
      rows.append(dict(zip(by, key)) | {"metric": m} | describe(group[m], level=level))
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
