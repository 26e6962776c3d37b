"""Report template of the `reparameterization` study (experiments/configs/reparameterization.py): each
measure on Dinh et al.'s function-preserving rescalings of the final network, as a ratio to its value on
the network as trained (alpha = 1), per normalization condition; the loss, accuracy and largest logit
change of each rescaled copy prove that the function did not change.

Inputs: the `sharp/<metric>` and `sharp/<metric>@alpha=<a>` columns of the runs table (the measures
evaluator, research/measures/tracking.py) and the records `measures/step<S>.json` (probe-set loss and
accuracy per alpha, from the worst-case and PAC-Bayes records).
"""

import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd

from analysis import style, tables
from analysis.document import Finding, Section, TableBlock
from analysis.results import Context, Template, num, seeds_text, standard_results

TITLE = "Reparameterization"
NORM_KEY = "model.knobs.norm"
# (metric, label, expected by Dinh et al.'s argument: "changes" or "invariant")
MEASURES = (
    ("lambda_max", "λ_max", "changes"),
    ("hessian_trace", "Hessian trace", "changes"),
    ("worst_case_l2", "worst-case sharpness (l2)", "changes"),
    ("average_plain", "average sharpness", "changes"),
    ("epsilon_sharpness", "ε-sharpness (Keskar)", "changes"),
    ("pac_bayes_sigma", "PAC-Bayes σ", "changes"),
    ("param_norm", "sum of squared Frobenius norms", "changes"),
    ("distance_from_init", "distance from init", "changes"),
    ("worst_case_adaptive_l2", "adaptive worst-case sharpness", "invariant"),
    ("average_adaptive", "adaptive average sharpness", "invariant"),
    ("pac_bayes_sigma_magnitude", "magnitude-aware PAC-Bayes σ'", "invariant"),
    ("fro_over_spec", "Σ ‖W‖_F² / ‖W‖_2²", "invariant"),
    ("path_norm", "path norm", "invariant"),
    ("fisher_rao_norm_sq", "Fisher-Rao norm²", "invariant"),
    ("output_margin", "output margin (10th pct.)", "invariant"),
)
INVARIANT = 0.05  # a measure "did not change" when every ratio is within 5% of 1
# measures a pre-registered criterion judges (experiments/configs/reparameterization.py): the verdict
# table, not this template's 5% tolerance, says whether they changed
COVERED = {"lambda_max": "lambda_max_changes", "average_adaptive": "adaptive_invariant",
           "path_norm": "path_norm_invariant"}
ALPHA = re.compile(r"^sharp/(.+)@alpha=(.+)$")


def alphas(table: pd.DataFrame) -> list[float]:
  """The alphas of the `sharp/<m>@alpha=<a>` columns, sorted."""
  found = {float(m.group(2)) for c in table.columns if (m := ALPHA.match(str(c)))}
  return sorted(found)


def _col(metric: str, alpha: float) -> str:
  return f"sharp/{metric}" if alpha == 1 else f"sharp/{metric}@alpha={alpha:g}"


def _applies(ctx: Context) -> str | None:
  if not alphas(ctx.table):
    return "no run has measures on rescaled parameters (`sharp/<measure>@alpha=<a>` in metrics.jsonl)"
  return None


def _conditions(ctx: Context) -> dict[str, list]:
  out = {}
  for r in ctx.study.runs:
    out.setdefault(str(r.flat_config.get(NORM_KEY, "none")), []).append(r)
  return out


def _values(ctx: Context, rs: list, metric: str, grid: list[float], suffix: str = "") -> np.ndarray:
  """(seeds, alphas) values of `sharp/<metric><suffix>` at each alpha (NaN where missing)."""
  rows = []
  for r in rs:
    row = ctx.table.loc[ctx.table["run"] == r.name]
    if row.empty or f"sharp/{metric}" not in row:
      continue
    cols = [_col(metric + suffix, a) for a in grid]
    rows.append([float(row[c].iloc[0]) if c in row else math.nan for c in cols])
  return np.asarray(rows, np.float64).reshape(-1, len(grid))


