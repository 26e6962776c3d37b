"""Judging a study's pre-registered criteria (`research.core.criteria`) from its runs.

The criteria come from `sweep.json` (recorded before the first trial ran), never from the config file
as it is now: a criterion edited after the runs is not the one they were run against. Each criterion
(per value of its `each` key) gets one verdict:

  holds         the interval lies on the claimed side of the threshold (or inside the +-margin band
                for "no difference"); for `every`, every run is on the claimed side
  fails         the interval lies on the other side (or outside the band); for `every`, some run is not
  inconclusive  the interval straddles the threshold, with the number of seeds that made it so
  not measured  no run of a group has the quantity

The intervals and the words are those of every template (`analysis.stats`, `analysis.wording.judge`);
Kendall's tau is judged by its two-sided p-value at 1 - level, and a claim of no correlation ("=") by
its Fisher-z interval lying inside the band (`tau_interval`).

A quantity `metric@stat` is a statistic of the metric over training, per run (`HISTORY_STATS`: mean,
median, max or min over the logged values after step 0; the initialization is not what training did),
e.g. `smooth/beta@mean` for Santurkar et al.'s effective beta-smoothness along the trajectory.
"""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import scipy.stats

from analysis import runs, stats, tables, wording
from research.core.criteria import TWO_GROUPS, Criterion, parse_one
from research.core.errors import UserError

VERDICTS = ("holds", "fails", "inconclusive", "not measured")
HISTORY_STATS = {"mean": np.mean, "median": np.median, "max": np.max, "min": np.min}
_FROM_WORDING = {"shows": "holds", "no difference": "holds", "contradicts": "fails",
                 "inconclusive": "inconclusive"}


@dataclasses.dataclass(frozen=True)
class Verdict:
  criterion: Criterion
  scope: str  # "" or "lr=0.1" for a criterion judged per value of `each`
  verdict: str  # one of VERDICTS
  measured: str  # the estimate with its interval and seed counts, as the table shows it
  values: dict  # the numbers (for findings.json / verdicts.json)

  def to_dict(self) -> dict:
    return {"id": self.criterion.id, "scope": self.scope, "verdict": self.verdict, "measured": self.measured,
            "claim": self.criterion.claim, "source": self.criterion.source,
            "criterion": self.criterion.to_dict(), "values": self.values}


def recorded(study: runs.Study) -> tuple[list[Criterion], list[runs.Problem]]:
  """The criteria of the study's sweep index, each checked; an unreadable one is a problem, not an error."""
  specs = (study.index or {}).get("criteria") or []
  out, problems = [], []
  if not isinstance(specs, list):
    return [], [runs.Problem(study.root.name, "sweep.json", "criteria is not a list; ignored")]
  for i, spec in enumerate(specs):
    try:
      out.append(parse_one(spec, f"criterion {i}"))
    except UserError as e:
      problems.append(runs.Problem(study.root.name, "sweep.json", f"{e}; not judged"))
  return out, problems


def _value_of(run: runs.Run, key: str):
  return run.overrides.get(key, run.flat_config.get(key))


def _same(a, b) -> bool:
  if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
  return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _matches(run: runs.Run, group: dict) -> bool:
  return all(_same(_value_of(run, k), v) for k, v in group.items())


def _by_value(rs: list[runs.Run], key: str) -> dict[str, list[runs.Run]]:
  """The runs split by their value of config `key` (JSON text of the value -> runs, in the sweep's order)."""
  out: dict[str, list[runs.Run]] = {}
  for r in rs:
    out.setdefault(json.dumps(_value_of(r, key), default=str), []).append(r)
  return out


def group_of(c: Criterion, members: list[runs.Run], which: str,
             table: pd.DataFrame) -> tuple[list[runs.Run], dict]:
  """The runs of group `which` ("a" or "b") of `c` among `members`. With `c.tune`, only those at the value of
  its key whose runs have the largest mean of its quantity (finite values; ties: the first in the sweep's
  order); the dict then says what was chosen among what ({} without `tune`)."""
  rs = [r for r in members if _matches(r, getattr(c, which))]
  if not c.tune:
    return rs, {}
  key, by = c.tune["key"], c.tune["by"]
  by_value = _by_value(rs, key)
  means = {}
  for k, group in by_value.items():
    v = _values(table, group, by)
    means[k] = float(v.mean()) if len(v) else float("nan")
  scored = [k for k in by_value if math.isfinite(means[k])]
  if not scored:
    return [], {"key": key, "by": by, "chosen": None, "means": {}}
  best = max(scored, key=lambda k: means[k])  # max keeps the first of equal means
  return by_value[best], {"key": key, "by": by, "chosen": json.loads(best),
                          "means": {k: means[k] for k in by_value}}


