"""Report template of the `sam` study (experiments/configs/sam.py): SGD, SAM and ASAM over seeds, compared
on test accuracy, generalization gap, lambda_max and trace (the curvature tracker) and worst-case
sharpness, plain and adaptive (the measures evaluator), each method against SGD with Welch intervals over
seeds (analysis/wording.py words the verdicts).

The method of a run is read from its config: `optimizer.sam.rho = 0` is SGD, `optimizer.sam.adaptive`
is ASAM, otherwise SAM. Runs of different losses are different conditions (`sam, mse`), never seeds of one:
every comparison is within one loss, as the criteria (`each: loss.name`) are.
"""

import dataclasses
import math

import numpy as np

from analysis import criteria, plots, runs, stats, style, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import Context, Template, num, pct, standard_results

TITLE = "Sharpness-aware minimization"
METHOD = "method"
LOSS_KEY = "loss.name"
METRICS = ("test/accuracy", "gap/accuracy", "gap/loss", "curv/lambda_max", "curv/lambda_1_over_lambda_k",
           "curv/trace", "sharp/worst_case_l2", "sharp/worst_case_adaptive_l2")
NAMES = {"sharp/worst_case_l2": "worst case l2", "sharp/worst_case_adaptive_l2": "adaptive worst case",
         "curv/lambda_1_over_lambda_k": "λ_1/λ_k"}
LABELS = {"curv/lambda_max": "λ_max", "curv/trace": "the Hessian trace", "curv/lambda_1_over_lambda_k":
          "λ_1/λ_k", "sharp/worst_case_l2": "plain worst-case sharpness", "sharp/worst_case_adaptive_l2":
          "adaptive worst-case sharpness"}
ORDER = ("sgd", "sam", "asam")


def method_of(flat_config: dict) -> str:
  if not flat_config.get("optimizer.sam.rho"):
    return "sgd"
  return "asam" if flat_config.get("optimizer.sam.adaptive") else "sam"


def _loss(run: runs.Run) -> str:
  return str(run.flat_config.get(LOSS_KEY, "cross_entropy"))


def _losses(ctx: Context) -> list[str]:
  return list(dict.fromkeys(_loss(r) for r in ctx.study.runs))


def _label(run: runs.Run, losses: list[str]) -> str:
  """`sam`, or `sam, mse` when the runs train more than one loss."""
  return method_of(run.flat_config) + (f", {_loss(run)}" if len(losses) > 1 else "")


def _k(ctx: Context) -> int | None:
  ks = {r.flat_config.get("curvature.k") for r in ctx.study.runs}
  return ks.pop() if len(ks) == 1 and isinstance(next(iter(ks)), int) else None


def _mode_text(ctx: Context) -> str:
  """The BatchNorm mode of the curvature and sharpness measurements, for captions."""
  parts = []
  for section in ("curvature", "measures"):
    modes = {r.flat_config.get(f"{section}.bn_mode", "eval") for r in ctx.study.runs}
    chunks = {r.flat_config.get(f"{section}.chunk_size") for r in ctx.study.runs}
    if modes == {"batch"}:
      ghost = f" of {chunks.pop()}" if len(chunks) == 1 else ""
      parts.append(f"{section}: BatchNorm with batch statistics over fixed ghost batches{ghost}")
    else:
      parts.append(f"{section}: BatchNorm mode {', '.join(sorted(map(str, modes)))}")
  return "; ".join(parts) + " (for networks without BatchNorm the modes coincide)"


def _applies(ctx: Context) -> str | None:
  methods = {method_of(r.flat_config) for r in ctx.study.runs}
  if "sgd" not in methods or len(methods) < 2:
    return f"the runs do not compare SAM or ASAM with SGD (methods: {', '.join(sorted(methods))})"
  return None


