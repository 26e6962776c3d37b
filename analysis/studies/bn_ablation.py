"""Report template of the BatchNorm ablation (experiments/configs/bn_ablation.py): norm = batch / none /
layer over seeds, on accuracy, generalization gap, lambda_max, trace and spectral density, compared with
Santurkar et al. 2018 and Ghorbani et al. 2019."""

from analysis import runs, stats, wording
from analysis.document import Finding, Section, distinct, num, pct, seeds_text
from analysis.results import Context, Template, standard_results

TITLE = "BatchNorm ablation"

NORM_KEY = "model.knobs.norm"


def _bn_applies(ctx: Context) -> str | None:
  norms = distinct(_norm_of(r) for r in ctx.study.runs)
  if len(norms) < 2:
    return f"`{NORM_KEY}` takes one value ({', '.join(map(str, norms))}) across the runs"
  if "batch" not in norms:
    return f"no run uses `{NORM_KEY}=batch`, the reference of the ablation"
  return None


def _bn_groups(ctx: Context) -> dict[str, list[runs.Run]]:
  out = {}
  for r in ctx.study.runs:
    out.setdefault(_norm_of(r), []).append(r)
  return out


def _norm_of(run: runs.Run):
  return run.flat_config.get(NORM_KEY, "none")


def _bn_prepare(ctx: Context) -> Context:
  """The norm is a condition key even where no sweep index names it."""
  return ctx.with_key(NORM_KEY, _norm_of)


def _bn_results(ctx: Context):
  bars = ("test/accuracy", "gap/accuracy", "curv/lambda_max", "curv/trace")
  blocks = standard_results(ctx, bar_metrics=bars, bar_key=NORM_KEY)
  groups = _bn_groups(ctx)
  base = groups["batch"]
  findings = []
  for norm, rs in groups.items():
    if norm == "batch":
      continue
    what = "Removing BatchNorm" if norm == "none" else f"Replacing BatchNorm by norm={norm}"
    for metric, name in (("curv/lambda_max", "λ_max"), ("curv/trace", "the Hessian trace")):
      a, b = ctx.values(rs, metric), ctx.values(base, metric)
      if not (len(a) and len(b)):
        continue
      iv = stats.ratio_interval(a, b)
      r = iv.estimate
      verb = "raised" if r > 1 else "lowered"
      findings.append(Finding(
          f"{what} {verb} {name} {r:.2f}x (ratio of geometric means; means {num(a.mean())} vs "
          f"{num(b.mean())}; {wording.interval_text(iv, **wording.TIMES)}).",
          {"norm": norm, "metric": metric, "ratio": r, "ci": (iv.lo, iv.hi), "interval": iv.as_dict(),
           "mean": float(a.mean()), "mean batch": float(b.mean()), "n": len(a), "n batch": len(b)}))
    for metric, name in (("test/accuracy", "test accuracy"), ("gap/accuracy", "the accuracy gap")):
      a, b = ctx.values(rs, metric), ctx.values(base, metric)
      if not (len(a) and len(b)):
        continue
      iv = stats.difference_interval(a, b)
      d = iv.estimate
      show = pct if metric == "test/accuracy" else (lambda x: f"{100 * x:.2f} points")
      findings.append(Finding(
          f"{what} changed {name} by {100 * d:+.2f} points ({show(a.mean())} vs {show(b.mean())}; "
          f"{wording.interval_text(iv, **wording.POINTS)}).",
          {"norm": norm, "metric": metric, "difference": d, "ci": (iv.lo, iv.hi), "interval": iv.as_dict(),
           "mean": float(a.mean()), "mean batch": float(b.mean()), "n": len(a), "n batch": len(b)}))
    a, b = ctx.values(rs, "curv/num_outliers"), ctx.values(base, "curv/num_outliers")
    if len(a) and len(b):
      findings.append(Finding(
          f"Outlier eigenvalues above the bulk (SLQ): {num(a.mean())} with norm={norm} vs {num(b.mean())} "
          f"with BatchNorm (means over {seeds_text(len(a))} and {seeds_text(len(b))}).",
          {"norm": norm, "metric": "curv/num_outliers", "mean": float(a.mean()),
           "mean batch": float(b.mean())}))
  return [Section("Results", blocks)], findings


def _bn_comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Santurkar et al. (2018, NeurIPS, \"How does batch normalization help optimization?\") argue that "
         "BatchNorm makes the loss landscape smoother (smaller gradient Lipschitz constant, i.e. lower "
         "sharpness along the trajectory), and Ghorbani et al. (2019, ICML) find that without BatchNorm the "
         "Hessian has large isolated outlier eigenvalues that BatchNorm removes. Both predict a higher "
         "λ_max without BatchNorm."]
  items = []
  for f in findings:
    v = f.values
    if v.get("metric") == "curv/lambda_max" and v.get("norm") == "none":
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.TIMES)
      items.append(f"λ_max without / with BatchNorm = {v['ratio']:.2f}x: this {j.text}.")
    if v.get("metric") == "curv/num_outliers" and v.get("norm") == "none":
      more = v["mean"] > v["mean batch"]
      items.append(f"Outliers: {num(v['mean'])} without vs {num(v['mean batch'])} with BatchNorm; "
                   f"{'' if more else 'not '}the direction Ghorbani et al. report (counts are SLQ lower "
                   "bounds).")
  if not items:
    items.append("No curvature measurement of a run without normalization: the comparison cannot be made.")
  return out + [items] + ["Caveat: with BatchNorm in `eval` mode the measured Hessian is that of the "
                          "network with frozen running statistics, not the batch-statistics loss that "
                          "training descends."]


def _bn_limitations(ctx: Context) -> list[str]:
  return ["Ablating the normalization also changes the parameter count and the effective learning rate "
          "(BatchNorm makes preceding weights scale-invariant), so equal step sizes are not equal steps."]


TEMPLATE = Template(
    "bn_ablation", TITLE,
    "Does BatchNorm make the loss landscape smoother? Networks with BatchNorm, with LayerNorm "
    "and without normalization, compared over seeds on accuracy, generalization gap, and the training-loss "
    "Hessian's top eigenvalue, trace and spectral density.", _bn_applies, _bn_results, _bn_comparison,
    _bn_limitations, _bn_prepare)