def _ratios(ctx: Context, rs: list, metric: str, grid: list[float]) -> tuple[np.ndarray, np.ndarray]:
  """((seeds, alphas) value at alpha / value at alpha = 1, (seeds, alphas) bool: the change is within
  the noise: |v - v1| <= max(INVARIANT |v1|, 2 sqrt(se^2 + se1^2)) with the measure's standard errors)."""
  v = _values(ctx, rs, metric, grid)
  se = np.nan_to_num(_values(ctx, rs, metric, grid, "_se"))
  i1 = grid.index(1.0)
  base, base_se = v[:, i1:i1 + 1], se[:, i1:i1 + 1]
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.where(base != 0, v / base, math.nan)
  same = np.abs(v - base) <= np.maximum(INVARIANT * np.abs(base), 2 * np.sqrt(se**2 + base_se**2))
  return ratio, same


def _record(run) -> dict | None:
  files = sorted(run.path.glob("measures/step*.json"), key=lambda p: int(p.stem[4:]) if p.stem[4:].isdigit()
                 else -1)
  for f in reversed(files):
    try:
      return json.loads(f.read_text())
    except (OSError, ValueError):
      continue
  return None


def _function_check(rs: list) -> dict:
  """Per alpha: the largest logit change over seeds, the largest |logit|, the largest difference of the
  probe-set loss and accuracy from alpha = 1 (from the worst-case and PAC-Bayes records)."""
  out = {}

  def details(measurements, measure):
    for m in measurements:
      if m["measure"] == measure and m["records"]:
        return m["records"][0].get("details") or {}
    return {}

  for r in rs:
    rec = _record(r)
    if rec is None:
      continue
    base_loss = details(rec["measurements"], "worst_case").get("base_loss")
    base_acc = details(rec["measurements"], "pac_bayes").get("accuracy")
    for res in rec.get("rescaled", []):
      a = out.setdefault(res["alpha"], {"change": 0.0, "logit": 0.0, "loss": 0.0, "accuracy": 0.0})
      a["change"] = max(a["change"], res["max_output_change"])
      a["logit"] = max(a["logit"], res["max_abs_logit"])
      loss = details(res["measurements"], "worst_case").get("base_loss")
      acc = details(res["measurements"], "pac_bayes").get("accuracy")
      if loss is not None and base_loss is not None:
        a["loss"] = max(a["loss"], abs(loss - base_loss))
      if acc is not None and base_acc is not None:
        a["accuracy"] = max(a["accuracy"], abs(acc - base_acc))
  return out


