"""Report template of the `reparameterization` study (experiments/configs/reparameterization.py): each
measure on Dinh et al.'s function-preserving rescalings of the final network, as a ratio to its value on
the network as trained (alpha = 1), per normalization condition; the loss, accuracy and largest logit
change of each rescaled copy prove that the function did not change.

Inputs: the `sharp/<metric>` and `sharp/<metric>@alpha=<a>` columns of the runs table (the measures
evaluator, research/measures/tracking.py) and the records `measures/step<S>.json` (probe-set loss and
accuracy per alpha, from the worst-case and PAC-Bayes records).
"""

import json
import math
import re

import numpy as np
import pandas as pd

from analysis import style, tables
from analysis.report import Finding, Section, TableBlock
from analysis.templates import Context, Template, num, seeds_text, standard_results

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


def _ratios(ctx: Context, rs: list, metric: str, grid: list[float]) -> np.ndarray:
  """(seeds, alphas) value at alpha / value at alpha = 1 (NaN where missing)."""
  rows = []
  for r in rs:
    row = ctx.table.loc[ctx.table["run"] == r.name]
    if row.empty or f"sharp/{metric}" not in row:
      continue
    base = float(row[f"sharp/{metric}"].iloc[0])
    vals = [float(row[_col(metric, a)].iloc[0]) if _col(metric, a) in row else math.nan for a in grid]
    rows.append([v / base if base != 0 and math.isfinite(base) else math.nan for v in vals])
  return np.asarray(rows, np.float64).reshape(-1, len(grid))


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
  """One panel per condition: mean ratio to alpha = 1 against alpha, log-log; invariant measures dashed."""
  fig, axes = style.figure(ncols=len(curves), width=min(4.8 * len(curves) + 2.6, 11.0), height=3.8,
                           sharey=True)
  axes = np.atleast_1d(axes)
  xs = np.asarray(grid)
  for ax, (cond, by_metric) in zip(axes, curves.items()):
    for i, (metric, label, expected) in enumerate(m for m in MEASURES if m[0] in by_metric):
      y = np.abs(by_metric[metric])
      ax.plot(xs, y, marker="o", markersize=3, color=style.color(i),
              linestyle="--" if expected == "invariant" else "-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("rescaling α")
    ax.set_title(f"norm = {cond}", fontsize=10, loc="left")
  axes[0].set_ylabel("value / value at α = 1")
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside right center", fontsize=7)
  style.save(fig, path)
  return fig


def _results(ctx: Context):
  grid = [a for a in alphas(ctx.table)]
  full = sorted(set(grid) | {1.0})
  conds = _conditions(ctx)
  blocks = standard_results(ctx, bar_metrics=("test/accuracy", "gap/accuracy"), bar_key=NORM_KEY)
  findings, curves = [], {}
  for cond, rs in conds.items():
    rows, by_metric = [], {}
    for metric, label, expected in MEASURES:
      ratio = _ratios(ctx, rs, metric, full)
      if not len(ratio) or np.isnan(ratio).all():
        continue
      mean = np.nanmean(ratio, axis=0)
      by_metric[metric] = mean
      spread = float(np.nanmax(np.abs(np.log(np.abs(ratio)))))
      observed = "invariant" if spread <= math.log1p(INVARIANT) else "changes"
      rows.append({"measure": label} | {f"α = {a:g}": float(m) for a, m in zip(full, mean)}
                  | {"expected": expected, "observed": observed})
      if observed != expected or metric in ("lambda_max", "worst_case_l2", "worst_case_adaptive_l2",
                                            "epsilon_sharpness", "path_norm"):
        lo, hi = float(np.nanmin(mean)), float(np.nanmax(mean))
        i_lo, i_hi = int(np.nanargmin(mean)), int(np.nanargmax(mean))
        text = (f"norm={cond}: {label} ranged from {num(lo)}x (α = {full[i_lo]:g}) to {num(hi)}x "
                f"(α = {full[i_hi]:g}) of its value at α = 1 (mean over {seeds_text(len(ratio))}); "
                f"{'within' if observed == 'invariant' else 'beyond'} ±{100 * INVARIANT:.0f}%, "
                + ("as expected." if observed == expected else
                   f"although Dinh et al.'s argument {'predicts' if expected == 'changes' else 'does not'} "
                   f"change{'s' if expected == 'changes' else ''} it" + "."))
        findings.append(Finding(text, {"condition": cond, "metric": metric, "min ratio": lo, "max ratio": hi,
                                       "expected": expected, "observed": observed, "n": len(ratio)}))
    if not rows:
      continue
    curves[cond] = by_metric
    frame = pd.DataFrame(rows)
    blocks.append(TableBlock(f"ratios_{cond}", tables.frame_table(frame, scale_accuracy=False, caption=(
        f"norm={cond}: each measure on the rescaled network divided by its value at α = 1 (the network as "
        f"trained), mean over {seeds_text(len(rs))}. 'expected': Dinh et al.'s argument (plain measures "
        "change, scale-invariant ones do not); 'observed': 'invariant' when every ratio of every seed is "
        f"within ±{100 * INVARIANT:.0f}%."))))
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
        "Each measure on the rescaled network divided by its value as trained (|ratio|, mean over seeds; "
        "log-log). Solid: measures Dinh et al.'s argument says a rescaling changes; dashed: scale-invariant "
        "measures, expected on the horizontal line at 1."))
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
    agree = v["expected"] == v["observed"]
    items.append(f"norm={v['condition']}, `{v['metric']}`: {v['observed']} "
                 f"(ratios {num(v['min ratio'])}–{num(v['max ratio'])}x): "
                 + ("agrees with Dinh et al." if agree else "differs from the expectation."))
  if not items:
    items.append("No measure on rescaled parameters was found: the comparison cannot be made.")
  return out + [items]


def _limitations(ctx: Context) -> list[str]:
  out = ["Worst-case sharpness and ε-sharpness are lower bounds from a few steps of projected ascent; "
         "their ratios carry the solver's error (the adaptive worst case starts from the same random "
         "point, so its invariance is exact only up to where the ascent stops).",
         "With BatchNorm the rescaled layer is followed by normalization in eval mode: the function is "
         "unchanged up to BatchNorm's ε, and the path norm is not meaningful for such networks."]
  return out


TEMPLATE = Template(
    "reparameterization", "Which sharpness and complexity measures change when a trained ReLU network is "
    "rescaled without changing the function it computes (Dinh et al. 2017), and which do not?",
    _applies, _results, _comparison, _limitations)
