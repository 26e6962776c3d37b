"""Report template of the optimizer study (experiments/configs/optimizers.py).

Full-batch GD, minibatch SGD, heavy-ball momentum and Adam at a matched number of steps: final lambda_max
(for Adam also the preconditioned lambda_max, `curv/precond_lambda_max`), each relative to its stability
threshold (2/eta, 3.8/eta, 38/eta), training and test accuracy and the generalization gap, GD against
SGD and Adam against SGD with Welch intervals over seeds. Compared with Keskar et al. 2017 and
Jastrzebski et al. 2017 (noise finds flatter minima), Cohen et al. 2021, 2022 (edge of stability) and
Wilson et al. 2017 (adaptive methods generalize worse).
"""

import math

import numpy as np
import pandas as pd

from analysis import plots, runs, stats, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import (
  ADAPTIVE,
  Context,
  Template,
  generic_findings,
  group_runs,
  lambda_max_history,
  mean_ci_text,
  missing_text,
  num,
  pct,
  standard_results,
  threshold_of,
)

TITLE = "Optimizers"
KEY = "optimizer"
PRECOND = "curv/precond_lambda_max"
NAMES = {"sgd": "SGD", "momentum": "momentum", "nesterov": "Nesterov", "adam": "Adam", "adamw": "AdamW"}


def optimizer_label(run: runs.Run) -> str:
  """`GD` for full-batch training, else the optimizer's name (`SGD`, `momentum`, `Adam`, ...)."""
  name = str(run.flat_config.get("optimizer.name", "?"))
  if run.flat_config.get("training.full_batch"):
    return "GD" if name == "sgd" else f"full-batch {NAMES.get(name, name)}"
  return NAMES.get(name, name)


def _labeler(ctx: Context):
  """`optimizer_label`, with the learning rate appended where one optimizer ran at several."""
  lrs: dict[str, set] = {}
  for r in ctx.study.runs:
    lrs.setdefault(optimizer_label(r), set()).add(r.flat_config.get("schedule.lr"))
  return lambda r: (optimizer_label(r) if len(lrs[optimizer_label(r)]) == 1
                    else f"{optimizer_label(r)}, η={r.flat_config.get('schedule.lr'):g}")


def _prepare(ctx: Context) -> Context:
  """The conditions are named by `KEY` alone."""
  return ctx.with_key(KEY, _labeler(ctx), label=True)


def _applies(ctx: Context) -> str | None:
  labels = {optimizer_label(r) for r in ctx.study.runs}
  if len(labels) < 2:
    return f"the runs use one optimizer ({', '.join(sorted(labels))})"
  return None


def _final(ctx: Context, rs: list[runs.Run], metric: str) -> np.ndarray:
  return ctx.values([r for r in rs if r.status in ("done", "early_stopped")], metric)


