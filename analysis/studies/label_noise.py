"""Report template of the label-noise study (experiments/configs/label_noise.py).

The same network trained on clean labels and with a fraction p of the training labels flipped: how much
of the flipped labels it fits (memorization: accuracy on the noisy training labels above 1 - p), test
accuracy and gap against the clean run, whether test accuracy peaks and then falls (Arpit et al. 2017),
and lambda_max, the trace and Keskar's epsilon-sharpness against the clean run, with Welch intervals over
seeds. Compared with
Zhang et al. 2017, Arpit et al. 2017 and Neyshabur et al. 2017. Per-run quantity for the criteria:
`noise/peak_drop` (peak minus final evaluated test accuracy, a fraction).
"""

import math

import numpy as np
import pandas as pd

from analysis import runs, stats, wording
from analysis.document import Finding, Section, distinct
from analysis.results import (
  Context,
  Template,
  mean_ci_text,
  missing_text,
  num,
  pct,
  seeds_text,
  standard_results,
)

TITLE = "Label noise"
KEY = "data.options.label_noise"
# final sharpness quantities compared with the clean run: metric -> name in the text
SHARPNESS = {"curv/lambda_max": "λ_max", "curv/trace": "Hessian trace",
             "sharp/epsilon_sharpness": "ε-sharpness"}


def noise_of(run: runs.Run) -> float:
  v = run.flat_config.get(KEY, 0.0)
  return float(v) if runs._is_number(v) else math.nan


def _applies(ctx: Context) -> str | None:
  levels = {noise_of(r) for r in ctx.study.runs}
  if len(levels) < 2:
    return f"`{KEY}` takes one value ({', '.join(map(str, levels))}) across the runs"
  if 0.0 not in levels:
    return "no run with clean labels (`data.options.label_noise = 0`), the reference"
  return None


def _by_noise(ctx: Context) -> dict[float, list[runs.Run]]:
  out: dict[float, list[runs.Run]] = {}
  for r in sorted(ctx.study.runs, key=noise_of):
    if r.status in ("done", "early_stopped"):
      out.setdefault(noise_of(r), []).append(r)
  return out


def peak_drop(run: runs.Run, metric: str = "test/accuracy") -> tuple[float, float, float] | None:
  """(peak value, step of the peak, peak minus final) of an evaluated metric over training."""
  steps, values = run.curve(metric)
  if not len(values) or not np.isfinite(values).any():
    return None
  i = int(np.nanargmax(values))
  return float(values[i]), float(steps[i]), float(values[i] - values[-1])


def _quantities(ctx: Context) -> dict[str, dict[str, float]]:
  out = {}
  for r in ctx.study.runs:
    pd_ = peak_drop(r)
    if pd_ is not None:
      out[r.name] = {"noise/peak_drop": pd_[2]}
  return out


def _prepare(ctx: Context) -> Context:
  """The noise level is a condition key even in a folder of runs without a sweep index."""
  return ctx.with_key(KEY, noise_of)