def _results(ctx: Context):
  losses = _losses(ctx)
  labels = [_label(r, losses) for r in ctx.study.runs]
  table = ctx.table.copy()
  table[METHOD] = labels
  table[LOSS_KEY] = [_loss(r) for r in ctx.study.runs]
  rs = [dataclasses.replace(r, overrides=r.overrides | {METHOD: lab})
        for r, lab in zip(ctx.study.runs, labels)]
  study = dataclasses.replace(ctx.study, runs=rs, override_keys=[METHOD])
  mctx = dataclasses.replace(ctx, study=study, table=table)
  k = _k(ctx)
  names = NAMES | ({"curv/lambda_1_over_lambda_k": f"λ_1/λ_{k}"} if k else {})
  plain = dataclasses.replace(mctx, table=table.drop(columns=[c for c in table.columns
                                                              if str(c).startswith("sharp/")]))
  blocks = standard_results(plain, bar_metrics=(), bar_key=METHOD, thresholds=False)  # dots below
  order = [f"{m}, {loss}" if len(losses) > 1 else m for loss in losses for m in ORDER
           if (f"{m}, {loss}" if len(losses) > 1 else m) in set(labels)]
  optimizers = {}
  for r, lab in zip(ctx.study.runs, labels):
    optimizers.setdefault(lab, style.optimizer_label(r.flat_config))
  blocks.insert(0, "Methods (from each run's config): " + "; ".join(
      f"{lab}: {optimizers[lab]}" for lab in order) + ".")
  blocks.insert(1, TableBlock("methods", tables.mean_std_table(table, [METHOD], METRICS, names=names,
                                                               caption=(
      "Mean ± sample standard deviation over seeds per method"
      + (" and loss" if len(losses) > 1 else "") + "; accuracies in percent, gaps in points / "
      + ("the loss's unit" if len(losses) > 1 else style.loss_unit(losses[0])) + ". λ_max, "
      + (f"λ_1/λ_{k}" if k else "λ_1/λ_k") + " and trace: the training-loss Hessian at the end (curvature "
      "tracker). Worst-case sharpness: max over ||u||_2 <= ρ of L(w + c u) - L(w) on the same probe set "
      "(c = 1, ρ = 0.05, SAM's radius; adaptive: c = |w|, ρ = 0.5), the best of the random restarts of "
      f"projected ascent: a lower bound. {_mode_text(ctx)}."))))
  dots = ("test/accuracy", "gap/accuracy", "curv/lambda_max", "sharp/worst_case_l2",
          "sharp/worst_case_adaptive_l2")
  have = [m for m in dots if m in table.columns and table[m].notna().any()]
  if have:
    fig = ctx.figure("methods", lambda p: plots.ablation_bars(
        table, METHOD, have, order=order, error="std",
        loss_name=losses[0] if len(losses) == 1 else "cross_entropy", path=p),
        "By method" + (" and loss" if len(losses) > 1 else "") + ": the mean over seeds (marker), whiskers "
        f"{plots.interval_text('std')}, the seeds as small points; the value axis fitted to the data. "
        f"{plots.LOG_PANELS}")
    if fig:
      blocks.insert(2, fig)
  return [Section("Results", blocks)], _findings(ctx, table, losses)


