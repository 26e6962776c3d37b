"""Report template of the `sam` study (experiments/configs/sam.py): SGD, SAM and ASAM over seeds, compared
on test accuracy, generalization gap, lambda_max and trace (the curvature tracker) and worst-case
sharpness, plain and adaptive (the measures evaluator), each method against SGD with Welch intervals over
seeds (analysis/wording.py words the verdicts).

The method of a run is read from its config: `optimizer.sam.rho = 0` is SGD, `optimizer.sam.adaptive`
is ASAM, otherwise SAM.
"""

import dataclasses

from analysis import plots, stats, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import Context, Template, num, pct, standard_results

TITLE = "Sharpness-aware minimization"
METHOD = "method"
METRICS = ("test/accuracy", "gap/accuracy", "gap/loss", "curv/lambda_max", "curv/trace",
           "sharp/worst_case_l2", "sharp/worst_case_adaptive_l2")
NAMES = {"sharp/worst_case_l2": "worst case l2", "sharp/worst_case_adaptive_l2": "adaptive worst case"}
LABELS = {"curv/lambda_max": "λ_max", "curv/trace": "the Hessian trace",
          "sharp/worst_case_l2": "plain worst-case sharpness", "sharp/worst_case_adaptive_l2":
          "adaptive worst-case sharpness"}
ORDER = ("sgd", "sam", "asam")


def method_of(flat_config: dict) -> str:
  if not flat_config.get("optimizer.sam.rho"):
    return "sgd"
  return "asam" if flat_config.get("optimizer.sam.adaptive") else "sam"


def _applies(ctx: Context) -> str | None:
  methods = {method_of(r.flat_config) for r in ctx.study.runs}
  if "sgd" not in methods or len(methods) < 2:
    return f"the runs do not compare SAM or ASAM with SGD (methods: {', '.join(sorted(methods))})"
  return None


def _results(ctx: Context):
  table = ctx.table.copy()
  table[METHOD] = [method_of(r.flat_config) for r in ctx.study.runs]
  rs = [dataclasses.replace(r, overrides=r.overrides | {METHOD: method_of(r.flat_config)})
        for r in ctx.study.runs]
  study = dataclasses.replace(ctx.study, runs=rs, override_keys=[METHOD])
  mctx = dataclasses.replace(ctx, study=study, table=table)
  bars = ("test/accuracy", "gap/accuracy", "curv/lambda_max", "sharp/worst_case_l2",
          "sharp/worst_case_adaptive_l2")
  plain = dataclasses.replace(mctx, table=table.drop(columns=[c for c in table.columns
                                                              if str(c).startswith("sharp/")]))
  blocks = standard_results(plain, bar_metrics=(), bar_key=METHOD)  # bars with the sharpness below
  blocks.insert(0, TableBlock("methods", tables.mean_std_table(table, [METHOD], METRICS, names=NAMES,
                                                               caption=(
      "Mean ± sample standard deviation over seeds per method; accuracies in percent, gaps in points / "
      "nats. λ_max and trace: the training-loss Hessian at the end (curvature tracker). Worst-case "
      "sharpness: max over ||u||_2 <= ρ of L(w + c u) - L(w) on the same probe set (c = 1, ρ = 0.05; "
      "adaptive: c = |w|, ρ = 0.5), 20 ascent steps, a lower bound."))))
  have = [m for m in bars if m in table.columns and table[m].notna().any()]
  fig = ctx.figure("methods", lambda p: plots.ablation_bars(table, METHOD, have, order=[
      m for m in ORDER if m in set(table[METHOD])], path=p),
      "By method: bars are means over seeds, error bars one sample standard deviation, dots the seeds.")
  if fig:
    blocks.insert(1, fig)
  findings = []
  base = table[table[METHOD] == "sgd"]
  for method in ("sam", "asam"):
    rs = table[table[METHOD] == method]
    if rs.empty:
      continue
    for metric in ("test/accuracy", "gap/accuracy"):
      a, b = rs[metric].dropna().to_numpy(), base[metric].dropna().to_numpy()
      if not (len(a) and len(b)):
        continue
      iv = stats.difference_interval(a, b)
      d = iv.estimate
      show = pct if metric == "test/accuracy" else (lambda x: f"{100 * x:.2f} points")
      name = "test accuracy" if metric == "test/accuracy" else "the accuracy gap"
      findings.append(Finding(
          f"{method.upper()} changed {name} by {100 * d:+.2f} points relative to SGD ({show(a.mean())} vs "
          f"{show(b.mean())}; {wording.interval_text(iv, **wording.POINTS)}).",
          {"method": method, "metric": metric, "difference": d, "ci": (iv.lo, iv.hi), "n": len(a),
           "interval": iv.as_dict()}))
    for metric in ("curv/lambda_max", "curv/trace", "sharp/worst_case_l2", "sharp/worst_case_adaptive_l2"):
      if metric not in table.columns:
        continue
      a, b = rs[metric].dropna().to_numpy(), base[metric].dropna().to_numpy()
      if not (len(a) and len(b)):
        continue
      iv = stats.ratio_interval(a, b)
      r = iv.estimate
      findings.append(Finding(
          f"{method.upper()} / SGD {LABELS[metric]}: {r:.2f}x (ratio of geometric means; means "
          f"{num(a.mean())} vs {num(b.mean())}; {wording.interval_text(iv, **wording.TIMES)}).",
          {"method": method, "metric": metric, "ratio": r, "ci": (iv.lo, iv.hi), "n": len(a),
           "interval": iv.as_dict()}))
  return [Section("Results", blocks)], findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Foret et al. (2021, ICLR, \"Sharpness-Aware Minimization for Efficiently Improving "
         "Generalization\") report lower test error with SAM (e.g. WideResNet-28-10 on CIFAR-10) and a "
         "Hessian with a smaller top eigenvalue at the SAM solution. Kwon et al. (2021, ICML, \"ASAM\") "
         "report that the adaptive variant improves on SAM and that adaptive sharpness is the better "
         "correlate of the gap."]
  items = []
  for f in findings:
    v = f.values
    if v.get("metric") in ("curv/lambda_max", "sharp/worst_case_l2", "sharp/worst_case_adaptive_l2"):
      j = wording.judge(stats.Interval.from_dict(v["interval"]), "<", **wording.TIMES)
      items.append(f"{v['method'].upper()} / SGD {LABELS[v['metric']]} {v['ratio']:.2f}x; published "
                   f"direction (lower): this {j.text}.")
    if v.get("metric") == "test/accuracy":
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.POINTS)
      items.append(f"{v['method'].upper()} test accuracy {100 * v['difference']:+.2f} points vs SGD; "
                   f"published direction (higher): this {j.text}.")
  if not items:
    items.append("No SAM or ASAM run with the measures to compare.")
  return out + [items]


def _limitations(ctx: Context) -> list[str]:
  return ["SAM and ASAM cost two gradients per step; at an equal step budget they used twice the compute "
          "of SGD.", "Worst-case sharpness is a lower bound from 20 ascent steps from one random start."]


TEMPLATE = Template(
    "sam", TITLE,
    "Do SAM and ASAM find flatter minima (λ_max, trace, worst-case sharpness) that generalize better "
    "than SGD at the same learning rate and step budget?", _applies, _results, _comparison, _limitations)
