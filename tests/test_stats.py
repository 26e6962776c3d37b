"""analysis/stats.py intervals against scipy and closed forms, their coverage by simulation, and every
branch of analysis/wording.judge."""

import math

import numpy as np
import pytest
import scipy.stats

from analysis import stats, wording

A = np.array([85.1, 86.2, 86.0, 85.5])
B = np.array([84.0, 84.9, 85.3])


def test_mean_interval_matches_scipy_t():
  iv = stats.mean_interval(list(A) + [float("nan")])
  lo, hi = scipy.stats.t.interval(0.95, len(A) - 1, loc=A.mean(), scale=scipy.stats.sem(A))
  assert (iv.lo, iv.hi) == pytest.approx((lo, hi), rel=1e-12)
  assert iv.estimate == pytest.approx(A.mean()) and iv.n == (4,) and iv.method == "t" and iv.null == 0.0
  assert iv.p_value == pytest.approx(scipy.stats.ttest_1samp(A, 0.0).pvalue, rel=1e-10)
  assert iv.seeds() == "4 seeds"
  one = stats.mean_interval([3.0])
  assert one.estimate == 3.0 and math.isnan(one.lo) and math.isnan(one.hi) and one.reason
  assert one.seeds() == "1 seed"


def test_difference_interval_matches_welch():
  iv = stats.difference_interval(A, B)
  res = scipy.stats.ttest_ind(A, B, equal_var=False)
  ci = res.confidence_interval(0.95)
  assert iv.estimate == pytest.approx(A.mean() - B.mean())
  assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high), rel=1e-10)
  assert iv.p_value == pytest.approx(res.pvalue, rel=1e-10)
  assert iv.method == "welch" and iv.n == (4, 3) and iv.seeds() == "4 vs 3 seeds"
  # Hand computation: Welch-Satterthwaite degrees of freedom and the t quantile.
  va, vb = A.var(ddof=1) / 4, B.var(ddof=1) / 3
  df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
  half = scipy.stats.t.ppf(0.975, df) * math.sqrt(va + vb)
  assert iv.hi - iv.lo == pytest.approx(2 * half, rel=1e-12)
  # Too few values in a group: no interval, a reason.
  short = stats.difference_interval([1.0], [1.0, 2.0])
  assert math.isnan(short.lo) and "2 seeds" in short.reason and short.n == (1, 2)


def test_welch_hand_computed_example():
  # a = 1, 2, 3 (mean 2, variance 1), b = 4, 6, 8 (mean 6, variance 4): standard error sqrt(1/3 + 4/3),
  # Welch-Satterthwaite df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17, t = -4 / sqrt(5/3).
  iv = stats.difference_interval([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])
  se, df = math.sqrt(5 / 3), 50 / 17
  assert iv.estimate == -4.0
  assert iv.hi - iv.lo == pytest.approx(2 * scipy.stats.t.ppf(0.975, df) * se, rel=1e-12)
  assert iv.p_value == pytest.approx(2 * scipy.stats.t.cdf(-4 / se, df), rel=1e-12)


def test_ratio_interval_is_exp_of_welch_on_logs():
  a, b = np.array([10.0, 12.0, 11.0]), np.array([20.0, 22.0, 25.0])
  iv = stats.ratio_interval(a, b)
  logs = stats.difference_interval(np.log(a), np.log(b))
  assert iv.estimate == pytest.approx(math.exp(logs.estimate))
  assert iv.estimate == pytest.approx(scipy.stats.gmean(a) / scipy.stats.gmean(b))
  assert (iv.lo, iv.hi) == pytest.approx((math.exp(logs.lo), math.exp(logs.hi)), rel=1e-12)
  assert iv.p_value == pytest.approx(logs.p_value) and iv.null == 1.0 and iv.method == "welch-log"
  bad = stats.ratio_interval([1.0, -2.0], [1.0, 2.0])
  assert math.isnan(bad.estimate) and math.isnan(bad.lo) and "non-positive" in bad.reason


def test_bootstrap_interval_needs_five_values():
  rng = np.random.default_rng(1)
  x = rng.normal(3.0, 1.0, size=400)
  iv = stats.bootstrap_interval(x)
  half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))  # normal-theory interval of the mean
  assert (iv.lo, iv.hi) == pytest.approx((x.mean() - half, x.mean() + half), abs=0.02)
  assert iv.method == "bootstrap" and math.isnan(iv.p_value)
  med = stats.bootstrap_interval(x, statistic=lambda s: np.median(s, axis=1))
  assert med.estimate == pytest.approx(np.median(x)) and med.lo < med.estimate < med.hi
  few = stats.bootstrap_interval([1.0, 2.0, 3.0, 4.0])
  assert math.isnan(few.lo) and few.reason == "bootstrap needs at least 5 values per group"