def _findings(ctx: Context, table, losses: list[str]) -> list[Finding]:
  findings = []
  k = _k(ctx)
  labels = LABELS | ({"curv/lambda_1_over_lambda_k": f"λ_1/λ_{k}"} if k else {})
  for loss in losses:
    tl = table[table[LOSS_KEY] == loss]
    methods = [method_of(r.flat_config) for r in ctx.study.runs if _loss(r) == loss]
    tl = tl.assign(_m=methods)
    where = f" ({loss})" if len(losses) > 1 else ""
    for method, base_name in (("sam", "sgd"), ("asam", "sgd"), ("asam", "sam")):
      rs, base = tl[tl["_m"] == method], tl[tl["_m"] == base_name]
      if rs.empty or base.empty:
        continue
      for metric in ("test/accuracy", "gap/accuracy"):
        if metric not in tl.columns or (base_name == "sam" and metric != "test/accuracy"):
          continue
        a, b = rs[metric].dropna().to_numpy(), base[metric].dropna().to_numpy()
        if not (len(a) and len(b)):
          continue
        iv = stats.difference_interval(a, b)
        d = iv.estimate
        show = pct if metric == "test/accuracy" else (lambda x: f"{100 * x:.2f} points")
        name = "test accuracy" if metric == "test/accuracy" else "the accuracy gap"
        findings.append(Finding(
            f"{method.upper()} changed {name} by {100 * d:+.2f} points relative to "
            f"{base_name.upper()}{where} ({show(a.mean())} vs {show(b.mean())}; "
            f"{wording.interval_text(iv, **wording.POINTS)}).",
            {"method": method, "base": base_name, "loss": loss, "metric": metric, "difference": d,
             "ci": (iv.lo, iv.hi), "n": len(a), "interval": iv.as_dict()}))
      if base_name != "sgd":
        continue
      for metric in ("curv/lambda_max", "curv/lambda_1_over_lambda_k", "curv/trace", "sharp/worst_case_l2",
                     "sharp/worst_case_adaptive_l2"):
        if metric not in tl.columns:
          continue
        a, b = rs[metric].dropna().to_numpy(), base[metric].dropna().to_numpy()
        if not (len(a) and len(b)):
          continue
        iv = stats.ratio_interval(a, b)
        r = iv.estimate
        findings.append(Finding(
            f"{method.upper()} / SGD{where} {labels[metric]}: {r:.2f}x (ratio of geometric means; means "
            f"{num(a.mean())} vs {num(b.mean())}; {wording.interval_text(iv, **wording.TIMES)}).",
            {"method": method, "base": base_name, "loss": loss, "metric": metric, "ratio": r,
             "ci": (iv.lo, iv.hi), "n": len(a), "interval": iv.as_dict()}))
  return findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Foret et al. (2021, ICLR, \"Sharpness-Aware Minimization for Efficiently Improving "
         "Generalization\") report lower test error with SAM (Sec. 3.1, e.g. WideResNet-28-10 on CIFAR-10) "
         "and, at the SAM solution, a Hessian with a smaller top eigenvalue and a smaller λ_max/λ_5 "
         "(Sec. 4.2). Kwon et al. (2021, ICML, \"ASAM\") report that the adaptive variant improves test "
         "accuracy over SAM. The criteria in the Verdicts table test these claims; the lines below word the "
         "same intervals."]
  items = []
  k = _k(ctx)
  labels = LABELS | ({"curv/lambda_1_over_lambda_k": f"λ_1/λ_{k}"} if k else {})
  multi = len(_losses(ctx)) > 1
  for f in findings:
    v = f.values
    where = f" ({v['loss']})" if multi else ""
    if v.get("base") == "sgd" and v.get("metric") in ("curv/lambda_max", "curv/lambda_1_over_lambda_k",
                                                      "sharp/worst_case_l2", "sharp/worst_case_adaptive_l2"):
      j = wording.judge(stats.Interval.from_dict(v["interval"]), "<", **wording.TIMES)
      items.append(f"{v['method'].upper()} / SGD{where} {labels[v['metric']]} {v['ratio']:.2f}x; published "
                   f"direction (lower): this {j.text}.")
    if v.get("metric") == "test/accuracy":
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.POINTS)
      items.append(f"{v['method'].upper()} test accuracy{where} {100 * v['difference']:+.2f} points vs "
                   f"{v['base'].upper()}; published direction (higher): this {j.text}.")
  if not items:
    items.append("No SAM or ASAM run with the measures to compare.")
  return out + [items] + _measured_reasons(ctx)


# The pre-registered comparisons (experiments/configs/sam.py `get_criteria`): (a, b, metric), a against b.
CRITERIA = (("sam", "sgd", "curv/lambda_max"), ("sam", "sgd", "curv/lambda_1_over_lambda_k"),
            ("sam", "sgd", "sharp/worst_case_l2"), ("sam", "sgd", "test/accuracy"),
            ("asam", "sam", "test/accuracy"))
PUBLISHED_SCALE = {
    ("sam", "sgd"): "Foret et al.'s gains on CIFAR-10 (Table 1) are about one point of test error or less, "
                    "for WideResNet-28-10 and larger networks trained 200 epochs or longer with augmentation",
    ("asam", "sam"): "Kwon et al.'s gains of ASAM over SAM on CIFAR-10 and CIFAR-100 (Sec. 5) are smaller "
                     "still, a few tenths of a point, for ResNets, WideResNets and PyramidNets with "
                     "augmentation",
}


def _scale_text(ctx: Context) -> str:
  """'421,642-parameter simple_cnn, 400 steps (12.5 epochs) on 4,096 fashion_mnist images' from the runs."""
  r = ctx.study.runs[0]
  fc = r.flat_config
  params = r.summary.get("num_params") if r.summary else None
  steps, batch, n = (fc.get("training.num_steps"), fc.get("training.batch_size"),
                     fc.get("data.options.num_train"))
  what = f"{params:,}-parameter " if isinstance(params, int) else ""
  text = f"a {what}`{fc.get('model.name')}`"
  if isinstance(steps, int) and steps and isinstance(batch, int) and isinstance(n, int) and n:
    text += f" trained {steps} steps ({steps * batch / n:.3g} epochs) on {n:,} `{fc.get('data.name')}` images"
  return text