def tuned_text(info: dict) -> str:
  """`lr=0.2 (of 0.05, 0.1, 0.2)` for a group narrowed by `tune`; '' without."""
  if not info:
    return ""
  if info.get("chosen") is None:
    return f"no run with `{info['by']}` to choose {_short(info['key'])}"
  grid = [json.loads(k) for k in info["means"]]
  edge = ""
  numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in grid)
  grid = sorted(grid) if numeric else grid
  if len(grid) > 2 and numeric:
    # a choice at the grid's end: the best value may lie beyond the grid
    edge = {max(grid): ", the largest: the grid's edge", min(grid): ", the smallest: the grid's edge"}.get(
        info["chosen"], "")
  return (f"{_short(info['key'])}={_fmt_value(info['chosen'])} (of "
          f"{', '.join(_fmt_value(v) for v in grid)}{edge})")


def _fmt_value(v) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


def _values(table: pd.DataFrame, group_runs: list[runs.Run], quantity: str,
            diverged: float | None = None) -> np.ndarray:
  """The finite values of the group's runs; a run that diverged counts as `diverged` when that is given
  (the criterion's stated value for it, whatever the run logged before it diverged), else it is left out
  like any run without the quantity."""
  if not group_runs or quantity not in table.columns:
    return np.zeros(0)
  col = dict(zip(table["run"], pd.to_numeric(table[quantity], errors="coerce")))
  out = []
  for r in group_runs:
    v = float(col.get(r.name, np.nan))
    if diverged is not None and r.status == "diverged":
      v = diverged
    if np.isfinite(v):
      out.append(v)
  return np.asarray(out, np.float64)


def _fmt(x: float) -> str:
  if not math.isfinite(x):
    return "n/a"
  return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def tau_interval(tau: float, n: int, level: float = 0.95) -> tuple[float, float]:
  """Interval of Kendall's tau by Fisher's z with var(atanh tau) = 0.437 / (n - 4) (Fieller, Hartley &
  Pearson 1957, Biometrika 44); nan for n <= 4."""
  if n <= 4 or not math.isfinite(tau):
    return float("nan"), float("nan")
  z, half = math.atanh(max(min(tau, 0.999999), -0.999999)), scipy.stats.norm.ppf((1 + level) / 2)
  half *= math.sqrt(0.437 / (n - 4))
  return math.tanh(z - half), math.tanh(z + half)