def test_welch_covers_at_the_stated_rate_and_a_two_seed_bootstrap_does_not():
  rng = np.random.default_rng(0)
  draws, covered = 2000, 0
  for _ in range(draws):
    iv = stats.difference_interval(rng.normal(1.0, 1.0, 3), rng.normal(0.0, 2.0, 3))
    covered += iv.lo <= 1.0 <= iv.hi
  assert 0.93 <= covered / draws <= 0.97
  # Contrast: the percentile bootstrap of a 2-vs-2 difference of means (what the reports used to print
  # as a "95% CI") lies between the extreme cross-differences of the four values and covers far less.
  hits = 0
  for _ in range(400):
    a, b = rng.normal(1.0, 1.0, 2), rng.normal(0.0, 1.0, 2)
    ia, ib = rng.integers(0, 2, (2000, 2)), rng.integers(0, 2, (2000, 2))
    lo, hi = np.quantile(a[ia].mean(1) - b[ib].mean(1), [0.025, 0.975])
    hits += lo <= 1.0 <= hi
  assert hits / 400 < 0.85


def test_describe_and_aggregate_use_t_intervals():
  d = stats.describe([1.0, 2.0, 4.0, float("nan")])
  iv = stats.mean_interval([1.0, 2.0, 4.0])
  assert d["n"] == 3 and (d["ci_low"], d["ci_high"]) == (iv.lo, iv.hi)
  assert d["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1), rel=1e-12)


def test_interval_round_trips_through_a_dict():
  iv = stats.difference_interval(A, B)
  assert stats.Interval.from_dict(iv.as_dict()) == iv
  assert iv.as_dict()["n"] == [4, 3]


def _iv(lo, hi, *, null=0.0, n=(3, 3), p=0.01, reason=""):
  return stats.Interval((lo + hi) / 2, lo, hi, 0.95, "welch", n, null, p, reason)


@pytest.mark.parametrize("lo, hi, expected, kw, verdict", [
    (0.45, 2.45, ">", {}, "shows"),
    (0.45, 2.45, "<", {}, "contradicts"),
    (-2.45, -0.45, "<", {}, "shows"),
    (-2.45, -0.45, ">", {}, "contradicts"),
    (-0.04, 1.70, ">", {}, "inconclusive"),
    (-0.04, 1.70, "<", {}, "inconclusive"),
    (0.0, 1.70, ">", {}, "inconclusive"),  # touching the threshold is not beyond it
    (0.45, 2.45, ">", {"threshold": 1.0}, "inconclusive"),
    (1.2, 2.45, ">", {"threshold": 1.0}, "shows"),
    (-0.3, 0.4, "=", {"margin": 0.5}, "no difference"),
    (-0.3, 0.6, "=", {"margin": 0.5}, "inconclusive"),
    (0.6, 0.9, "=", {"margin": 0.5}, "contradicts"),
    (-0.9, -0.6, "=", {"margin": 0.5}, "contradicts"),
    (0.7, 1.3, "=", {"margin": 0.5, "threshold": 1.0}, "no difference"),
])
def test_judge_branches(lo, hi, expected, kw, verdict):
  j = wording.judge(_iv(lo, hi), expected, **kw)
  assert j.verdict == verdict and j.verdict in wording.VERDICTS
  assert "3 vs 3 seeds" in j.text and "95% Welch interval" in j.text
  if verdict != "inconclusive":  # the p-value tests the null: shown only when the threshold is the null
    assert ("p = 0.01" in j.text) == (kw.get("threshold", 0.0) == 0.0)


def test_judge_texts():
  j = wording.judge(_iv(0.45, 2.45), ">", unit="points", fmt=lambda x: f"{x:+.2f}")
  assert j.text == "shows it (95% Welch interval +0.45 to +2.45 points, 3 vs 3 seeds, p = 0.01)"
  j = wording.judge(_iv(-0.04, 1.70, n=(2, 2), p=0.26), ">", unit="points", fmt=lambda x: f"{x:+.2f}")
  assert j.text == ("is inconclusive with 2 vs 2 seeds (95% Welch interval -0.04 to +1.70 points contains 0, "
                    "p = 0.26)")
  assert wording.interval_text(_iv(0.45, 2.45), "points", lambda x: f"{x:+.2f}") == (
      "95% Welch interval +0.45 to +2.45 points (3 vs 3 seeds)")
  r = wording.judge(_iv(0.37, 0.70, null=1.0), "<", **wording.TIMES)
  assert r.verdict == "shows" and "0.37 to 0.70x" in r.text


def test_judge_without_an_interval_and_bad_input():
  iv = stats.difference_interval([1.0], [2.0, 3.0])
  j = wording.judge(iv, ">")
  assert j.verdict == "inconclusive" and "1 vs 2 seeds" in j.text and iv.reason in j.text
  assert wording.judge(stats.ratio_interval([1.0, 0.0], [1.0, 2.0]), ">").verdict == "inconclusive"
  with pytest.raises(ValueError, match="margin"):
    wording.judge(_iv(0.1, 0.2), "=")
  with pytest.raises(ValueError, match="expected"):
    wording.judge(_iv(0.1, 0.2), "above")


@pytest.mark.parametrize("tau, p, expected, verdict", [
    (0.8, 0.001, ">", "shows"), (0.8, 0.001, "<", "contradicts"), (0.3, 0.2, ">", "inconclusive"),
    (float("nan"), float("nan"), ">", "inconclusive")])
def test_judge_correlation(tau, p, expected, verdict):
  assert wording.judge_correlation(tau, p, 8, expected).verdict == verdict


def test_zero_spread_gives_no_interval_and_no_verdict():
  """Identical seeds within each group (an accuracy on a fixed set, a memorized 100%): no interval, so
  the wording cannot say 'shows'."""
  iv = stats.difference_interval([0.9, 0.9], [0.8, 0.8])
  assert not iv.finite and "zero spread" in iv.reason
  assert wording.judge(iv, ">").verdict == "inconclusive"


def test_why_undecided_gives_the_seeds_the_spread_needs_or_the_t_quantile():
  """n = z^2 (s_a^2 + s_b^2) / effect^2: at 95%, effect 1 and unit spreads, ceil(1.96^2 * 2) = 8 seeds;
  an effect of 10 standard deviations with 3 vs 3 seeds is limited by Welch's t at 4 degrees of freedom
  (2.78), not by the spread; a one-group mean uses t at n - 1."""
  text = wording.why_undecided(1.0, 1.0, 1.0, 3, 3, 0.95, "0", "per group")
  assert "about 8 seeds per group" in text
  text = wording.why_undecided(10.0, 1.0, 1.0, 3, 3, 0.95, "0", "per group")
  se = math.sqrt(2 / 3)
  assert f"{10 / se:.1f} standard errors" in text
  assert f"t quantile at this level is {scipy.stats.t.ppf(0.975, 4):.1f} (4.0 degrees" in text
  assert "unequal spread" not in text
  text = wording.why_undecided(10.0, 3.0, 0.2, 3, 3, 0.95, "0", "per group")  # Welch's df near 2
  assert "seeds of unequal spread (Welch)" in text
  text = wording.why_undecided(10.0, 1.0, None, 4, 4, 0.95, "0", "(pairs)")
  assert f"t quantile at this level is {scipy.stats.t.ppf(0.975, 3):.1f} (3.0 degrees" in text
  assert "no effect of a size seeds could resolve" in wording.why_undecided(0.01, 1.0, 1.0, 5, 5, 0.95, "0",
                                                                            "per group")
  assert wording.why_undecided(0.0, 1.0, 1.0, 5, 5, 0.95, "1", "per group") == "the estimate is at 1"


def test_compared_gives_the_interval_and_the_spread_on_its_own_scale():
  a, b = [2.0, 3.0, 4.0], [1.0, 1.5, 2.5]
  iv, effect, sa, sb = stats.compared(a, b, "ratio")
  assert effect == pytest.approx(np.mean(np.log(a)) - np.mean(np.log(b)), rel=1e-12)
  assert (sa, sb) == pytest.approx((np.std(np.log(a), ddof=1), np.std(np.log(b), ddof=1)), rel=1e-12)
  assert iv.estimate == pytest.approx(math.exp(effect), rel=1e-12)
  iv, effect, sa, sb = stats.compared(a, b, "difference")
  ref = scipy.stats.ttest_ind(a, b, equal_var=False)
  assert effect == pytest.approx(np.mean(a) - np.mean(b))
  assert iv.p_value == pytest.approx(ref.pvalue, rel=1e-9)
  assert stats.compared([1.0, -1.0], b, "ratio") is None and stats.compared([1.0], b, "difference") is None
  with pytest.raises(ValueError, match="compare"):
    stats.compared(a, b, "mean")