def _results(ctx: Context):
  label_of = _labeler(ctx)
  groups = group_runs(ctx, label_of)
  blocks = standard_results(ctx, bar_metrics=("test/accuracy", "gap/accuracy", "curv/lambda_max"),
                            bar_key=KEY, curve_splits=("train", "eval_train", "test"))
  findings = generic_findings(ctx)
  rows = []
  sharp = {}
  for label, rs in groups.items():
    thr, tname = threshold_of(rs[0])
    adaptive = rs[0].flat_config.get("optimizer.name") in ADAPTIVE
    raw, pre = _final(ctx, rs, "curv/lambda_max"), _final(ctx, rs, PRECOND)
    compared = pre if adaptive else raw
    lr = rs[0].flat_config.get("schedule.lr", math.nan)
    rows.append({"optimizer": label, "η": lr, "threshold": f"{tname} = {num(thr)}" if thr else "–",
                 "final λ_max": float(raw.mean()) if len(raw) else math.nan,
                 "preconditioned λ_max": float(pre.mean()) if len(pre) else math.nan,
                 "compared / threshold": float(compared.mean() / thr) if len(compared) and thr else math.nan,
                 "seeds": len(rs)})
    if not len(raw):
      continue
    sharp[label] = raw
    text = f"{label} (η = {lr:g}): final λ_max {mean_ci_text(raw)}"
    values = {"optimizer": label, "metric": "curv/lambda_max", "mean": float(raw.mean()), "n": len(raw)}
    if thr and len(compared):
      what = "preconditioned λ_max" if adaptive else "λ_max"
      text += (f"; its {what} ended at {compared.mean() / thr:.2f} of the threshold {tname} = {num(thr)}"
               + (f" (preconditioned λ_max {num(pre.mean())})" if adaptive else ""))
      values |= {"threshold": thr, "ratio to threshold": float(compared.mean() / thr), "adaptive": adaptive}
      first = [v[0] / thr for s_, v in map(lambda_max_history, rs) if len(s_) > 1]
      if first:
        start = float(np.mean(first))
        text += f", starting from {start:.2f} of it at step {int(lambda_max_history(rs[0])[0][0])}"
        values["start ratio"] = start
    findings.append(Finding(text + ".", values))
  if rows:
    frame = pd.DataFrame(rows)
    blocks.insert(1, TableBlock("sharpness", tables.frame_table(frame, caption=(
        "Final sharpness per optimizer (means over seeds): λ_max of the training-loss Hessian, for Adam also "
        "the preconditioned λ_max of P^-1/2 H P^-1/2 (Cohen et al. 2022), and the compared quantity (Adam: "
        "preconditioned) over the optimizer's stability threshold."))))
  if not sharp:
    blocks.append(missing_text("final sharpness", "`curv/lambda_max` in metrics.jsonl (config "
                               "`curvature.at_end`)"))
  raw_curves = {}
  for label, rs in groups.items():
    frames = [pd.Series(v, index=s) for s, v in (r.curve("curv/lambda_max") for r in rs) if len(s)]
    if frames:
      t = pd.concat(frames, axis=1)
      raw_curves[label] = (t.index.to_numpy(np.float64), t.mean(axis=1).to_numpy())
  if any(len(s) > 1 for s, _ in raw_curves.values()):
    fig = ctx.figure("lambda_max_raw", lambda p: plots.lambda_max_curves(raw_curves, path=p),
                     "Raw λ_max of the training-loss Hessian over training for every optimizer, Adam "
                     "included (mean over seeds); the preconditioned sharpness is in the threshold figure.")
    if fig:
      blocks.append(fig)
  for a, b, metric, name in (("GD", "SGD", "curv/lambda_max", "λ_max"),
                             ("Adam", "SGD", "curv/lambda_max", "λ_max"),
                             ("momentum", "SGD", "curv/lambda_max", "λ_max")):
    if a in groups and b in groups:
      x, y = _final(ctx, groups[a], metric), _final(ctx, groups[b], metric)
      if len(x) and len(y):
        iv = stats.ratio_interval(x, y)
        findings.append(Finding(
            f"{a} ended with {iv.estimate:.2f}x the {name} of {b} (ratio of geometric means; "
            f"{wording.interval_text(iv, **wording.TIMES)}).",
            {"a": a, "b": b, "metric": metric, "ratio": iv.estimate, "ci": (iv.lo, iv.hi),
             "interval": iv.as_dict()}))
  for a, b, metric, name in (("GD", "SGD", "gap/accuracy", "accuracy gap"),
                             ("Adam", "SGD", "test/accuracy", "test accuracy"),
                             ("Adam", "SGD", "gap/accuracy", "accuracy gap"),
                             ("momentum", "SGD", "test/accuracy", "test accuracy")):
    if a in groups and b in groups:
      x, y = _final(ctx, groups[a], metric), _final(ctx, groups[b], metric)
      if len(x) and len(y):
        iv = stats.difference_interval(x, y)
        show = pct if metric == "test/accuracy" else (lambda v: f"{100 * v:.2f} points")
        findings.append(Finding(
            f"{a} minus {b}, {name}: {100 * iv.estimate:+.2f} points ({show(x.mean())} vs {show(y.mean())}; "
            f"{wording.interval_text(iv, **wording.POINTS)}).",
            {"a": a, "b": b, "metric": metric, "difference": iv.estimate, "ci": (iv.lo, iv.hi),
             "interval": iv.as_dict()}))
  fit = {label: _final(ctx, rs, "eval_train/accuracy") for label, rs in groups.items()}
  fit = {k: v for k, v in fit.items() if len(v)}
  if fit:
    findings.append(Finding(
        "Training-set accuracy at the end: " + "; ".join(f"{k} {pct(v.mean())}" for k, v in fit.items())
        + ".",
        {"eval_train/accuracy": {k: float(v.mean()) for k, v in fit.items()}}))
  return [Section("Results", blocks)], findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Keskar et al. (2017, ICLR) and Jastrzebski et al. (2017) find that gradient noise steers SGD to "
         "flatter minima than (near) full-batch training, with a smaller generalization gap. Cohen et al. "
         "(2021, ICLR) find that full-batch GD's λ_max rises to 2/η and hovers there; Cohen et al. (2022, "
         "arXiv:2207.14484) find the same for Adam's preconditioned sharpness at 38/η (β1 = 0.9), while its "
         "raw λ_max can keep growing. Wilson et al. (2017, NeurIPS) find that Adam generalizes worse than "
         "SGD on image classification."]
  items = []
  for f in findings:
    v = f.values
    if v.get("a") == "GD" and v.get("metric") == "curv/lambda_max":
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.TIMES)
      items.append(f"GD sharper than SGD (Keskar et al.): λ_max ratio {v['ratio']:.2f}x; this {j.text}.")
    if v.get("a") == "GD" and v.get("metric") == "gap/accuracy":
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.POINTS)
      items.append(f"Larger gap for GD than SGD: {100 * v['difference']:+.2f} points; this {j.text}.")
    if v.get("a") == "Adam" and v.get("metric") == "test/accuracy":
      j = wording.judge(stats.Interval.from_dict(v["interval"]), "<", **wording.POINTS)
      items.append(f"Adam less accurate than SGD (Wilson et al.): {100 * v['difference']:+.2f} points; this "
                   f"{j.text}.")
    if v.get("optimizer") in ("GD", "Adam") and "ratio to threshold" in v:
      ratio = v["ratio to threshold"]
      near = 0.8 <= ratio <= 1.3
      what = "preconditioned λ_max" if v.get("adaptive") else "λ_max"
      start = v.get("start ratio")
      came = ("" if start is None else " It started above the threshold and fell to it, rather than "
              "sharpening up to it as in Cohen et al." if start > 1.3 else " It sharpened up to it from "
              f"{start:.2f} of it." if start < 0.8 else "")
      items.append(f"{v['optimizer']} at the edge of stability (Cohen et al.): final {what} / threshold = "
                   f"{ratio:.2f}: " + ("**at the threshold**." if near else
                                       "**not at the threshold** at the end of this run" +
                                       (" (below it: still sharpening, or the budget is too short)."
                                        if ratio < 0.8 else " (above it).")) + (came if near else "")
                   + (" Cohen et al. (2022) study full-batch Adam; with minibatches, gradient noise usually "
                      "keeps the sharpness below the threshold." if v["optimizer"] == "Adam" else ""))
  if not items:
    items.append("Neither sharpness nor accuracy could be compared between the optimizers: the comparison "
                 "cannot be made.")
  return out + [items]


def _limitations(ctx: Context) -> list[str]:
  lrs = ", ".join(dict.fromkeys(f"{optimizer_label(r)} {r.flat_config.get('schedule.lr'):g}"
                                for r in ctx.study.runs))
  return ["The budget is matched in steps, not in gradient evaluations: GD sees the whole training set at "
          "every step, SGD and Adam one batch.",
          f"Untuned learning rates ({lrs}): a tuned comparison (Wilson et al. tune each) "
          "could order the optimizers differently.",
          "Sharpness is measured every few steps; GD at the edge of stability oscillates between "
          "measurements."]


TEMPLATE = Template(
    "optimizers", TITLE,
    "At a matched number of steps, which optimizer (full-batch GD, minibatch SGD, heavy-ball "
    "momentum, Adam) ends in the flattest minimum and with the smallest generalization gap? Final λ_max (for "
    "Adam also the preconditioned λ_max) against each optimizer's stability threshold, training and test "
    "accuracy and the gap.", _applies, _results, _comparison, _limitations,
    _prepare)