def ratio_figure(curves: dict[str, dict[str, np.ndarray]], grid: list[float], path):
  """One column per condition. Top: measures a rescaling changes (Dinh et al.), mean ratio to alpha = 1,
  log-log. Bottom: scale-invariant measures, |ratio - 1| on a log axis (rounding level when invariant)."""
  fig, axes = style.figure(ncols=len(curves), nrows=2, width=min(4.0 * len(curves) + 2.8, 11.0),
                           height=6.2, squeeze=False)
  xs = np.asarray(grid)
  markers = "osD^v<>p"
  for col, (cond, by_metric) in enumerate(curves.items()):
    top, bottom = axes[0, col], axes[1, col]
    for ax, kind in ((top, "changes"), (bottom, "invariant")):
      chosen = [m for m in MEASURES if m[2] == kind]
      for i, (metric, label, _) in enumerate(chosen):
        if metric not in by_metric:
          continue
        y = np.abs(by_metric[metric]) if kind == "changes" else np.abs(by_metric[metric] - 1)
        x = xs
        if kind == "invariant":  # no point at alpha = 1 (the ratio is 1 there by definition); the line
          x, y = xs[xs != 1], np.maximum(y[xs != 1], 1e-9)  # joins its neighbours across it
        ax.plot(x, y, marker=markers[i % len(markers)], markersize=4, color=style.color(i),
                linestyle=style.linestyle(i), label=label)
      ax.set_xscale("log")
      ax.set_yscale("log")
      if kind == "changes":
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"norm = {cond}", fontsize=10, loc="left")
      else:
        ax.axhline(INVARIANT, color="black", linewidth=0.8, linestyle=":")
        ax.set_xlabel("rescaling α")
      if col == 0:
        ax.set_ylabel("value / value at α = 1" if kind == "changes" else "|value / value at α = 1 − 1|")
    for ax in (top, bottom):
      ax.set_xticks(xs[xs != 1].tolist() + [1.0], [f"{a:g}" for a in xs[xs != 1]] + ["1"])
  for row in range(2):  # every measure drawn in any column, in MEASURES order (a column may lack one)
    seen: dict = {}
    for ax in axes[row]:
      for handle, label in zip(*ax.get_legend_handles_labels()):
        seen.setdefault(label, handle)
    order = [label for _, label, _ in MEASURES if label in seen]
    axes[row, -1].legend([seen[k] for k in order], order, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                         fontsize=7, frameon=False)
  style.save(fig, path)
  return fig


def _quantities(ctx: Context) -> dict[str, dict[str, float]]:
  """Per run: `reparam/max_relative_logit_change` (the largest logit change over the alphas relative to
  the largest |logit|, from the measures record), `reparam/lambda_max_range` (max / min of lambda_max over
  alpha = 1 and every alpha), `reparam/average_adaptive_change` and `reparam/path_norm_change` (the largest
  |value / value at alpha = 1 - 1| over the alphas)."""
  grid = sorted(set(alphas(ctx.table)) | {1.0})
  out: dict[str, dict[str, float]] = {}
  for r in ctx.study.runs:
    q = {}
    rec = _record(r)
    rel = [res["max_output_change"] / res["max_abs_logit"] for res in (rec or {}).get("rescaled", [])
           if res.get("max_abs_logit")]
    if rel:
      q["reparam/max_relative_logit_change"] = float(max(rel))
    lam = _values(ctx, [r], "lambda_max", grid)
    if lam.size and np.isfinite(lam).all() and (lam > 0).all():
      q["reparam/lambda_max_range"] = float(lam.max() / lam.min())
    for metric, name in (("average_adaptive", "average_adaptive_change"), ("path_norm", "path_norm_change")):
      ratio, _ = _ratios(ctx, [r], metric, grid)
      if ratio.size and np.isfinite(ratio).all():
        q[f"reparam/{name}"] = float(np.max(np.abs(ratio - 1)))
    if q:
      out[r.name] = q
  return out


