"""Report template of the depth-width study (experiments/configs/depth_width.py).

Networks of several depths at a matched parameter count: test accuracy, generalization gap and the
final lambda_max and trace, shallowest-and-widest against deepest-and-narrowest with Welch
intervals over seeds, and Kendall's tau of depth with each. Compared with Zagoruyko &
Komodakis 2016 (wide shallow residual networks match or beat thin deep ones) and Li et al. 2018 (wider
networks have flatter minima); the comparison words the same intervals as the criteria of the config
(accuracy within MATCH, lambda_max ratio deep / shallow).
"""

import math
import re

import numpy as np
import pandas as pd

from analysis import criteria, runs, stats, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import (
  Context,
  Template,
  bn_mode_phrase,
  generic_findings,
  missing_text,
  num,
  pct,
  standard_results,
)

TITLE = "Depth against width"
MATCH = 0.01  # "match": test accuracy within 1 point (a fraction)
WIDTH_KEY = "model.knobs.width"


def depth_of(run: runs.Run) -> int | None:
  """Layers of the run's network: `model.knobs.depth` of an MLP, N of a `resnetN`; None if unknown."""
  name = str(run.flat_config.get("model.name", ""))
  m = re.fullmatch(r"[a-z_]*?(\d+)", name)
  if m and name != "mlp":
    return int(m.group(1))
  depth = run.flat_config.get("model.knobs.depth")
  return int(depth) if isinstance(depth, int) else None


def _depth_key(ctx: Context) -> str:
  return "model.knobs.depth" if "model.knobs.depth" in ctx.study.group_keys else "model.name"


def _applies(ctx: Context) -> str | None:
  depths = {depth_of(r) for r in ctx.study.runs} - {None}
  if len(depths) < 2:
    return f"fewer than two network depths among the runs ({', '.join(map(str, sorted(depths))) or 'none'})"
  return None


def _by_depth(ctx: Context) -> dict[int, list[runs.Run]]:
  out: dict[int, list[runs.Run]] = {}
  for r in sorted(ctx.study.runs, key=lambda r: depth_of(r) or 0):
    if depth_of(r) is not None:
      out.setdefault(depth_of(r), []).append(r)
  return out


def _shape(rs: list[runs.Run]) -> str:
  width = rs[0].flat_config.get(WIDTH_KEY)
  return f"depth {depth_of(rs[0])} (width {num(width) if isinstance(width, float) else width})"


def _shapes_table(ctx: Context, groups: dict[int, list[runs.Run]]) -> TableBlock | None:
  rows = []
  for depth, rs in groups.items():
    params = [r.summary["num_params"] for r in rs
              if r.summary and runs._is_number(r.summary.get("num_params"))]
    rows.append({"depth": depth, "width": rs[0].flat_config.get(WIDTH_KEY),
                 "parameters": int(params[0]) if params else None, "seeds": len(rs)})
  counts = [row["parameters"] for row in rows if row["parameters"] is not None]
  if not counts:
    return None
  mean = float(np.mean(counts))
  for row in rows:
    p = row["parameters"]
    row["vs. mean (%)"] = f"{100 * (p / mean - 1):+.2f}" if p is not None else "–"
    row["parameters"] = f"{p:,}" if p is not None else "–"
  frame = pd.DataFrame(rows)
  table = tables.frame_table(frame, caption=(
      "The shapes compared: parameter counts from each run's summary.json and their deviation from the mean "
      "count."))
  table.align = "r" * len(table.header)
  return TableBlock("shapes", table)


