"""The one place that decides how a report words a comparison: from an interval to "shows",
"contradicts", "no difference" or "inconclusive".

A claim is a direction (`>` or `<` a threshold, by default the interval's null: 0 for a difference, 1 for
a ratio) or an equivalence (`=`: within +-margin of the threshold). The verdict follows the whole interval
only: it shows the claim when the interval lies on the claimed side, contradicts it when it lies on the
other side, and is inconclusive otherwise or when there is no interval (too few seeds). Every text names
the interval, its method and the seed counts.
"""

import dataclasses
import math
from collections.abc import Callable

import scipy.stats

from analysis.stats import Interval

VERDICTS = ("shows", "contradicts", "no difference", "inconclusive")
METHODS = {"t": "t", "welch": "Welch", "welch-log": "Welch", "bootstrap": "bootstrap"}
# Formats for `unit`/`fmt` (judge(iv, ">", **POINTS)): accuracy fractions as signed points, ratios as 0.50x.
POINTS = {"unit": "points", "fmt": lambda x: f"{100 * x:+.2f}"}
TIMES = {"unit": "x", "fmt": lambda x: f"{x:.2f}"}


@dataclasses.dataclass(frozen=True)
class Judgement:
  """verdict: one of VERDICTS; text: a predicate to follow "this", e.g. "shows it (95% Welch interval +0.45
  to +2.45 points, 3 vs 3 seeds, p = 0.01)"."""
  verdict: str
  text: str


def _default_fmt(interval: Interval) -> Callable[[float], str]:
  if interval.null == 0:
    return lambda x: f"{x:+.3g}"
  return lambda x: f"{x:.3g}"


def _unit(unit: str) -> str:
  return unit if not unit or unit in ("x", "×", "%") or unit[0] in " ,;" else " " + unit


def _name(interval: Interval) -> str:
  return f"{100 * interval.level:.4g}% {METHODS.get(interval.method, interval.method)} interval"


def _range(interval: Interval, unit: str, fmt) -> str:
  fmt = fmt or _default_fmt(interval)
  return f"{_name(interval)} {fmt(interval.lo)} to {fmt(interval.hi)}{_unit(unit)}"


def _p(interval: Interval) -> str:
  p = interval.p_value
  if not math.isfinite(p):
    return ""
  return ", p < 0.0001" if p < 1e-4 else f", p = {p:.2g}"


def interval_text(interval: Interval, unit: str = "", fmt: Callable[[float], str] | None = None) -> str:
  """'95% Welch interval +0.45 to +2.45 points (3 vs 3 seeds)'; without an interval,
  'no 95% interval with 1 vs 2 seeds (an interval needs at least 2 seeds per group)'."""
  if not interval.finite:
    return f"no {100 * interval.level:.4g}% interval with {interval.seeds()} ({interval.reason})"
  return f"{_range(interval, unit, fmt)} ({interval.seeds()})"


def judge(interval: Interval, expected: str, *, threshold: float | None = None, margin: float | None = None,
          unit: str = "", fmt: Callable[[float], str] | None = None) -> Judgement:
  """The verdict on a claim about `interval`'s quantity and a predicate to follow "this".

  expected ">" or "<": the claim is estimate > (<) threshold (default interval.null): the whole interval on
  the claimed side -> "shows"; on the other side -> "contradicts"; else "inconclusive". expected "=": the
  claim is no difference within +-margin of threshold (margin required): interval inside the band -> "no
  difference"; entirely outside it on one side -> "contradicts"; else "inconclusive". No interval (too few
  seeds, non-positive values for a ratio) -> "inconclusive" naming the reason and the seed counts.
  `unit` and `fmt` format the interval's ends (e.g. unit="points", fmt=lambda x: f"{x:+.2f}").
  """
  if expected not in (">", "<", "="):
    raise ValueError(f"expected must be one of '>', '<', '=', not {expected!r}")
  if expected == "=" and (margin is None or not margin >= 0):
    raise ValueError("expected '=' needs a margin >= 0 (the band of 'no difference')")
  t = interval.null if threshold is None else float(threshold)
  show = fmt or _default_fmt(interval)
  if not interval.finite:
    return Judgement("inconclusive", f"is inconclusive with {interval.seeds()} ({interval.reason})")
  lo, hi = interval.lo, interval.hi
  # the p-value tests the null (0 or 1); against another threshold it would mislead: left out
  pv = _p(interval) if t == interval.null else ""
  tail = f"{interval.seeds()}{pv}"
  rng = _range(interval, unit, fmt)
  if expected == "=":
    band = (t - margin, t + margin)
    band_text = f"{show(band[0])} to {show(band[1])}{_unit(unit)}"
    if band[0] <= lo and hi <= band[1]:
      return Judgement("no difference", f"shows no difference beyond ±{margin:g} ({rng} inside {band_text}, "
                                        f"{tail})")
    if hi < band[0] or lo > band[1]:
      return Judgement("contradicts", f"contradicts it ({rng} outside {band_text}, {tail})")
    return Judgement("inconclusive", f"is inconclusive with {interval.seeds()} ({rng} overlaps the edge of "
                                     f"{band_text}{pv})")
  above, below = lo > t, hi < t
  if (above and expected == ">") or (below and expected == "<"):
    return Judgement("shows", f"shows it ({rng}, {tail})")
  if above or below:
    return Judgement("contradicts", f"contradicts it ({rng}, {tail})")
  at = f"{t:g}" if t == interval.null else show(t) + _unit(unit)
  return Judgement("inconclusive",
                   f"is inconclusive with {interval.seeds()} ({rng} contains {at}{pv})")


