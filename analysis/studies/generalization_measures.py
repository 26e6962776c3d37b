"""Report template of the `generalization_measures` study (experiments/configs/generalization_measures.py):
every measure of the final networks ranked by Kendall's tau with the generalization gap over all runs and
by Jiang et al.'s granulated Kendall coefficient Psi over the hyperparameter axes of the grid
(research.core.ranking.kendall_tau, granulated_kendall), with measure-vs-gap scatter plots of the best ones.

Each measure is taken in its "complexity" orientation, as Jiang et al. do (larger should mean a larger
gap): 1/sigma^2 for the PAC-Bayes sigmas, 1/gamma^2 for the output margin; sharpness, norms, lambda_max
and trace as they are. Inputs: the `sharp/` and `gap/` columns of the runs table.
"""

import dataclasses
import math

import numpy as np
import pandas as pd

from analysis import criteria, plots, stats, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import Context, Template, num, pct, standard_results
from research.core.errors import UserError
from research.core.ranking import granulated_kendall, kendall_tau

TITLE = "Generalization measures"
GAP = "gap/accuracy"
# (metric, label, family)
MEASURES = (
    ("pacbayes_flatness", "PAC-Bayes flatness 1/σ²", "sharpness"),
    ("pacbayes_mag_flatness", "PAC-Bayes mag. flatness 1/σ'²", "sharpness"),
    ("pacbayes_init", "PAC-Bayes bound (init)", "sharpness"),
    ("pacbayes_orig", "PAC-Bayes bound (orig)", "sharpness"),
    ("pacbayes_mag_init", "PAC-Bayes mag. bound (init)", "sharpness"),
    ("pacbayes_mag_orig", "PAC-Bayes mag. bound (orig)", "sharpness"),
    ("worst_case_l2", "worst-case sharpness (l2)", "sharpness"),
    ("worst_case_adaptive_l2", "adaptive worst-case sharpness", "sharpness"),
    ("average_plain", "average sharpness", "sharpness"),
    ("average_adaptive", "adaptive average sharpness", "sharpness"),
    ("epsilon_sharpness", "ε-sharpness (Keskar)", "sharpness"),
    ("lambda_max", "λ_max", "sharpness"),
    ("hessian_trace", "Hessian trace", "sharpness"),
    ("fisher_rao_norm_sq", "Fisher-Rao norm²", "norm"),
    ("path_norm", "path norm", "norm"),
    ("log_prod_of_spec", "log prod. of spectral norms", "norm"),
    ("log_prod_of_fro", "log prod. of Frobenius norms", "norm"),
    ("log_sum_of_spec", "log sum of spectral norms", "norm"),
    ("log_sum_of_fro", "log sum of Frobenius norms", "norm"),
    ("log_prod_of_spec_over_margin", "log prod. of spec. / margin²", "norm"),
    ("log_prod_of_fro_over_margin", "log prod. of Frob. / margin²", "norm"),
    ("fro_over_spec", "Σ Frobenius² / spectral²", "norm"),
    ("param_norm", "parameter norm²", "norm"),
    ("fro_dist", "Frobenius distance to init", "norm"),
    ("dist_spec_init", "spectral distance to init", "norm"),
    ("distance_from_init", "distance from init", "norm"),
    ("inverse_margin_sq", "inverse margin 1/γ²", "margin"),
    ("num_params", "number of parameters", "count"),
)


def _applies(ctx: Context) -> str | None:
  if GAP not in ctx.table.columns:
    return f"no run has `{GAP}`"
  have = [m for m, _, _ in MEASURES if f"sharp/{m}" in ctx.table.columns]
  if not have:
    return "no run has end-of-training measures (`sharp/...` from the measures evaluator)"
  if len(ctx.study.runs) < 3:
    return "fewer than 3 runs to rank"
  return None