def _judge_one(c: Criterion, table: pd.DataFrame, members: list[runs.Run],
               level: float) -> tuple[str, str, dict]:
  a_runs, tuned_a = group_of(c, members, "a", table)
  b_runs, tuned_b = group_of(c, members, "b", table) if c.compare in TWO_GROUPS else ([], {})
  a = _values(table, a_runs, c.quantity, c.diverged)
  ref = c.reference
  if c.compare in TWO_GROUPS:
    b = _values(table, b_runs, c.quantity, c.diverged)
    if not (len(a) and len(b)):
      return "not measured", f"no value of `{c.quantity}` in {'group a' if not len(a) else 'group b'}", {}
    compute = stats.ratio_interval if c.compare == "ratio" else stats.difference_interval
    interval = compute(a, b, level=level)
  elif c.compare == "mean":
    if not len(a):
      return "not measured", f"no value of `{c.quantity}`", {}
    interval = stats.mean_interval(a, level=level)
  elif c.compare == "every":
    if not a_runs or c.quantity not in table.columns:
      return "not measured", f"no value of `{c.quantity}`", {}
    # every matched run counts: one whose value is missing or not finite (diverged) does not pass
    col = pd.to_numeric(table.set_index("run")[c.quantity], errors="coerce") if c.quantity in table.columns \
        else pd.Series(dtype=float)
    a = np.asarray([col.get(r.name, np.nan) for r in a_runs], np.float64)
    with np.errstate(invalid="ignore"):
      ok = {">": a > ref, "<": a < ref, "=": np.abs(a - ref) <= (c.margin or 0.0)}[c.expected]
    verdict = "holds" if ok.all() else "fails"
    text = (f"{int(ok.sum())} of {len(a)} runs {c.expected} {_fmt(ref)} (values {', '.join(map(_fmt, a))}; "
            "n/a: not defined for the run, which does not pass)" if not np.isfinite(a).all() else
            f"{int(ok.sum())} of {len(a)} runs {c.expected} {_fmt(ref)} (values {', '.join(map(_fmt, a))})")
    return verdict, text, {"values": a.tolist(), "passing": int(ok.sum()), "n": len(a), "threshold": ref}
  else:  # kendall
    by_run = dict(zip(table["run"], pd.to_numeric(table[c.quantity], errors="coerce"))) \
        if c.quantity in table.columns else {}
    # `by`: a column of the runs table (a measured quantity, e.g. `gap/accuracy`), else a config key
    by_col = dict(zip(table["run"], pd.to_numeric(table[c.by], errors="coerce"))) \
        if c.by in table.columns else None
    xs = [by_col.get(r.name, np.nan) if by_col is not None else _value_of(r, c.by) for r in a_runs]
    ys = [by_run.get(r.name, np.nan) for r in a_runs]
    tau, p, n = stats.kendall_tau(xs, ys)
    if n < 3:
      return "not measured", f"{n} runs with `{c.quantity}` and `{c.by}` (Kendall's tau needs 3)", {"n": n}
    alpha = 1 - level
    side = (tau > ref) if c.expected == ">" else (tau < ref)
    if c.expected == "=":  # "no correlation" needs an interval inside the band, not a large p-value
      lo, hi = tau_interval(tau, n, level)
      if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive", f"Kendall τ = {tau:+.2f} ({n} runs: too few for an interval)", \
            {"tau": tau, "p_value": p, "n": n}
      inside = ref - c.margin <= lo and hi <= ref + c.margin
      outside = hi < ref - c.margin or lo > ref + c.margin
      verdict = "holds" if inside else ("fails" if outside else "inconclusive")
      text = (f"Kendall τ = {tau:+.2f}, {100 * level:.4g}% interval {lo:+.2f} to {hi:+.2f} (Fisher z, "
              f"{n} runs) against ±{c.margin:g}")
      return verdict, text, {"tau": tau, "lo": lo, "hi": hi, "p_value": p, "n": n}
    verdict = ("holds" if side else "fails") if p < alpha else "inconclusive"
    return verdict, f"Kendall τ = {tau:+.2f} (p = {p:.2g} against α = {alpha:.2g}, {n} runs)", \
        {"tau": tau, "p_value": p, "n": n}
  points = _in_points(c)
  style_ = wording.POINTS if points else {}
  j = wording.judge(interval, c.expected, threshold=ref, margin=c.margin, **style_)
  estimate = f"{100 * interval.estimate:+.2f} points" if points else _fmt(interval.estimate)
  measured = f"{estimate}; {wording.interval_text(interval, **style_)}"
  values = {"estimate": interval.estimate, "lo": interval.lo, "hi": interval.hi, "method": interval.method,
            "n": list(interval.n), "p_value": interval.p_value, "threshold": ref, "level": interval.level}
  if c.tune:
    by = c.tune["by"]
    chosen = f"a at {tuned_text(tuned_a)}" + (f", b at {tuned_text(tuned_b)}" if c.compare in TWO_GROUPS
                                               else "")
    measured += f"; tuned by the largest mean `{by}`: {chosen}"
    values["tuned"] = {"a": tuned_a} | ({"b": tuned_b} if c.compare in TWO_GROUPS else {})
  if c.diverged is not None:
    gone = [r.name for r in a_runs + b_runs if r.status == "diverged"]
    if gone:
      measured += f"; {len(gone)} diverged run(s) counted as {_fmt(c.diverged)}, as registered"
      values["diverged_runs"] = gone
  return _FROM_WORDING[j.verdict], measured, values


def _in_points(c: Criterion) -> bool:
  """Whether the verdict table states the criterion's estimate in accuracy points (a difference or mean of
  an accuracy)."""
  return c.quantity.split("@")[0].endswith("accuracy") and c.compare in ("difference", "mean")