def judge_correlation(tau: float, p_value: float, n: int, expected: str, *, level: float = 0.95) -> Judgement:
  """The verdict on a claimed sign of a rank correlation (Kendall's tau over n runs): significant at
  1 - level (two-sided p) with the claimed sign -> "shows"; with the other sign -> "contradicts"; else
  "inconclusive" (also with fewer than 3 runs)."""
  if expected not in (">", "<"):
    raise ValueError(f"expected must be one of '>', '<', not {expected!r}")
  if not (math.isfinite(tau) and math.isfinite(p_value)):
    return Judgement("inconclusive", f"is inconclusive with {n} runs (a rank correlation needs at least 3)")
  stat = f"Kendall's τ = {tau:.2f}, {n} runs, p = {p_value:.2g}"
  if p_value < 1 - level:
    if (tau > 0) == (expected == ">"):
      return Judgement("shows", f"shows it ({stat})")
    return Judgement("contradicts", f"contradicts it ({stat})")
  return Judgement("inconclusive", f"is inconclusive with {n} runs ({stat} >= {1 - level:.2g})")


# why more seeds are not the answer when an undecided estimate lies on the far side of the claim
AGAINST = ("the estimate lies on the other side of the claim, so more seeds would show the claim only if the "
           "true effect differs from this estimate")


def why_undecided(effect: float, sa: float, sb: float | None, na: int, nb: int, level: float, null: str,
                  per: str) -> str:
  """Why a `level` interval around `effect` reaches `null` (the effect measured from `null`: a difference,
  a log-ratio, or the distance to a threshold or margin edge; with `sb` None a one-group mean of `na`
  values, with seed standard deviations `sa`, `sb` on the same scale): the seeds `per` group the spread
  would need (normal approximation, n = z^2 (s_a^2 + s_b^2) / effect^2), or, when the effect is already
  several standard errors, the t quantile of too few seeds (Welch degrees of freedom for two groups)."""
  if not effect:
    return f"the estimate is at {null}"
  z = float(scipy.stats.norm.ppf((1 + level) / 2))
  spread2 = sa * sa + (sb * sb if sb is not None else 0.0)
  need = math.ceil(z * z * spread2 / (effect * effect))
  if need > 1000:
    return (f"the effect is {abs(effect) / math.sqrt(spread2 / (1 if sb is None else 2)):.2f} seed-to-seed "
            f"standard deviations: no effect of a size seeds could resolve at this spread ({need:,} seeds "
            f"{per} for a {100 * level:.4g}% interval, normal approximation)")
  if sb is None:
    var = sa * sa / na
    df = na - 1
  else:
    va, vb = sa * sa / na, sb * sb / nb
    var = va + vb
    df = var ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if var else 0.0
  if need > min(na, nb) or not var:
    return (f"at this spread a {100 * level:.4g}% interval would narrow to the size of this effect with "
            f"about {need} seeds {per}, even odds of excluding {null} if the effect is real (normal "
            "approximation, n = z² (s_a² + s_b²) / effect²)")
  t = float(scipy.stats.t.ppf((1 + level) / 2, df))
  unequal = sb is not None and df < 0.75 * (na + nb - 2)  # Welch's df well below the pooled na + nb - 2
  return (f"the effect is {abs(effect) / math.sqrt(var):.1f} standard errors, but with {na}"
          + (f" vs {nb}" if sb is not None else "") + " seeds"
          + (" of unequal spread (Welch)" if unequal else "") + f" the t quantile at this level is {t:.1f} "
          f"({df:.1f} degrees of freedom; {z:.2f} with many seeds): the interval is wide for want of degrees "
          "of freedom")