def ranking(ctx: Context, gap: str = GAP) -> pd.DataFrame:
  """One row per measure: tau over all runs, Psi and psi per axis (Jiang et al.), scipy's p of tau-b."""
  axes = [k for k in ctx.keys if k in ctx.table.columns]
  done = ctx.table
  if "status" in done:
    done = done[done["status"].isin(["done", "early_stopped"])]
  rows = []
  for metric, label, family in MEASURES:
    col = f"sharp/{metric}"
    if col not in done.columns:
      continue
    sub = done[axes + [col, gap]].copy()
    sub[col], sub[gap] = (pd.to_numeric(sub[c], errors="coerce").astype(float) for c in (col, gap))
    sub = sub[np.isfinite(sub[col]) & np.isfinite(sub[gap])]
    if len(sub) < 3:
      continue
    row = {"measure": label, "family": family, "τ": kendall_tau(sub[col], sub[gap])}
    tau_b, p, _ = stats.kendall_tau(sub[col], sub[gap])
    if axes:
      try:
        g = granulated_kendall(sub, col, gap, axes)
        row["Ψ"] = g["Psi"]
        row |= {f"ψ {a.rsplit('.', 1)[-1]}": v for a, v in g["psi"].items()}
      except UserError:
        row["Ψ"] = math.nan
    row |= {"τ_b": tau_b, "p (τ_b)": p, "n": len(sub), "metric": metric}
    rows.append(row)
  frame = pd.DataFrame(rows)
  if len(frame):
    frame = frame.sort_values("Ψ" if "Ψ" in frame else "τ", ascending=False, na_position="last")
  return frame.reset_index(drop=True)


def _place(rank: pd.DataFrame, row: pd.Series) -> tuple[int, int]:
  """(1 + the number of measures ranked strictly above `row`, the number of others with the same value):
  competition ranking by Ψ (by τ without Ψ), so equal coefficients share a place."""
  key = "Ψ" if "Ψ" in rank else "τ"
  values = pd.to_numeric(rank[key], errors="coerce")
  v = row[key]
  if not math.isfinite(v):
    return int(row.name) + 1, 0
  return int((values > v).sum()) + 1, int((values == v).sum()) - 1