def _results(ctx: Context):
  bars = ("test/accuracy", "eval_train/accuracy", "gap/accuracy", "curv/lambda_max", "curv/trace",
          "sharp/epsilon_sharpness")
  blocks = standard_results(ctx, bar_metrics=bars, bar_key=KEY, thresholds=False,
                            curve_splits=("eval_train", "test"))
  groups = _by_noise(ctx)
  findings = []
  clean = groups.get(0.0, [])
  if not clean:
    blocks.append(missing_text("the clean reference", "a finished run with `data.options.label_noise = 0`"))
  for p, rs in groups.items():
    fit = ctx.values(rs, "eval_train/accuracy")
    test = ctx.values(rs, "test/accuracy")
    if not len(fit):
      continue
    text = f"Noise {p:g}: accuracy on the (noisy) training labels {mean_ci_text(fit, pct)}"
    values = {"noise": p, "eval_train/accuracy": float(fit.mean()), "n": len(fit)}
    if p > 0:
      memorized = (fit.mean() - (1 - p)) / p
      text += (f", so at least {pct(max(memorized, 0.0))} of the flipped labels were fitted ((accuracy − "
               f"(1 − {p:g})) / {p:g}, exact if every clean label is fitted)")
      values["memorized lower bound"] = float(memorized)
    if len(test):
      text += f"; test accuracy {mean_ci_text(test, pct)}"
      values["test/accuracy"] = float(test.mean())
    findings.append(Finding(text + ".", values))
  for p, rs in groups.items():
    if p == 0 or not clean:
      continue
    for metric, name in (("test/accuracy", "test accuracy"), ("gap/accuracy", "the accuracy gap")):
      a, b = ctx.values(rs, metric), ctx.values(clean, metric)
      if len(a) and len(b):
        iv = stats.difference_interval(a, b)
        show = pct if metric == "test/accuracy" else (lambda x: f"{100 * x:.2f} points")
        findings.append(Finding(
            f"Noise {p:g} changed {name} by {100 * iv.estimate:+.2f} points against clean labels "
            f"({show(a.mean())} vs {show(b.mean())}; {wording.interval_text(iv, **wording.POINTS)}).",
            {"noise": p, "metric": metric, "difference": iv.estimate, "ci": (iv.lo, iv.hi),
             "interval": iv.as_dict()}))
    for metric, name in SHARPNESS.items():
      a, b = ctx.values(rs, metric), ctx.values(clean, metric)
      if len(a) and len(b):
        iv = stats.ratio_interval(a, b)
        findings.append(Finding(
            f"Noise {p:g} multiplied the final {name} by {iv.estimate:.2f} (ratio of geometric means; "
            f"{num(a.mean())} vs {num(b.mean())}; {wording.interval_text(iv, **wording.TIMES)}).",
            {"noise": p, "metric": metric, "ratio": iv.estimate, "ci": (iv.lo, iv.hi),
             "interval": iv.as_dict()}))
  if not any(f.values.get("metric") == "curv/lambda_max" for f in findings):
    blocks.append(missing_text("the sharpness comparison", "`curv/lambda_max` of a clean and a noisy run"))
  drops = {}
  for p, rs in groups.items():
    pd_ = [x for x in (peak_drop(r) for r in rs) if x is not None]
    if pd_:
      drops[p] = pd_
      peak = np.mean([x[0] for x in pd_])
      drop = np.mean([x[2] for x in pd_])
      at = ", ".join(f"{int(x[1])}" for x in pd_)
      findings.append(Finding(
          f"Noise {p:g}: test accuracy peaked at {pct(peak)} (at step {at}, per seed) and ended "
          f"{100 * drop:.2f} points "
          f"below its peak (mean over {seeds_text(len(pd_))}).",
          {"noise": p, "metric": "peak drop", "peak": float(peak), "drop": float(drop),
           "drops": [float(x[2]) for x in pd_], "steps": [x[1] for x in pd_]}))
  done = [r.status in ("done", "early_stopped") for r in ctx.study.runs]
  xs = [noise_of(r) for r, ok in zip(ctx.study.runs, done) if ok]
  for metric, name in (("test/accuracy", "test accuracy"), ("curv/lambda_max", "λ_max"),
                       ("sharp/epsilon_sharpness", "ε-sharpness")):
    if metric in ctx.table.columns:
      tau, pv, n = stats.kendall_tau(xs, ctx.table[metric][done])
      if n >= 3:
        findings.append(Finding(f"Across {n} runs, Kendall's τ between the noise level and {name} is "
                                f"{tau:.2f} (p = {pv:.2g}).", {"metric": metric, "with": "noise", "tau": tau,
                                                               "p": pv, "n": n}))
  return [Section("Results", blocks)], findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Zhang et al. (2017, ICLR, \"Understanding deep learning requires rethinking generalization\") find "
         "that networks fit partially and fully random labels, and that test error grows steadily with the "
         "noise level. Arpit et al. (2017, ICML) find that clean patterns are learned first and noisy labels "
         "memorized later, so test accuracy peaks and then falls. Neyshabur et al. (2017, NeurIPS) find that "
         "sharpness-based measures grow with the fraction of random labels."]
  items = []
  clean = next((f.values for f in findings
                if f.values.get("metric") == "peak drop" and f.values["noise"] == 0), None)
  clean_drop = clean["drop"] if clean else None
  for f in findings:
    v = f.values
    if "memorized lower bound" in v:
      m = v["memorized lower bound"]
      items.append(f"Fitting noisy labels (noise {v['noise']:g}): training-label accuracy "
                   f"{pct(v['eval_train/accuracy'])} (mean over {seeds_text(v['n'])}), so at least "
                   f"{pct(max(m, 0.0))} of the flipped labels were fitted; Zhang et al. report ~100% "
                   "training accuracy (criterion `memorization` in the verdict table: every run above 99%).")
    if v.get("metric") == "test/accuracy" and "difference" in v:
      j = wording.judge(stats.Interval.from_dict(v["interval"]), "<", **wording.POINTS)
      items.append(f"Test accuracy, noise {v['noise']:g} minus clean: {100 * v['difference']:+.2f} points; "
                   f"lower (Zhang et al.): this {j.text}.")
    if v.get("metric") in SHARPNESS and "ratio" in v:
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.TIMES)
      name = SHARPNESS[v["metric"]]
      items.append(f"{name}, noise {v['noise']:g} / clean: {v['ratio']:.2f}x; sharper with noise (Neyshabur "
                   f"et al.): this {j.text}.")
    if v.get("metric") == "peak drop" and v["noise"] > 0:
      iv = (stats.difference_interval(v["drops"], clean["drops"]) if clean else
            stats.mean_interval(v["drops"]))
      j = wording.judge(iv, ">", **wording.POINTS)
      items.append(f"Peak then fall (Arpit et al.), noise {v['noise']:g}: test accuracy ended "
                   f"{100 * v['drop']:.2f} points below its peak"
                   + (f" (clean labels: {100 * clean_drop:.2f})" if clean_drop is not None else "")
                   + f"; a larger fall than {'with clean labels' if clean else 'none'}: this {j.text}.")
  if not items:
    items.append("No noisy run could be compared with a clean one: the comparison cannot be made.")
  return out + [items] + _sharpness_at_the_end(ctx) + _direction(ctx, findings)