def with_history(table: pd.DataFrame, study: runs.Study, criteria: list[Criterion]) -> pd.DataFrame:
  """`table` with a column per `metric@stat` quantity the criteria name (nan where a run logged none)."""
  table = table.copy()
  for c in criteria:
    metric, at, stat = c.quantity.rpartition("@")[0], "@" in c.quantity, c.quantity.rpartition("@")[2]
    if not at or c.quantity in table.columns or stat not in HISTORY_STATS:
      continue
    values = {r.name: history_stat(r, metric, stat) for r in study.runs}
    table[c.quantity] = table["run"].map(values).astype(float)
  return table


def history_stat(run: runs.Run, metric: str, stat: str = "mean") -> float:
  """A statistic (`HISTORY_STATS`) of a metric's logged values after step 0; nan when there are none."""
  steps, ys = run.curve(metric)
  ys = ys[(steps > 0) & np.isfinite(ys)]
  return float(HISTORY_STATS[stat](ys)) if len(ys) else float("nan")


def judge(criteria: list[Criterion], study: runs.Study, table: pd.DataFrame, *,
          level: float = 0.95) -> list[Verdict]:
  """One `Verdict` per criterion and value of its `each` key, from the runs table (`table` has a `run`
  column and one column per quantity, derived ones included).

  The family of statistical tests (every ratio, difference, mean and Kendall verdict) holds `level`
  jointly: each is judged at 1 - (1 - level) / m for m such tests (Bonferroni), so that one of several
  pre-registered comparisons crossing p = 0.05 by chance is not read as a finding. `every` verdicts are
  counts, not tests."""
  table = with_history(table, study, criteria)
  tasks = _scoped(criteria, study)
  tests = sum(c.compare != "every" for c, _, _ in tasks)
  each_level = 1 - (1 - level) / max(tests, 1)
  out = []
  for c, scope, members in tasks:
    try:
      verdict, measured, values = _judge_one(c, table, members, each_level)
    except (TypeError, ValueError) as e:  # a quantity of an unexpected type: say so, keep the rest
      verdict, measured, values = "not measured", f"could not be judged ({type(e).__name__}: {e})"[:160], {}
    values = values | ({"family_level": level, "tests": tests} if c.compare != "every" else {})
    out.append(Verdict(c, scope, verdict, measured, values))
  return out


def undecided_reasons(study: runs.Study, table: pd.DataFrame, *, level: float = 0.95) -> list[str]:
  """For each ratio or difference criterion the verdict table leaves inconclusive: the measured reason,
  its effect against the seed-to-seed spread of each group and what that spread and seed count need
  (`wording.why_undecided`, at the level each test of the table is judged)."""
  found, _ = recorded(study)
  table = with_history(table, study, found)
  each = test_level(study, level)
  out = []
  for v in judge(found, study, table, level=level):
    c = v.criterion
    if v.verdict != "inconclusive" or c.compare not in TWO_GROUPS or v.scope:
      continue
    (ra, _), (rb, _) = (group_of(c, study.runs, w, table) for w in ("a", "b"))
    a, b = (_values(table, rs, c.quantity, c.diverged) for rs in (ra, rb))
    got = stats.compared(a, b, c.compare, each)
    if got is None:
      short, rs, x = ("a", ra, a) if len(a) < 2 else ("b", rb, b)
      gone = sum(r.status == "diverged" for r in rs)
      out.append(f"Measured reason, `{c.id}`: {len(x)} of the {len(rs)} runs of group {short} have a value"
                 + (f" ({gone} diverged)" if gone else "") + "; an interval needs at least 2.")
      continue
    _, effect, sa, sb = got
    points = _in_points(c)
    if points:  # accuracies in points, as the verdict table gives them
      effect, sa, sb = 100 * effect, 100 * sa, 100 * sb
    if c.compare == "ratio":
      what = f"a log-ratio of {effect:+.2f} against a seed-to-seed standard deviation of the log of"
    else:
      what = (f"a difference of {effect:+.3g}{' points' if points else ''} against a seed-to-seed standard "
              "deviation of")
    why = (wording.why_undecided(effect, sa, sb, len(a), len(b), each, "1" if c.compare == "ratio" else "0",
                                 "per group")
           if (effect > 0) == (c.expected == ">") else
           wording.AGAINST)
    out.append(f"Measured reason, `{c.id}`: {what} {sa:.3g} (a) and {sb:.3g} (b) over {len(a)} vs {len(b)} "
               f"seeds; {why}.")
  return out