def _last_change(rs: list[runs.Run], metric: str) -> tuple[float, int] | None:
  """Median over runs of |v_end / v_before - 1| between a run's last two tracked measurements after
  initialization, and the steps between them (None without two: the change from the initialization is
  training, not fluctuation)."""
  changes, gaps = [], []
  for r in rs:
    steps, values = r.curve(metric)
    ok = np.isfinite(values) & (values > 0) & (steps > 0)
    steps, values = steps[ok], values[ok]
    if len(values) >= 2:
      changes.append(abs(values[-1] / values[-2] - 1))
      gaps.append(int(steps[-1] - steps[-2]))
  return (float(np.median(changes)), int(np.median(gaps))) if changes else None


def _measured_reasons(ctx: Context) -> list[str]:
  """For each pre-registered comparison left undecided at the verdict table's level: the effect against
  the seed-to-seed spread, and the seeds per method that spread would need (normal approximation)."""
  level = criteria.test_level(ctx.study)
  k = _k(ctx)
  labels = LABELS | ({"curv/lambda_1_over_lambda_k": f"λ_1/λ_{k}"} if k else {})
  losses = _losses(ctx)
  out = []
  for loss in losses:
    rs = [r for r in ctx.study.runs if _loss(r) == loss]
    where = f" ({loss})" if len(losses) > 1 else ""
    by = {m: [r for r in rs if method_of(r.flat_config) == m] for m in ORDER}
    for a_name, b_name, metric in CRITERIA:
      a = np.array([r.final_metrics().get(metric, np.nan) for r in by[a_name]], float)
      b = np.array([r.final_metrics().get(metric, np.nan) for r in by[b_name]], float)
      a, b = a[np.isfinite(a)], b[np.isfinite(b)]
      if len(a) < 2 or len(b) < 2:
        continue
      ratio = metric != "test/accuracy"
      got = stats.compared(a, b, "ratio" if ratio else "difference", level)
      if got is None:
        continue
      iv, effect, sa, sb = got
      if not (math.isfinite(iv.lo) and iv.lo <= iv.null <= iv.hi):
        continue
      seeds = wording.why_undecided(effect, sa, sb, len(a), len(b), level, "1" if ratio else "0",
                                    "per method")
      name = f"{a_name.upper()} {'/' if ratio else '-'} {b_name.upper()}{where}"
      if ratio:
        text = (f"Measured reason, {name} {labels[metric]}: the ratio {iv.estimate:.2f}x is a log-difference "
                f"of {effect:+.2f} against a seed-to-seed standard deviation of the log of {sa:.2f} "
                f"({a_name.upper()}) and {sb:.2f} ({b_name.upper()}) over {len(a)} vs {len(b)} seeds, so the "
                f"verdict's {wording.interval_text(iv, **wording.TIMES)} contains 1; {seeds}.")
        change = _last_change(rs, metric)
        if change:
          text += (f" Within a run the value is not settled: between a run's last two measurements "
                   f"({change[1]} steps apart) it changed by a median of {100 * change[0]:.0f}%, so the "
                   "value at the end is one draw of a fluctuating quantity.")
      else:
        text = (f"Measured reason, {name} test accuracy: the difference {100 * effect:+.2f} points is "
                f"smaller than its uncertainty from the seed-to-seed spread (standard deviation "
                f"{100 * sa:.2f} points for {a_name.upper()}, {100 * sb:.2f} for {b_name.upper()}, "
                f"{len(a)} vs {len(b)} seeds): the verdict's "
                f"{wording.interval_text(iv, **wording.POINTS)} contains 0; {seeds}. "
                f"{PUBLISHED_SCALE[(a_name, b_name)]}; here {_scale_text(ctx)}.")
      out.append(text)
  return out


def _limitations(ctx: Context) -> list[str]:
  restarts = {r.flat_config.get("measures.restarts") for r in ctx.study.runs}
  steps = {r.flat_config.get("measures.steps") for r in ctx.study.runs}
  how = (f"{steps.pop()} ascent steps from each of {restarts.pop()} random starts"
         if len(restarts) == 1 and len(steps) == 1 and None not in restarts | steps else "projected ascent")
  return ["SAM and ASAM cost two gradients per step; at an equal step budget they used twice the compute "
          "of SGD.", f"Worst-case sharpness is a lower bound of the maximum: the best of {how} (the "
          "`_restart_spread` metrics say how far the restarts disagreed)."]


TEMPLATE = Template(
    "sam", TITLE,
    "Do SAM and ASAM find flatter minima (λ_max, trace, worst-case sharpness) that generalize better "
    "than SGD at the same learning rate and step budget?", _applies, _results, _comparison, _limitations)