def _results(ctx: Context):
  # The standard results by batch size only (its runs share the step count; 16 conditions would not fit
  # one legend), pooling the grid points of the other axes (not seeds: the captions say "runs"); the
  # measure-vs-gap plots are drawn below.
  pooled = dataclasses.replace(ctx.study, override_keys=[k for k in ctx.keys if k == "training.batch_size"])
  plain = dataclasses.replace(ctx, study=pooled, table=ctx.table.drop(columns=[
      c for c in ctx.table.columns if str(c).startswith("sharp/")]))
  blocks = standard_results(plain, bar_metrics=(), over="runs")
  cols = [k for k in ctx.keys if k in ctx.table.columns] + [
      m for m in ("eval_train/accuracy", "eval_train/loss", "test/accuracy", "gap/accuracy", "gap/loss")
      if m in ctx.table.columns]
  per_run = ctx.table[cols].rename(columns={k: k.rsplit(".", 1)[-1] for k in ctx.keys})
  blocks.append(TableBlock("runs", tables.frame_table(per_run, caption=(
      "Every run: train (the fixed eval_train subset) and test accuracy in percent, losses in nats, gaps: "
      "train minus test accuracy (points), test minus train loss."))))
  findings = []
  rank = ranking(ctx)
  if not len(rank):
    return [Section("Results", blocks)], findings
  shown = rank.drop(columns=["metric"])
  axes_text = ", ".join(f"`{k}`" for k in ctx.keys)
  blocks.insert(0, TableBlock("ranking", tables.frame_table(shown, scale_accuracy=False, caption=(
      f"Measures ranked by the granulated Kendall coefficient Ψ with the accuracy gap (train minus test "
      f"accuracy) over the grid axes {axes_text} (Jiang et al. 2020, eq. 4: ψ per axis is the mean τ over "
      "groups of runs that differ only in that axis); τ: Kendall's τ (tau-a, Jiang et al. eq. 3) over all "
      "runs; τ_b and p: scipy's tau-b over all runs and its two-sided p-value (the statistic the verdict "
      "table judges). Measures in their complexity orientation (larger should mean a larger gap)."))))
  loss_rank = ranking(ctx, "gap/loss") if "gap/loss" in ctx.table.columns else pd.DataFrame()
  top = rank.head(4)
  for i, r in enumerate(top.itertuples()):
    metric, label = r.metric, r.measure
    place, tied = _place(rank, rank.loc[r.Index])
    where = f"rank {place} by Ψ" + (f", tied with {tied} other{'s' if tied > 1 else ''}" if tied else "")
    sub = ctx.table[[f"sharp/{metric}", GAP]].apply(pd.to_numeric, errors="coerce").dropna()
    groups = None
    if "training.batch_size" in ctx.table.columns:
      groups = [f"batch {int(b)}" for b in ctx.table.loc[sub.index, "training.batch_size"]]
    x, y = sub[f"sharp/{metric}"].to_numpy(), 100 * sub[GAP].to_numpy()
    fig = ctx.figure(f"measure_vs_gap_{i + 1}_{metric}", lambda p, x=x, y=y, label=label, groups=groups:
                     plots.measure_vs_gap(x, y, measure_name=label, gap_name="accuracy gap (points)",
                                          groups=groups, path=p),
                     f"{label} ({where}) against the accuracy gap, one point per run; τ in the "
                     "title is scipy's tau-b with its p-value.")
    if fig:
      blocks.append(fig)
  gaps = ctx.table[GAP].dropna()
  train = ctx.table.get("eval_train/accuracy", pd.Series(dtype=float)).dropna()
  if len(gaps):
    findings.append(Finding(
        f"Over {len(gaps)} runs the accuracy gap ranged from {100 * gaps.min():.2f} to "
        f"{100 * gaps.max():.2f} points"
        + (f", with training accuracy (fixed training subset) from {pct(train.min())} to "
           f"{pct(train.max())}" if len(train) else "") + ".",
        {"gap min": float(gaps.min()), "gap max": float(gaps.max()),
         "train min": float(train.min()) if len(train) else None,
         "train max": float(train.max()) if len(train) else None, "n": len(gaps)}))
  best = rank.iloc[0]
  worst = rank.iloc[-1]
  for which, r in (("highest", best), ("lowest", worst)):
    findings.append(Finding(
        f"The {which} granulated Kendall coefficient: {r['measure']}, Ψ = {r.get('Ψ', math.nan):.2f} "
        f"(τ over all {r['n']} runs {r['τ']:.2f}, p = {r['p (τ_b)']:.2g}).",
        {"rank": which, "metric": r["metric"], "Psi": float(r.get("Ψ", math.nan)), "tau": float(r["τ"]),
         "p": float(r["p (τ_b)"]), "n": int(r["n"])}))
  for family in ("sharpness", "norm"):
    fam = rank[rank["family"] == family]
    if len(fam) and "Ψ" in fam:
      findings.append(Finding(
          f"{family.capitalize()}-based measures: median Ψ {fam['Ψ'].median():.2f} over {len(fam)} measures "
          f"(from {fam['Ψ'].min():.2f} to {fam['Ψ'].max():.2f}); median |τ| {fam['τ'].abs().median():.2f}.",
          {"family": family, "median Psi": float(fam["Ψ"].median()), "min Psi": float(fam["Ψ"].min()),
           "max Psi": float(fam["Ψ"].max()), "median abs tau": float(fam["τ"].abs().median()),
           "count": len(fam)}))
  for metric in ("pacbayes_mag_flatness", "pacbayes_flatness", "worst_case_adaptive_l2", "lambda_max",
                 "log_prod_of_spec"):
    r = rank[rank["metric"] == metric]
    if len(r):
      r = r.iloc[0]
      place, tied = _place(rank, r)
      text = (f"{r['measure']}: Ψ = {r.get('Ψ', math.nan):.2f}, τ = {r['τ']:.2f}, τ_b = {r['τ_b']:.2f} "
              f"(p = {r['p (τ_b)']:.2g}, {r['n']} runs; rank {place} of {len(rank)} by Ψ"
              + (f", tied with {tied} other measure{'s' if tied > 1 else ''})" if tied else ")"))
      lr = loss_rank[loss_rank["metric"] == metric] if len(loss_rank) else loss_rank
      if len(lr):
        text += f"; against the loss gap Ψ = {lr.iloc[0].get('Ψ', math.nan):.2f}, τ = {lr.iloc[0]['τ']:.2f}"
      findings.append(Finding(text + ".", {"metric": metric, "Psi": float(r.get("Ψ", math.nan)),
                                            "tau": float(r["τ"]), "tau_b": float(r["τ_b"]),
                                            "p": float(r["p (τ_b)"]), "n": int(r["n"]), "place": place}))
  if len(loss_rank):
    blocks.insert(1, TableBlock("ranking_loss_gap", tables.frame_table(
        loss_rank.drop(columns=["metric"]), scale_accuracy=False,
        caption="The same ranking against the loss gap (test minus train cross-entropy).")))
  return [Section("Results", blocks)], findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Jiang et al. (2020, ICLR, \"Fantastic generalization measures and where to find them\") trained "
         "over 10,000 CNNs on CIFAR-10 and SVHN and found PAC-Bayes flatness and sharpness measures (the "
         "magnitude-aware ones among the best) the most predictive by the granulated coefficient, and "
         "norm-based measures (products of spectral and Frobenius norms) poor or negatively correlated. "
         "Andriushchenko et al. (2023, ICML, \"A modern look at the relationship between sharpness and "
         "generalization\") found that adaptive worst-case sharpness is not consistently correlated with "
         "generalization across modern settings."]
  items = []
  fam = {f.values["family"]: f.values for f in findings if "family" in f.values}
  if "sharpness" in fam and "norm" in fam:
    s, n = fam["sharpness"]["median Psi"], fam["norm"]["median Psi"]
    items.append(f"Median Ψ of sharpness-based measures {s:.2f} vs norm-based {n:.2f} (descriptive: Ψ has no "
                 "interval here, each ψ averages groups of two runs).")
  names = {"pacbayes_mag_flatness": "Magnitude-aware PAC-Bayes flatness",
           "pacbayes_flatness": "PAC-Bayes flatness"}
  level = criteria.test_level(ctx.study)  # the verdict table's level
  for f in findings:
    v = f.values
    if v.get("metric") in names and "place" in v:
      j = wording.judge_correlation(v["tau_b"], v["p"], v["n"], ">", level=level)
      items.append(f"{names[v['metric']]} (Ψ = {v['Psi']:.2f}, rank {v['place']} by Ψ): a larger value with "
                   f"a larger gap, as Jiang et al. found: this {j.text}.")
    if v.get("metric") == "worst_case_adaptive_l2" and "place" in v:
      items.append(f"Adaptive worst-case sharpness: Ψ = {v['Psi']:.2f}, τ_b = {v['tau_b']:.2f} (p = "
                   f"{v['p']:.2g}, {v['n']} runs); Andriushchenko et al. find no consistent correlation, "
                   "which criterion `adaptive_sharpness_no_correlation` judges: it holds only if the whole "
                   "interval of τ (verdict table) lies inside ±0.3, not when τ is merely small.")
  if not items:
    items.append("Too few measures to compare.")
  return out + [items]