def _results(ctx: Context):
  grid = [a for a in alphas(ctx.table)]
  full = sorted(set(grid) | {1.0})
  conds = _conditions(ctx)
  plain = dataclasses.replace(ctx, table=ctx.table.drop(columns=[c for c in ctx.table.columns
                                                                 if str(c).startswith("sharp/")]))
  blocks = standard_results(plain, bar_metrics=("test/accuracy", "gap/accuracy"), bar_key=NORM_KEY)
  findings, curves = [], {}
  for cond, rs in conds.items():
    rows, by_metric = [], {}
    for metric, label, expected in MEASURES:
      if metric == "path_norm" and cond != "none":
        expected = "n/a (BatchNorm)"  # the path norm ignores normalization layers
      ratio, same = _ratios(ctx, rs, metric, full)
      if not len(ratio) or np.isnan(ratio).all():
        continue
      mean = np.nanmean(ratio, axis=0)
      if not expected.startswith("n/a"):  # the figure's panels are for the measures the argument covers
        by_metric[metric] = mean
      observed = "invariant" if same.all() else "changes"
      deviation = float(np.nanmax(np.abs(ratio - 1)))
      rows.append({"measure": label} | {f"α = {a:g}": float(m) for a, m in zip(full, mean)}
                  | {"max |ratio − 1|": deviation, "expected": expected,
                     f"within ±{100 * INVARIANT:.0f}% / 2 SE": "yes" if same.all() else "no"})
      if observed != expected or metric in ("lambda_max", "worst_case_l2", "worst_case_adaptive_l2",
                                            "epsilon_sharpness", "path_norm", "pac_bayes_sigma_magnitude"):
        lo, hi = float(np.nanmin(mean)), float(np.nanmax(mean))
        i_lo, i_hi = int(np.nanargmin(mean)), int(np.nanargmax(mean))
        if observed == "invariant":
          text = (f"norm={cond}: {label} stayed within {100 * deviation:.2g}% of its value at α = 1 for "
                  f"every α and seed ({seeds_text(len(ratio))}; within ±{100 * INVARIANT:.0f}% or two "
                  "standard errors)")
        else:
          text = (f"norm={cond}: {label} ranged from {num(lo)}x (α = {full[i_lo]:g}) to {num(hi)}x "
                  f"(α = {full[i_hi]:g}) of its value at α = 1 (mean over {seeds_text(len(ratio))})")
        if expected.startswith("n/a"):
          text += "; the path norm is not defined for networks with BatchNorm (it ignores the normalization)."
        elif metric in COVERED:
          text += f" (criterion `{COVERED[metric]}` in the verdict table judges it)."
        elif observed == expected:
          text += ", as expected."
        elif expected == "invariant":
          text += ", although a scale-invariant measure should not change."
        else:
          text += ", although Dinh et al.'s argument says it can change."
        findings.append(Finding(text, {"condition": cond, "metric": metric, "min ratio": lo, "max ratio": hi,
                                       "max deviation": deviation, "expected": expected,
                                       "observed": observed, "n": len(ratio)}))
    if not rows:
      continue
    curves[cond] = by_metric
    frame = pd.DataFrame(rows)
    blocks.append(TableBlock(f"ratios_{cond}", tables.frame_table(frame, scale_accuracy=False, caption=(
        f"norm={cond}: each measure on the rescaled network divided by its value at α = 1 (the network as "
        f"trained), mean over {seeds_text(len(rs))}. 'expected': Dinh et al.'s argument (plain measures "
        f"change, scale-invariant ones do not); the last column: whether for every α and seed the change is "
        f"within ±{100 * INVARIANT:.0f}% or two standard errors of the measure (Monte-Carlo estimates), a "
        "descriptive tolerance; the pre-registered criteria in the verdict table use their own."))))
    check = _function_check(rs)
    if check:
      worst = max(check.values(), key=lambda v: v["change"])
      a_worst = max(check, key=lambda a: check[a]["change"])
      loss_diff = max(v["loss"] for v in check.values())
      acc_diff = max(v["accuracy"] for v in check.values())
      findings.append(Finding(
          f"norm={cond}: the rescaled networks compute the same function: the largest logit change over "
          f"the probe set was {worst['change']:.2g} (at α = {a_worst:g}; logits up to "
          f"{num(worst['logit'])}), "
          f"the probe-set loss differed by at most {loss_diff:.2g} nats and the accuracy by at most "
          f"{100 * acc_diff:.2g} points.",
          {"condition": cond, "max output change": worst["change"], "alpha": a_worst,
           "max loss difference": loss_diff, "max accuracy difference": acc_diff}))
  if curves:
    fig = ctx.figure("ratios", lambda p: ratio_figure(curves, full, p), (
        "Top: measures that Dinh et al.'s argument says a rescaling can change, divided by their value as "
        "trained (|ratio|, mean over seeds; log-log). Bottom: scale-invariant measures, |ratio − 1| (their "
        "relative change; floored at 1e-9 for the log axis; no point at α = 1, where it is 0 by definition), "
        "the dotted line at the 5% tolerance."
        + (" The path norm is drawn for the networks without normalization only: it ignores BatchNorm, so "
           "it is not defined for the others (their table gives its values)." if len(curves) > 1 or
           "none" not in curves else "")))
    if fig:
      blocks.insert(1, fig)
  return [Section("Results", blocks)], findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Dinh, Pascanu, Bengio & Bengio (2017, ICML, \"Sharp minima can generalize for deep nets\") show "
         "that for ReLU networks the rescaling (W1, W2) → (αW1, W2/α) leaves the function unchanged while "
         "the "
         "Hessian's top eigenvalue, Keskar et al.'s ε-sharpness and plain perturbation flatness can be made "
         "arbitrarily large; so flatness measured this way cannot by itself explain generalization. "
         "Adaptive sharpness (Kwon et al. 2021; Andriushchenko et al. 2023) and the path norm are invariant "
         "to this rescaling by construction."]
  items = []
  for f in findings:
    v = f.values
    if "expected" not in v:
      continue
    if v["metric"] == "lambda_max" and v["min ratio"] < 1:
      items.append(f"norm={v['condition']}: the trained network is not the flattest member of its rescaling "
                   f"family: λ_max fell to {num(v['min ratio'])}x at one α, so a rescaling can make the same "
                   "function look flatter as well as sharper.")
    if v["expected"].startswith("n/a") or v["metric"] in COVERED:
      continue
    agree = v["expected"] == v["observed"]
    size = (f"ratios {num(v['min ratio'])}–{num(v['max ratio'])}x" if v["observed"] == "changes" else
            f"at most {100 * v['max deviation']:.2g}% off")
    items.append(f"norm={v['condition']}, `{v['metric']}`: {v['observed']} ({size}): "
                 + (("agrees with Dinh et al." if v["expected"] == "changes" else
                     "invariant, as its construction implies") if agree else "differs from the expectation."))
  items.insert(0, "λ_max, adaptive average sharpness and the path norm are judged by the pre-registered "
               "criteria (verdict table); the other measures against a ±5% / two-standard-error tolerance:")
  if len(items) == 1:
    items.append("No measure on rescaled parameters was found: the comparison cannot be made.")
  return out + [items]