def _results(ctx: Context):
  groups = _by_depth(ctx)
  bars = ("test/accuracy", "gap/accuracy", "curv/lambda_max", "curv/trace")
  blocks = standard_results(ctx, bar_metrics=bars, bar_key=_depth_key(ctx), thresholds=False)
  shapes = _shapes_table(ctx, groups)
  if shapes:
    blocks.insert(0, shapes)
  if "curv/lambda_max" not in ctx.table.columns:
    blocks.append(missing_text("the sharpness comparison", "`curv/lambda_max` in metrics.jsonl or a "
                               "curvature/ record per run (config `curvature.at_end`)"))
  findings = generic_findings(ctx)
  depths = list(groups)
  shallow, deep = groups[depths[0]], groups[depths[-1]]
  a, b = ctx.values(shallow, "test/accuracy"), ctx.values(deep, "test/accuracy")
  if len(a) and len(b):
    iv = stats.difference_interval(a, b)
    findings.append(Finding(
        f"The shallowest, widest network, {_shape(shallow)}, reached {pct(a.mean())} test accuracy against "
        f"{pct(b.mean())} for the deepest, narrowest, {_shape(deep)}: a difference of "
        f"{100 * iv.estimate:+.2f} points ({wording.interval_text(iv, **wording.POINTS)}).",
        {"metric": "test/accuracy", "shallow depth": depths[0], "deep depth": depths[-1],
         "shallow mean": float(a.mean()), "deep mean": float(b.mean()), "difference": iv.estimate,
         "ci": (iv.lo, iv.hi), "interval": iv.as_dict()}))
  mode = bn_mode_phrase(ctx.study.runs)
  for metric, name in (("curv/lambda_max", "λ_max"), ("curv/trace", "the Hessian trace")):
    a, b = ctx.values(deep, metric), ctx.values(shallow, metric)
    if not (len(a) and len(b)):
      continue
    iv = stats.ratio_interval(a, b)
    findings.append(Finding(
        f"At the end of training {name} of the deepest network was {iv.estimate:.2f}x that of the shallowest "
        f"({'Hessian with ' + mode + '; ' if mode else ''}ratio of geometric means; means {num(a.mean())} vs "
        f"{num(b.mean())}; "
        f"{wording.interval_text(iv, **wording.TIMES)}).",
        {"metric": metric, "shallow depth": depths[0], "deep depth": depths[-1], "ratio": iv.estimate,
         "ci": (iv.lo, iv.hi), "interval": iv.as_dict(), "deep mean": float(a.mean()),
         "shallow mean": float(b.mean())}))
  depth_col = np.array([depth_of(r) or np.nan if r.status in ("done", "early_stopped") else np.nan
                        for r in ctx.study.runs], np.float64)  # unfinished runs left out
  for metric, name in (("test/accuracy", "test accuracy"), ("curv/lambda_max", "λ_max")):
    if metric in ctx.table.columns:
      tau, p, n = stats.kendall_tau(depth_col, ctx.table[metric])
      if n >= 3:
        findings.append(Finding(f"Across {n} runs, Kendall's τ between depth and {name} is {tau:.2f} "
                                f"(p = {p:.2g}).", {"metric": metric, "tau": tau, "p": p, "n": n}))
  return [Section("Results", blocks)], findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Zagoruyko & Komodakis (2016, BMVC, \"Wide Residual Networks\") find that at a similar parameter "
         "count wider, shallower residual networks match or beat thin very deep ones. Li et al. (2018, "
         "NeurIPS, \"Visualizing the Loss Landscape of Neural Nets\") find that wider networks have flatter "
         "minima, and that depth without skip connections makes the landscape chaotic. Both predict: the "
         "shallow wide network at least as accurate and flatter (lower λ_max) than the deep narrow one."]
  items = []
  for f in findings:
    v = f.values
    if v.get("metric") == "test/accuracy" and "difference" in v:
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", threshold=-MATCH, **wording.POINTS)
      items.append(f"Test accuracy, depth {v['shallow depth']} minus depth {v['deep depth']}: "
                   f"{100 * v['difference']:+.2f} points; the shallow wide network at least as accurate "
                   f"(less than {100 * MATCH:g} point below, or better): this {j.text}.")
    if v.get("metric") == "curv/lambda_max" and "ratio" in v:
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.TIMES)
      items.append(f"λ_max, depth {v['deep depth']} / depth {v['shallow depth']}: {v['ratio']:.2f}x; deeper "
                   f"and narrower: sharper: this {j.text}.")
  items += _trend_text(ctx)
  if not items:
    items.append("Neither test accuracy nor λ_max could be compared between the shallowest and deepest "
                 "networks: the comparison cannot be made.")
  models = {str(r.flat_config.get("model.name")) for r in ctx.study.runs}
  scale = ("Caveat: these are plain MLPs without skip connections on a small training set, not the residual "
           "networks of either paper" if models == {"mlp"} else "")
  return out + [items] + _measured_reasons(ctx) + ([scale + "."] if scale else [])