def _scoped(criteria: list[Criterion], study: runs.Study) -> list[tuple[Criterion, str, list[runs.Run]]]:
  """(criterion, scope label, member runs): one per criterion, or per value of its `each` key."""
  tasks = []
  for c in criteria:
    scopes = [("", study.runs)]
    if c.each:
      seen = _by_value([r for r in study.runs if _matches(r, c.a) or (c.b is not None and _matches(r, c.b))],
                       c.each)
      short = _short(c.each)
      scopes = [(f"{short}={_value_text(json.loads(k))}", rs) for k, rs in seen.items()] or scopes
    tasks += [(c, scope, members) for scope, members in scopes]
  return tasks


def test_level(study: runs.Study, level: float = 0.95) -> float:
  """The level of each interval and Kendall test of the study's verdict table (`judge`): `level` jointly
  over the recorded criteria's statistical tests, one per criterion and `each` scope (Bonferroni;
  `every` verdicts are counts); `level` itself when the index records no test. Templates judge their
  own comparisons of the same quantities at this level, so that the text and the table agree."""
  recorded_criteria, _ = recorded(study)
  tests = sum(c.compare != "every" for c, _, _ in _scoped(recorded_criteria, study))
  return 1 - (1 - level) / max(tests, 1)


def _expected_text(c: Criterion) -> str:
  what = {"ratio": "ratio a / b", "difference": "a − b", "mean": "mean", "every": "every run",
          "kendall": f"Kendall τ with {c.by}"}[c.compare]
  groups = ""
  if c.compare in ("ratio", "difference"):
    groups = f" (a: {_group_text(c.a)}; b: {_group_text(c.b)})"
  elif c.a:
    groups = f" ({_group_text(c.a)})"
  band = f" ± {c.margin:g}" if c.expected == "=" else ""
  tune = (f"; each group at the {_short(c.tune['key'])} of its largest mean `{c.tune['by']}`" if c.tune
          else "")
  return f"`{c.quantity}`: {what} {c.expected} {c.reference:g}{band}{groups}{tune}"


def _group_text(group: dict | None) -> str:
  if not group:
    return "all runs"
  return ", ".join(f"{_short(k)}={v}" for k, v in group.items())


def _value_text(value) -> str:
  """A scope's config value as read: floats to 4 significant digits (a step size 2/65, not
  0.03076923076923077), None as unset."""
  if value is None:
    return "unset"
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(key: str) -> str:
  """`schedule.lr` -> `lr`; a generic last part keeps its parent: `loss.name`, `optimizer.name`."""
  last = key.rsplit(".", 1)[-1]
  return ".".join(key.split(".")[-2:]) if last in ("name", "value", "kind") else last


def verdict_table(verdicts: list[Verdict]) -> tables.Table:
  """The report's first table: one row per verdict."""
  rows = []
  for v in verdicts:
    c = v.criterion
    claim = c.claim + (f" [{v.scope}]" if v.scope else "")
    rows.append([c.id, claim, _expected_text(c), c.source, v.measured, f"**{v.verdict}**"])
  header = ["criterion", "claim", "test", "source", "measured", "verdict"]
  tests = next((v.values["tests"] for v in verdicts if "tests" in v.values), 0)
  level = next((v.values["family_level"] for v in verdicts if "family_level" in v.values), 0.95)
  parts = ["Pre-registered criteria (recorded in sweep.json before the runs) and their verdicts."]
  if tests:
    plural = "s" if tests > 1 else ""
    parts.append(f"The {tests} statistical test{plural} hold {100 * level:g}% jointly: "
                 f"each interval is at {100 * (1 - (1 - level) / tests):.4g}% (Bonferroni), t for means, "
                 "Welch for differences, Welch on the logs for ratios, Fisher z for Kendall's τ; valid for "
                 "the number of seeds shown.")
  if any(v.criterion.compare == "every" for v in verdicts):
    parts.append("`every run` verdicts count runs against the threshold: observations of each run, without "
                 "an interval (their seeds are in the measured column).")
  return tables.Table(header, rows, [[False] * len(header) for _ in rows], caption=" ".join(parts),
                      align="llllll")


def summary(verdicts: list[Verdict]) -> str:
  """`3 of 4 criteria hold, 1 inconclusive` (counts per verdict, in VERDICTS order)."""
  counts = {k: sum(v.verdict == k for v in verdicts) for k in VERDICTS}
  parts = [f"{n} {k}" for k, n in counts.items() if n]
  return f"{len(verdicts)} judged: " + ", ".join(parts) if verdicts else "no criteria"
