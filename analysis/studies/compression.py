"""Report template of the `compression` study (experiments/configs/compression.py): accuracy lost to
post-training quantization and pruning (`compress/` metrics, research/evaluators/compression.py)
against the flatness of the solution (`curv/lambda_max`, `curv/trace` at the end of training).

Drops are uncompressed minus compressed accuracy on the test split, per run (its own baseline), in
percentage points. The headline level of each method is the mildest one whose mean drop over all runs
reaches 1 point (else the harshest): milder levels cost nothing measurable, and harsher ones destroy
every network alike.
"""

import re

import numpy as np
import pandas as pd

from analysis import plots, stats, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import (
  Context,
  Template,
  generic_findings,
  num,
  pct,
  seeds_text,
  standard_results,
)

TITLE = "Compression and flatness"
MEASURES = (("curv/lambda_max", "λ_max"), ("curv/trace", "Hessian trace"))
_LEVEL = re.compile(r"^compress/(?P<split>.+)_drop_(?P<level>int\d+|prune[0-9.]+)$")
HEADLINE_POINTS = 1.0


def levels(table: pd.DataFrame, split: str) -> dict[str, list[tuple[str, float]]]:
  """{"quantize": [(name, bits), ...] most bits first, "prune": [(name, sparsity), ...] mildest first}
  of the `compress/<split>_drop_<level>` columns."""
  out = {"quantize": [], "prune": []}
  for col in table.columns:
    m = _LEVEL.match(col)
    if not m or m["split"] != split or not table[col].notna().any():
      continue
    name = m["level"]
    if name.startswith("int"):
      out["quantize"].append((name, float(name[3:])))
    else:
      out["prune"].append((name, float(name[5:])))
  out["quantize"].sort(key=lambda t: -t[1])
  out["prune"].sort(key=lambda t: t[1])
  return out


def _split(ctx: Context) -> str | None:
  for s in ("test", "valid", "eval_train", "train"):
    if f"compress/{s}_accuracy" in ctx.table.columns:
      return s
  return None


def _applies(ctx: Context) -> str | None:
  split = _split(ctx)
  if split is None:
    return "no run logged compression metrics (`compress/<split>_accuracy`, config `compression.at_end`)"
  if not any(levels(ctx.table, split).values()):
    return "no compression level was measured"
  return None


def _drops(ctx: Context, split: str, name: str) -> np.ndarray:
  """(num_runs,) accuracy drop in points, in the order of ctx.table."""
  col = pd.to_numeric(ctx.table[f"compress/{split}_drop_{name}"], errors="coerce")
  return 100.0 * col.to_numpy(np.float64)


def headline(ctx: Context, split: str, method_levels: list[tuple[str, float]]) -> str | None:
  """The mildest level whose mean drop over all runs is >= HEADLINE_POINTS (else the harshest)."""
  for name, _ in method_levels:
    if np.nanmean(_drops(ctx, split, name)) >= HEADLINE_POINTS:
      return name
  return method_levels[-1][0] if method_levels else None