def _trend_text(ctx: Context) -> list[str]:
  """λ_max at the end per depth (every depth, not only the two compared) and Kendall's τ with the depth
  over the runs: whether the comparison of the extremes is a trend (exploratory; not a criterion)."""
  groups = _by_depth(ctx)
  if len(groups) < 3 or "curv/lambda_max" not in ctx.table.columns:
    return []
  per = {d: ctx.values(rs, "curv/lambda_max") for d, rs in groups.items()}
  per = {d: v[v > 0] for d, v in per.items() if len(v[v > 0])}
  if len(per) < 3:
    return []
  depth = np.concatenate([np.full(len(v), d, np.float64) for d, v in per.items()])
  tau, p, n = stats.kendall_tau(depth, np.concatenate(list(per.values())))
  spread = "; ".join(f"depth {d}: {num(float(np.exp(np.log(v).mean())))} ({num(float(v.min()))}-"
                     f"{num(float(v.max()))})" for d, v in per.items())
  return [f"λ_max at the end at every depth (geometric mean over seeds, min-max): {spread}. Kendall's τ "
          f"between depth and λ_max over the {n} runs: {tau:+.2f} (p = {p:.2g}; exploratory, not a "
          "criterion): the comparison of the two extremes above "
          + ("is part of a trend with depth (at this τ's 95% level)." if p < 0.05 and tau > 0 else
             "does not by itself show a trend with depth.")]


def _why_wide(margin: float, sa: float, sb: float, na: int, nb: int, level: float, null: str) -> str:
  """Why an interval around an effect `margin` away from the claim's threshold reaches it."""
  if margin <= 0:
    return "the estimate itself is on the other side of the threshold"
  return wording.why_undecided(margin, sa, sb, na, nb, level, null, "per shape")