def _limitations(ctx: Context) -> list[str]:
  n = len(ctx.study.runs)
  return [f"{n} runs: one grid point each, no seeds; a single τ over {n} runs has a standard error of about "
          f"{num(math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))))} under independence, and each ψ is a mean "
          "over groups of only two runs.",
          "Networks were trained for a fixed number of epochs, not to a common training loss as in Jiang et "
          "al.; the train-accuracy finding states how far apart they ended.",
          "Sharpness values are lower bounds from a few ascent steps, PAC-Bayes σ from a short bisection "
          "with few noise samples (see the settings in each run's measures/ record)."] + _margin_note(ctx)


def _margin_note(ctx: Context) -> list[str]:
  """How many runs have no positive output margin (Jiang et al.'s margin measures are undefined there)."""
  if "sharp/output_margin" not in ctx.table.columns:
    return []
  gamma = pd.to_numeric(ctx.table["sharp/output_margin"], errors="coerce").dropna()
  bad = int((gamma <= 0).sum())
  if not bad:
    return []
  return [f"In {bad} of {len(gamma)} runs the output margin γ (the 10th percentile of z_y − max_j≠y z_j on "
          "the probe set) is not positive: those networks misclassify more than a tenth of the probe "
          "examples, and the inverse margin 1/γ² and the norms divided by γ² are undefined for them and left "
          "out of those measures' τ and Ψ (their n column); in Jiang et al.'s protocol every network is "
          "trained to a training cross-entropy of 0.01 first, where γ > 0."]

TEMPLATE = Template(
    "generalization_measures", TITLE,
    "Which sharpness, norm and margin measures of the trained networks rank a "
    "population of networks by their generalization gap (Jiang et al. 2020; Andriushchenko et al. 2023)?",
    _applies, _results, _comparison, _limitations)