def _results(ctx: Context):
  split = _split(ctx)
  lv = levels(ctx.table, split)
  groups = ctx.groups()
  key = ctx.keys[0] if len(ctx.keys) == 1 else None
  blocks = standard_results(ctx, bar_metrics=("test/accuracy", "curv/lambda_max", "curv/trace"), bar_key=key)
  findings = []
  run_names = ctx.table["run"].tolist()
  labels = {r.name: label for label, rs in groups.items() for r in rs}
  grp = [labels.get(n, "?") for n in run_names]

  # Drop per condition and level (table), curves over levels (figures).
  all_levels = lv["quantize"] + lv["prune"]
  cols = {}
  for name, _ in all_levels:
    cols[f"drop {name}"] = _drops(ctx, split, name)
  frame = pd.DataFrame({"condition": grp, **cols})
  for m, _ in MEASURES:
    if m in ctx.table.columns:
      frame[m] = pd.to_numeric(ctx.table[m], errors="coerce").to_numpy(np.float64)
  frame["baseline"] = 100.0 * pd.to_numeric(ctx.table[f"compress/{split}_accuracy"], errors="coerce")
  names = {f"drop {n}": f"{n} (pts)" for n, _ in all_levels} | {"baseline": f"{split} acc. (%)"}
  metric_cols = ["baseline"] + [m for m, _ in MEASURES if m in frame.columns] + list(cols)
  t = tables.mean_std_table(frame, ["condition"], metric_cols, names=names,
                            better={c: "min" for c in cols} | {"baseline": "max"}, caption=(
      f"Uncompressed {split} accuracy, flatness at the end of training (λ_max and trace of the training-loss "
      f"Hessian) and the {split} accuracy drop (uncompressed minus compressed, percentage points) at each "
      "level: intN = N-bit symmetric fake quantization of the kernels, pruneS = magnitude pruning of a "
      "fraction S of the kernel entries. Mean ± std over seeds; the smallest drop per level in bold."))
  blocks.append(TableBlock("compression", t))
  for method, xlabel in (("quantize", "bits per weight (kernels; fewer = coarser)"),
                         ("prune", "sparsity (fraction of kernel entries set to 0)")):
    ls = lv[method]
    if not ls:
      continue
    x = np.asarray([v for _, v in ls])
    acc = {}
    for label in dict.fromkeys(grp):
      sel = np.asarray([g == label for g in grp])
      acc[label] = 1.0 - np.stack([_drops(ctx, split, n)[sel] / 100.0 for n, _ in ls], axis=1)
    what = "quantization" if method == "quantize" else "pruning"
    fig = ctx.figure(f"{what}_drop", lambda p, x=x, acc=acc, xlabel=xlabel: plots.compression_curves(
        x, acc, {k: 1.0 for k in acc}, xlabel=xlabel, path=p),
        f"{split.capitalize()} accuracy lost to post-training {what} (percentage points, each run against "
        "its own uncompressed accuracy), mean over seeds with a band of one standard deviation.")
    if fig:
      blocks.append(fig)

  # Rank correlation of drop with flatness, at every level (table) and the headline levels (figures).
  rows = []
  for name, _ in all_levels:
    row = {"level": name}
    for m, short in MEASURES:
      if m in ctx.table.columns:
        tau, p, n = stats.kendall_tau(ctx.table[m], _drops(ctx, split, name))
        row |= {f"τ ({short})": tau, f"p ({short})": p}
    row["runs"] = int(np.isfinite(_drops(ctx, split, name)).sum())
    rows.append(row)
  if rows and len(rows[0]) > 2:
    blocks.append(TableBlock("kendall", tables.frame_table(pd.DataFrame(rows), scale_accuracy=False, caption=(
        "Kendall's τ_b between each flatness measure and the accuracy drop, over all runs (conditions and "
        "seeds pooled), with its two-sided p-value. The prediction (flat minima tolerate weight noise) is "
        "τ > 0."))))
  heads = [h for h in (headline(ctx, split, lv["quantize"]), headline(ctx, split, lv["prune"])) if h]
  for name in heads:
    d = _drops(ctx, split, name)
    for m, short in MEASURES:
      if m not in ctx.table.columns:
        continue
      vals = pd.to_numeric(ctx.table[m], errors="coerce").to_numpy(np.float64)
      fig = ctx.figure(f"drop_{name.replace('.', '_')}_vs_{m.split('/')[1]}",
                       lambda p, vals=vals, d=d, short=short, name=name: plots.measure_vs_gap(
                           vals, d, measure_name=short, gap_name=f"{split} accuracy drop at {name} (points)",
                           groups=grp if len(set(grp)) > 1 else None, path=p),
                       f"Accuracy drop at {name} against {short} at the end of training, one point per run; "
                       "Kendall's τ over the runs in the title.")
      if fig:
        blocks.append(fig)
      tau, p, n = stats.kendall_tau(vals, d)
      findings.append(Finding(
          f"At {name}, Kendall's τ between {short} and the {split} accuracy drop is {tau:.2f} (p = {p:.2g}, "
          f"{n} runs); the drop ranged {np.nanmin(d):.2f}–{np.nanmax(d):.2f} points.",
          {"level": name, "measure": m, "tau": tau, "p": p, "n": n,
           "drop min": float(np.nanmin(d)), "drop max": float(np.nanmax(d))}))

  # Per condition: flatness and headline drops; flattest vs sharpest condition.
  lam = {label: ctx.values(rs, "curv/lambda_max") for label, rs in groups.items()}
  for label, rs in groups.items():
    sel = np.asarray([g == label for g in grp])
    parts = []
    for m, short in MEASURES:
      v = ctx.values(rs, m)
      if len(v):
        parts.append(f"{short} {num(float(v.mean()))}")
    for name in heads:
      iv = stats.mean_interval(_drops(ctx, split, name)[sel])
      if not iv.n[0]:
        continue
      ci = wording.interval_text(iv, fmt=lambda x: f"{x:.2f}")
      err = ctx.values(rs, f"compress/weight_error_{name}")
      err_text = f", relative weight error {float(err.mean()):.3f}" if len(err) else ""
      parts.append(f"drop at {name} {iv.estimate:.2f} points ({ci}{err_text})")
    if not parts:
      continue
    base = ctx.values(rs, f"compress/{split}_accuracy")
    acc = f"uncompressed {split} accuracy {pct(float(base.mean()))}, " if len(base) else ""
    findings.append(Finding(f"{label} ({seeds_text(len(rs))}): {acc}" + "; ".join(parts) + ".",
                            {"condition": label, "lambda_max": float(lam[label].mean()) if len(lam[label])
                             else None}))
  ranked = sorted((float(v.mean()), label) for label, v in lam.items() if len(v))
  if len(ranked) >= 2:
    (lo_lam, flat), (hi_lam, sharp) = ranked[0], ranked[-1]
    fsel = np.asarray([g == flat for g in grp])
    ssel = np.asarray([g == sharp for g in grp])
    for name in heads:
      d = _drops(ctx, split, name)
      iv = stats.difference_interval(d[fsel], d[ssel])
      findings.append(Finding(
          f"At {name} the flattest condition by λ_max ({flat}, λ_max {num(lo_lam)}) lost "
          f"{np.nanmean(d[fsel]):.2f} points and the sharpest ({sharp}, λ_max {num(hi_lam)}) "
          f"{np.nanmean(d[ssel]):.2f}: a difference of {iv.estimate:+.2f} points "
          f"({wording.interval_text(iv, 'points', lambda x: f'{x:+.2f}')}; negative: the flatter solution "
          "lost less).",
          {"level": name, "flat": flat, "sharp": sharp, "difference": iv.estimate, "ci": (iv.lo, iv.hi),
           "interval": iv.as_dict()}))
  return [Section("Results", blocks)], findings + generic_findings(ctx)


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Hochreiter & Schmidhuber (1997, \"Flat minima\", Neural Computation) argue that a flat minimum "
         "can be specified with low-precision weights (a short description length); the second-order "
         "argument of Optimal Brain Damage (LeCun, Denker & Solla 1990) and Optimal Brain Surgeon (Hassibi & "
         "Stork 1993) puts the loss increase of a weight perturbation δ at about ½ δᵀHδ, which HAWQ (Dong et "
         "al. 2019) uses to give fewer bits to low-curvature layers. Both predict a smaller accuracy drop "
         "under quantization and pruning for solutions with smaller λ_max or trace: Kendall's τ > 0 between "
         "flatness and drop."]
  items = ["The verdict table judges the pre-registered levels (4-bit quantization and 90% sparsity); the "
           "levels below are the mildest at which the drop reaches 1 point on average, chosen after seeing "
           "the drops, so they are exploratory."]
  items += _registered_spread(ctx)
  for f in findings:
    v = f.values
    if "tau" in v and "measure" in v:
      short = dict(MEASURES)[v["measure"]]
      j = wording.judge_correlation(v["tau"], v["p"], v["n"], ">")
      items.append(f"{v['level']} (level chosen from the drops), {short}: sharper solutions lost more "
                   f"(τ > 0): this {j.text}.")
  if len(items) == 1:
    items.append("No run has both a flatness measure and a compression drop: the comparison cannot be made.")
  return out + [items] + [
      "Caveat: the conditions that change flatness (step size, SAM) also change the accuracy and the weight "
      "distribution (and with them the per-channel quantization step and which weights are small), so a "
      "rank correlation over these runs is not a controlled test of flatness alone."]