def _sharpness_at_the_end(ctx: Context) -> list[str]:
  """The final training loss per noise level next to the final lambda_max: near interpolation the
  cross-entropy Hessian (J^T diag-block(p - p p^T) J, Sagun et al. 2017) shrinks with the loss, so a
  lambda_max compared at different final losses is not a comparison of equally fitted minima."""
  if "curv/lambda_max" not in ctx.table.columns or "eval_train/loss" not in ctx.table.columns:
    return []
  t = ctx.table.assign(noise=pd.to_numeric(ctx.table[KEY], errors="coerce"),
                       lam=pd.to_numeric(ctx.table["curv/lambda_max"], errors="coerce"),
                       loss=pd.to_numeric(ctx.table["eval_train/loss"], errors="coerce")).dropna(
                           subset=["noise", "lam", "loss"])
  if t["noise"].nunique() < 2:
    return []
  g = t.groupby("noise")[["lam", "loss"]].mean().sort_index()
  parts = ", ".join(f"noise {n:g}: λ_max {num(r.lam)} at training loss {num(r.loss)} nats"
                    for n, r in g.iterrows())
  tau, p, n = stats.kendall_tau(t["loss"].tolist(), t["lam"].tolist())
  loss_x, lam_x = g["loss"].max() / g["loss"].min(), g["lam"].max() / g["lam"].min()
  out = (f"At the end of training (means over seeds) {parts}; across {n} runs Kendall's τ between the final "
         f"training loss and λ_max is {tau:+.2f} (p = {p:.2g}). With cross-entropy the Hessian's output "
         "factor p − ppᵀ vanishes as the fit becomes confident, so near interpolation λ_max also follows the "
         "training loss reached. ")
  if loss_x < lam_x:
    out += (f"Here the mean final losses differ by {loss_x:.2g}x and the mean λ_max by {lam_x:.2g}x: the "
            "loss level alone does not account for the difference in λ_max between noise levels.")
  else:
    out += (f"Here the mean final losses differ by {loss_x:.2g}x, as much as the mean λ_max ({lam_x:.2g}x): "
            "the sharpness comparison is confounded with how far each noise level fitted.")
  return [out]


def _direction(ctx: Context, findings: list[Finding]) -> list[str]:
  """The measured reason when a sharpness measure moves against Neyshabur et al.: its per-level means and
  the sign of its Kendall tau with the noise level (the Results finding; more seeds cannot reverse an
  estimate's sign)."""
  out = []
  done = [r.status in ("done", "early_stopped") for r in ctx.study.runs]
  noise = pd.Series([noise_of(r) for r in ctx.study.runs], index=ctx.table.index)[done]
  for metric in ("sharp/epsilon_sharpness", "curv/lambda_max"):
    tau = next((f.values for f in findings
                if f.values.get("metric") == metric and f.values.get("with") == "noise"), None)
    if tau is None or not tau["tau"] < 0:
      continue
    v = pd.to_numeric(ctx.table.loc[done, metric], errors="coerce")
    means = v.groupby(noise).mean().sort_index()
    levels = ", ".join(f"{num(m)} at noise {k:g}" for k, m in means.items() if np.isfinite(m))
    out.append(f"Measured reason for the sharpness comparison: the final {SHARPNESS[metric]} falls as the "
               f"noise grows ({levels}; Kendall's τ = {tau['tau']:+.2f}, p = {tau['p']:.2g}, {tau['n']} "
               "runs), the opposite direction to Neyshabur et al.'s; more seeds at this estimate would not "
               "show their claim.")
  return out


def _eval_interval(ctx: Context) -> str:
  every = distinct([r.eval_interval for r in ctx.study.runs])
  return every[0] if len(every) == 1 else f"at intervals that differ between runs ({', '.join(every)})"


def _limitations(ctx: Context) -> list[str]:
  out = ["Accuracy on the flipped examples alone is not logged; the memorized fraction is a lower bound "
         "from the accuracy on all (noisy) training labels, exact only if every clean label is fitted.",
         "The Hessian is that of the noisy training loss on the probe set, so it includes the flipped "
         "examples the network is memorizing.",
         f"Test accuracy is evaluated {_eval_interval(ctx)}: a peak between evaluations is not seen."]
  if "sharp/epsilon_sharpness" in ctx.table.columns:
    out.append("ε-sharpness is a lower bound of the box maximum (projected ascent from random starts) on "
               "the probe set of noisy training labels.")
  return out


TEMPLATE = Template(
    "label_noise", TITLE,
    "What does fitting wrong labels do to generalization and to the sharpness of the "
    "solution? The same network trained on clean labels and with a fraction of its training labels "
    "flipped: how many flipped labels it fits, test accuracy and gap, whether test accuracy peaks and then "
    "falls, and λ_max, the trace and ε-sharpness.", _applies, _results, _comparison, _limitations,
    _prepare, quantities=_quantities)