def _measured_reasons(ctx: Context) -> list[str]:
  """For each pre-registered comparison left undecided at the verdict table's level: the effect against
  the seed-to-seed spread and, for λ_max, how much it moved within runs at the end."""
  groups = _by_depth(ctx)
  if len(groups) < 2:
    return []
  depths = list(groups)
  shallow, deep = groups[depths[0]], groups[depths[-1]]
  level = criteria.test_level(ctx.study)
  out = []
  a, b = ctx.values(shallow, "test/accuracy"), ctx.values(deep, "test/accuracy")
  if len(a) >= 2 and len(b) >= 2:
    iv = stats.difference_interval(a, b, level=level)
    if math.isfinite(iv.lo) and iv.lo <= -MATCH <= iv.hi:
      sa, sb = float(a.std(ddof=1)), float(b.std(ddof=1))
      why = _why_wide(iv.estimate + MATCH, sa, sb, len(a), len(b), level, f"-{100 * MATCH:g} point")
      out.append(f"Measured reason, accuracy depth {depths[0]} minus depth {depths[-1]}: "
                 f"{100 * iv.estimate:+.2f} points against a seed-to-seed standard deviation of "
                 f"{100 * sa:.2f} points (depth {depths[0]}) and {100 * sb:.2f} (depth {depths[-1]}) over "
                 f"{len(a)} vs {len(b)} seeds: the verdict's {wording.interval_text(iv, **wording.POINTS)} "
                 f"reaches below -{100 * MATCH:g} point; {why}.")
  a, b = ctx.values(deep, "curv/lambda_max"), ctx.values(shallow, "curv/lambda_max")
  if len(a) >= 2 and len(b) >= 2 and (a > 0).all() and (b > 0).all():
    iv = stats.ratio_interval(a, b, level=level)
    if math.isfinite(iv.lo) and iv.lo <= 1 <= iv.hi:
      sa, sb = float(np.log(a).std(ddof=1)), float(np.log(b).std(ddof=1))
      why = _why_wide(math.log(iv.estimate), sa, sb, len(a), len(b), level, "1")
      changes = {}
      for depth in (depths[0], depths[-1]):
        moves = []
        for r in groups[depth]:
          _, values = r.curve("curv/lambda_max")
          values = values[np.isfinite(values) & (values > 0)]
          if len(values) >= 2:
            moves.append(abs(values[-1] / values[-2] - 1))
        if moves:
          changes[depth] = float(np.median(moves))
      within = ("; within a run λ_max had not settled: between its last two measurements it moved by a "
                "median of " + " and ".join(f"{100 * v:.0f}% (depth {d})" for d, v in changes.items())
                + ", so the value at the end is one draw of a fluctuating quantity") if changes else ""
      out.append(f"Measured reason, λ_max depth {depths[-1]} / depth {depths[0]}: {iv.estimate:.2f}x against "
                 f"a seed-to-seed standard deviation of the log of {sa:.2f} (depth {depths[-1]}) and "
                 f"{sb:.2f} (depth {depths[0]}) over {len(a)} vs {len(b)} seeds: the verdict's "
                 f"{wording.interval_text(iv, **wording.TIMES)} contains 1; {why}{within}.")
  return out


def _limitations(ctx: Context) -> list[str]:
  out = ["λ_max is not invariant to reparametrization (Dinh et al. 2017): networks of different depth "
         "scale their weights differently, so equal λ_max is not equal flatness across shapes.",
         "Width follows depth here (the parameter count is held fixed), so a width effect at fixed depth "
         "(Li et al.'s Fig. 6) cannot be separated from the depth effect: no criterion claims one."]
  if all(r.flat_config.get("model.name") == "mlp" for r in ctx.study.runs):
    out.append("The MLPs have no skip connections or normalization, so depth also changes how well they "
               "train at one shared learning rate; the shapes were not tuned separately.")
  out += _fit_text(ctx)
  return out


def _fit_text(ctx: Context) -> list[str]:
  """How far each of the two compared shapes fit the training set at the end (eval_train accuracy and
  loss, means over seeds): λ_max at the end compares solutions at these training losses."""
  groups = _by_depth(ctx)
  if len(groups) < 2 or "eval_train/loss" not in ctx.table.columns:
    return []
  depths = list(groups)
  parts = []
  for depth in (depths[0], depths[-1]):
    loss = ctx.values(groups[depth], "eval_train/loss")
    acc = ctx.values(groups[depth], "eval_train/accuracy")
    if not len(loss):
      return []
    parts.append(f"depth {depth}: training-subset loss {num(loss.mean())} nats"
                 + (f", accuracy {pct(acc.mean())} (lowest seed {pct(acc.min())})" if len(acc) else ""))
  return ["The sharpness comparison is at the end of a fixed step budget, not at equal training loss: "
          + "; ".join(parts) + " (means over seeds, the fixed eval_train subset). A network that has not "
          "fit its training set sits higher on the loss surface, where λ_max need not be that of a minimum."]


TEMPLATE = Template(
    "depth_width", TITLE,
    "At a fixed parameter count, is it better to be deep and narrow or shallow and wide, and "
    "which finds the flatter minimum? Test accuracy, generalization gap and the training-loss Hessian's "
    "λ_max and trace of networks of several depths with widths matched to the same number of parameters.",
    _applies, _results, _comparison, _limitations)