def _registered_spread(ctx: Context) -> list[str]:
  """At each pre-registered level (the criteria's `compress/test_drop_<level>`): how far apart the
  conditions' mean drops are, against the seed-to-seed spread within a condition."""
  split = _split(ctx)
  registered = [c.get("quantity", "") for c in (ctx.study.index or {}).get("criteria") or []
                if isinstance(c, dict)]
  names = list(dict.fromkeys(q.removeprefix(f"compress/{split}_drop_") for q in registered
                             if q.startswith(f"compress/{split}_drop_")))
  out = []
  order = {r.name: i for i, r in enumerate(ctx.study.runs)}
  for name in names:
    if f"compress/{split}_drop_{name}" not in ctx.table.columns:
      continue
    drops = _drops(ctx, split, name)
    means, stds = [], []
    for rs in ctx.groups().values():
      d = drops[[order[r.name] for r in rs]]
      d = d[np.isfinite(d)]
      if d.size:
        means.append(d.mean())
      if d.size > 1:
        stds.append(d.std(ddof=1))
    if len(means) > 1 and stds:
      out.append(f"At the pre-registered level {name} the conditions' mean drops span "
                 f"{min(means):.2f}–{max(means):.2f} points, a range of {max(means) - min(means):.2f}, "
                 f"against a seed-to-seed standard deviation within a condition of {np.mean(stds):.2f} "
                 "points on average: the ordering by flatness is judged on that signal-to-noise.")
  return out


def _limitations(ctx: Context) -> list[str]:
  out = []  # the common limitations are added by the report skeleton
  out.append("λ_max and the trace are not invariant to reparameterizations that leave the function "
             "unchanged (Dinh, Pascanu, Bengio & Bengio 2017, \"Sharp minima can generalize for deep nets\", "
             "ICML), while per-channel quantization is partly invariant to them: a weak link can be the "
             "measure's fault, not the hypothesis'.")
  out.append("Compression is post-training without fine-tuning or recalibration (BatchNorm statistics, if "
             "any, are those of the uncompressed network); kernels only, biases kept in float32.")
  out.append("The Hessian is that of the training loss on a fixed subset of training examples, measured "
             "once at the end; the drops are on the test split, whose size bounds their resolution (one "
             "example of 10,000 is 0.01 points).")
  return out


TEMPLATE = Template(
    "compression", TITLE,
    "Do flatter minima lose less accuracy under post-training compression? Solutions of "
    "differing flatness (λ_max, Hessian trace) quantized to fewer bits and magnitude-pruned to higher "
    "sparsity: the accuracy drop per level, and its rank correlation with flatness over runs.",
    _applies, _results, _comparison, _limitations)