def _limitations(ctx: Context) -> list[str]:
  out = ["Worst-case sharpness and ε-sharpness are lower bounds from a few steps of projected ascent; "
         "their ratios carry the solver's error (the adaptive worst case starts from the same random "
         "point, so its invariance is exact only up to where the ascent stops).",
         "With BatchNorm the rescaled layer is followed by normalization in eval mode: the path norm is not "
         "meaningful for such networks."]
  eps = sorted({r.flat_config.get("model.knobs.bn_epsilon") for r in ctx.study.runs
                if r.flat_config.get("model.knobs.norm") == "batch"} - {None})
  if eps:
    out.append(f"BatchNorm's ε = {', '.join(f'{e:.3g}' for e in eps)}: eval-mode BatchNorm computes "
               "α(x − μ)/√(α²σ² + ε), which equals (x − μ)/√(σ² + ε) only as ε → 0, so the rescaled "
               "function differs by about ε/(2α²σ²) relative; Dinh et al.'s invariance is the ε → 0 one, "
               "and the study uses a small ε. This was changed after a run: with the default 1e-5 the "
               "BatchNorm scope failed `function_unchanged` and `adaptive_invariant` (the config's design "
               "history gives that run's numbers); no threshold was changed.")
  return out


TEMPLATE = Template(
    "reparameterization", TITLE,
    "Which sharpness and complexity measures change when a trained ReLU network is "
    "rescaled without changing the function it computes (Dinh et al. 2017), and which do not?",
    _applies, _results, _comparison, _limitations, quantities=_quantities)
