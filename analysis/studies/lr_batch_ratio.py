"""Report template of the learning-rate / batch-size study (experiments/configs/lr_batch_ratio.py).

Plain SGD on a grid of learning rates eta x batch sizes B: the final lambda_max against eta / B and
against the stability bound 2 / eta, Kendall's tau of eta / B with lambda_max, test accuracy and gap,
and a least-squares fit log lambda_max = a + b log eta + c log B (the ratio alone matters if c = -b).
Compared with Jastrzebski et al. 2017 ("Three Factors Influencing Minima in SGD"). The config's criteria
rank the runs by `lrb/eta_over_b`, eta / B of every finished run, derived here (`quantities`).
"""

import math

import numpy as np
import pandas as pd
import scipy.stats

from analysis import plots, runs, stats, style, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import Context, Template, lambda_max_history, missing_text, num, pct

TITLE = "Learning rate over batch size"
LR, BATCH = "schedule.lr", "training.batch_size"
RATIO = "lrb/eta_over_b"
FINISHED = ("done", "early_stopped")


def _lr(r: runs.Run) -> float:
  return float(r.flat_config.get(LR, math.nan))


def _n_train(r: runs.Run) -> int:
  n = (r.summary or {}).get("num_train") or r.flat_config.get("data.options.num_train")
  return int(n) if runs._is_number(n) else 0


def _batch(r: runs.Run) -> float:
  b = (r.summary or {}).get("batch_size", r.flat_config.get(BATCH))
  return float(b) if runs._is_number(b) else math.nan


def _quantities(ctx: Context) -> dict:
  """run -> {`lrb/eta_over_b`: eta / B} for every finished run (a running run's last value is not final)."""
  return {r.name: {RATIO: _lr(r) / _batch(r)} for r in ctx.study.runs if r.status in FINISHED}


def _bn_text(ctx: Context) -> str:
  if not any(r.has_batchnorm for r in ctx.study.runs):
    return "the network has no BatchNorm"
  modes = sorted({str(r.flat_config.get("curvature.bn_mode")) for r in ctx.study.runs})
  if modes == ["batch"]:
    return ("BatchNorm, where the network has it, with batch statistics over ghost batches of the run's "
            "batch size")
  return f"BatchNorm mode {', '.join(modes)}"


def _applies(ctx: Context) -> str | None:
  lrs = {_lr(r) for r in ctx.study.runs}
  sizes = {_batch(r) for r in ctx.study.runs}
  if len(lrs) < 2 or len(sizes) < 2:
    return (f"the runs need at least two learning rates and two batch sizes (found {len(lrs)} and "
            f"{len(sizes)})")
  return None


def _rows(ctx: Context) -> pd.DataFrame:
  """One row per finished run (a running or failed run's last λ_max is not a final one)."""
  rows = []
  for r, (_, t) in zip(ctx.study.runs, ctx.table.iterrows()):
    if r.status not in FINISHED:
      continue
    eta, b = _lr(r), _batch(r)
    lam = float(t.get("curv/lambda_max", math.nan))
    rows.append({"run": r.name, "η": eta, "B": b, "η/B": eta / b, "2/η": 2 / eta, "λ_max": lam,
                 "λ_max·η/2": lam * eta / 2, "test/accuracy": float(t.get("test/accuracy", math.nan)),
                 "gap/accuracy": float(t.get("gap/accuracy", math.nan)), "seed": r.seed})
  return pd.DataFrame(rows)


def log_fit(eta: np.ndarray, batch: np.ndarray, lam: np.ndarray) -> dict | None:
  """Least squares log lam = a + b log eta + c log batch over the finite positive points, with the
  standard errors of b, c and b + c from sigma^2 (X^T X)^-1 (sigma^2: residual variance, n - 3 degrees
  of freedom). None with fewer than 4 points."""
  ok = np.isfinite(lam) & (lam > 0) & np.isfinite(eta) & np.isfinite(batch)
  n = int(ok.sum())
  if n < 4:
    return None
  x = np.column_stack([np.ones(n), np.log(eta[ok]), np.log(batch[ok])])
  y = np.log(lam[ok])
  coef, *_ = np.linalg.lstsq(x, y, rcond=None)
  resid = y - x @ coef
  sigma2 = float(resid @ resid) / (n - 3)
  cov = sigma2 * np.linalg.inv(x.T @ x)
  return {"b": float(coef[1]), "c": float(coef[2]), "se b": float(np.sqrt(cov[1, 1])),
          "se c": float(np.sqrt(cov[2, 2])), "sum": float(coef[1] + coef[2]),
          "se sum": float(np.sqrt(cov[1, 1] + cov[2, 2] + 2 * cov[1, 2])), "n": n,
          "r2": float(1 - resid @ resid / ((y - y.mean()) @ (y - y.mean()))) if n > 1 else math.nan}


def _results(ctx: Context):
  blocks = []
  shown = ("test/accuracy", "eval_train/accuracy", "gap/accuracy", "test/loss", "curv/lambda_max")
  metrics = [m for m in shown if m in ctx.table.columns and ctx.table[m].notna().any()]
  loss = str(ctx.study.runs[0].flat_config.get("loss.name", "cross_entropy"))
  if metrics:
    blocks.append(TableBlock("summary", tables.mean_std_table(ctx.table, ctx.keys, metrics, caption=(
        "At the end of training: the value of each (η, B) run (mean ± standard deviation where a cell has "
        f"several seeds); accuracies in percent, loss in {style.loss_unit(loss)}; λ_max of the training-loss "
        f"Hessian on the probe set ({_bn_text(ctx)})."))))
  fig = ctx.figure("training_curves", lambda p: plots.training_curves(
      ctx.groups(), splits=("train", "test"), x="epoch", loss_name=loss, path=p),
      "Training curves against the epoch (runs of different batch sizes take different numbers of steps): "
      f"minibatch training loss (solid) and test (dashed); loss in {style.loss_unit(loss)}, accuracy in "
      "percent.")
  if fig:
    blocks.append(fig)
  d = _rows(ctx)
  findings: list[Finding] = []
  has = d["λ_max"].notna()
  if not has.any():
    blocks.append(missing_text("the final λ_max of every run", "`curv/lambda_max` in metrics.jsonl or a "
                               "curvature/ record (config `curvature.at_end`)"))
    return [Section("Results", blocks)], findings
  show = d[["η", "B", "η/B", "2/η", "λ_max", "λ_max·η/2", "test/accuracy", "gap/accuracy"]].copy()
  show = show.rename(columns={"test/accuracy": "test acc. (%)", "gap/accuracy": "gap acc. (points)"})
  show["test acc. (%)"] *= 100
  show["gap acc. (points)"] *= 100
  blocks.insert(1, TableBlock("runs", tables.frame_table(show, scale_accuracy=False, caption=(
      "One row per run (seed "
      f"{', '.join(map(str, sorted({s for s in d['seed'] if s is not None})))}): learning rate η, batch size "
      f"B, the final λ_max (training-loss Hessian on the probe set; {_bn_text(ctx)}) and λ_max relative to "
      "the stability bound 2/η of plain SGD."))))
  groups = [f"B = {int(b)}" for b in d["B"]]
  panels = [{"x": d["η/B"], "y": d["λ_max"], "xlabel": "η / B", "ylabel": "final $\\lambda_{\\max}$",
             "logx": True, "logy": True},
            {"x": d["2/η"], "y": d["λ_max"], "xlabel": "stability bound 2 / η",
             "ylabel": "final $\\lambda_{\\max}$", "logx": True, "logy": True,
             "reference": (np.sort(d["2/η"].unique()), np.sort(d["2/η"].unique()),
                           "$\\lambda_{\\max}$ = 2/η")}]
  fig = ctx.figure("lambda_vs_ratio", lambda p: plots.scatter_panels(panels, groups=groups, path=p),
                   "Final λ_max of each run against the ratio η/B (left) and against the stability bound "
                   "2/η (right; dashed: λ_max = 2/η), log-log, colour and marker by batch size. If η/B alone "
                   "sets the sharpness, the points of the left panel lie on one decreasing curve.")
  if fig:
    blocks.insert(2, fig)
  seeds, keys = {}, {}
  for rs in ctx.groups().values():
    curves = []
    for r in rs:
      s, v = lambda_max_history(r)
      per_epoch = _n_train(r) // _batch(r) if _batch(r) else 0  # steps per epoch: n // B
      if len(s) > 1 and per_epoch:
        curves.append((s / per_epoch, v * _lr(r) / 2))
    if curves:
      label = f"η = {_lr(rs[0]):g}, B = {_batch(rs[0]):g}"
      seeds[label], keys[label] = curves, (_batch(rs[0]), _lr(rs[0]))
  if seeds:
    # colour by batch size, marker by step size: the grid's two factors read off separately
    batches = sorted({b for b, _ in keys.values()})
    etas = sorted({e for _, e in keys.values()})
    styles = {k: (batches.index(b), "osD^v<>p"[etas.index(e) % 8]) for k, (b, e) in keys.items()}
    fig = ctx.figure("lambda_over_threshold", lambda p: plots.seed_curves(
        seeds, common_reference=(1.0, "bound 2/η"), xlabel="epoch",
        ylabel="$\\lambda_{\\max}$ / (2/η)", styles=styles, path=p),
        "λ_max over training divided by each run's stability bound 2/η, against the epoch, at every "
        f"measurement (the first: initialization); colour by batch size B, marker by step size η; Hessian: "
        f"{_bn_text(ctx)}; dashed: the bound.")
    if fig:
      blocks.append(fig)

  ok = d[has]
  tau, p, n = stats.kendall_tau(ok["η/B"], ok["λ_max"])
  findings.append(Finding(
      f"Across {n} runs, Kendall's τ between η/B and the final λ_max is {tau:.2f} (p = {p:.2g}); λ_max "
      f"ranged from {num(ok['λ_max'].min())} to {num(ok['λ_max'].max())}.",
      {"metric": "curv/lambda_max", "with": "eta/B", "tau": tau, "p": p, "n": n,
       "min": float(ok["λ_max"].min()), "max": float(ok["λ_max"].max())}))
  for metric, name in (("test/accuracy", "test accuracy"), ("gap/accuracy", "the accuracy gap")):
    t2, p2, n2 = stats.kendall_tau(d["η/B"], d[metric])
    if n2 >= 3:
      findings.append(Finding(f"Across {n2} runs, Kendall's τ between η/B and {name} is {t2:.2f} "
                              f"(p = {p2:.2g}).",
                              {"metric": metric, "with": "eta/B", "tau": t2, "p": p2, "n": n2}))
  fit = log_fit(ok["η"].to_numpy(), ok["B"].to_numpy(), ok["λ_max"].to_numpy())
  if fit:
    half = float(scipy.stats.t.ppf(0.975, fit["n"] - 3)) * fit["se sum"]
    fit |= {"sum lo": fit["sum"] - half, "sum hi": fit["sum"] + half}
    findings.append(Finding(
        f"A least-squares fit over {fit['n']} runs gives λ_max ∝ η^{fit['b']:.2f} B^{fit['c']:.2f} (standard "
        f"errors {fit['se b']:.2f} and {fit['se c']:.2f}; R² = {fit['r2']:.2f}); the exponents sum to "
        f"{fit['sum']:.2f} (95% t-interval {fit['sum lo']:.2f} to {fit['sum hi']:.2f}, {fit['n'] - 3} "
        "degrees of freedom), where a dependence on η/B alone gives 0 and a λ_max that follows the bound "
        "2/η gives η^-1 B^0.", {"fit": fit}))
  spreads = []
  for ratio, g in ok.groupby(ok["η/B"].round(12)):
    if len(g) >= 2:
      spreads.append((ratio, float(g["λ_max"].max() / g["λ_max"].min()), len(g)))
  if spreads:
    within = float(np.median([s for _, s, _ in spreads]))
    overall = float(ok["λ_max"].max() / ok["λ_max"].min())
    worst = max(spreads, key=lambda t: t[1])
    findings.append(Finding(
        f"Runs that share a ratio η/B ({len(spreads)} ratios with 2 or more runs) differ in λ_max by a "
        f"median factor of {within:.2f} (at most {worst[1]:.2f}, at η/B = {worst[0]:.3g}), against "
        f"{overall:.2f} between the flattest and sharpest run overall.",
        {"within median": within, "within max": worst[1], "overall": overall, "ratios": len(spreads)}))
  frac = ok["λ_max·η/2"]
  below = int((frac < 1).sum())
  findings.append(Finding(
      f"λ_max ended at {frac.min():.2f}–{frac.max():.2f} of the bound 2/η ({below} of {len(frac)} runs below "
      f"it; at the largest step size η = {ok['η'].max():g}: {frac[ok['η'] == ok['η'].max()].mean():.2f} on "
      "average).", {"frac min": float(frac.min()), "frac max": float(frac.max()), "below": below,
                    "n": len(frac), "frac at max lr": float(frac[ok["η"] == ok["η"].max()].mean())}))
  best = d.loc[d["test/accuracy"].idxmax()] if d["test/accuracy"].notna().any() else None
  if best is not None:
    findings.append(Finding(
        f"The best test accuracy, {pct(best['test/accuracy'])}, came from η = {best['η']:g}, "
        f"B = {int(best['B'])} (η/B = {best['η/B']:.3g}); the worst, {pct(d['test/accuracy'].min())}.",
        {"best": float(best["test/accuracy"]), "worst": float(d["test/accuracy"].min())}))
  return [Section("Results", blocks)], findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Jastrzebski et al. (2017, \"Three Factors Influencing Minima in SGD\", arXiv:1711.04623) model SGD "
         "as a stochastic differential equation whose noise scale is set by η/B: a higher ratio leads to "
         "flatter minima that generalize better, and runs with the same ratio reach minima of similar "
         "sharpness. Predictions: λ_max falls as η/B grows (negative τ), test accuracy rises with η/B "
         "(the verdict table judges both), and λ_max depends on η and B only through η/B (exponents of η "
         "and B that sum to 0; not a criterion)."]
  items = []
  for f in findings:
    v = f.values
    if v.get("with") == "eta/B" and v.get("metric") == "curv/lambda_max":
      j = wording.judge_correlation(v["tau"], v["p"], v["n"], "<")
      items.append(f"Flatter at higher η/B (τ < 0): this {j.text}.")
    if v.get("with") == "eta/B" and v.get("metric") == "test/accuracy" and np.isfinite(v["tau"]):
      j = wording.judge_correlation(v["tau"], v["p"], v["n"], ">")
      items.append(f"Better test accuracy at higher η/B (τ > 0): this {j.text}.")
    if v.get("with") == "eta/B" and v.get("metric") == "gap/accuracy" and np.isfinite(v["tau"]):
      j = wording.judge_correlation(v["tau"], v["p"], v["n"], "<")
      items.append(f"A smaller accuracy gap at higher η/B (τ < 0; not a criterion): this {j.text}. In a "
                   "fixed number of epochs the high-ratio runs also take more or larger steps, so they fit "
                   "the training set further.")
    if "fit" in v:
      fit = v["fit"]
      items.append(f"Dependence through η/B only (not a criterion): the exponents of η and B sum to "
                   f"{fit['sum']:.2f}, 95% t-interval {fit['sum lo']:.2f} to {fit['sum hi']:.2f} over "
                   f"{fit['n']} runs; the ratio hypothesis predicts 0, a λ_max that follows 2/η predicts an "
                   f"exponent of η of −1 (fitted: {fit['b']:.2f} ± {fit['se b']:.2f}). "
                   + ("The interval excludes 0: at this scale λ_max does not depend on η and B through η/B "
                      "alone. " if not fit["sum lo"] <= 0 <= fit["sum hi"] else
                      "The interval contains 0, as the ratio hypothesis predicts. ")
                   + ("Its exponent of η is that of the bound 2/η (within two standard errors of −1): the "
                      "Kendall criteria above can hold because λ_max follows 2/η, which falls as η, and with "
                      "it η/B, grows. " if abs(fit["b"] + 1) <= 2 * fit["se b"] else "")
                   + (f"Its exponent of B ({fit['c']:.2f} ± {fit['se c']:.2f}) is not the 0 of a λ_max set "
                      "by 2/η alone"
                      + (" either: neither simple reading accounts for the grid" if not fit["sum lo"] <= 0
                         <= fit["sum hi"] else "")
                      + "; the Kendall criteria, which any λ_max falling with η and rising with B satisfies, "
                      "do not tell the readings apart. " if abs(fit["c"]) > 2 * fit["se c"] else "")
                   + "The fit assumes one seed per cell is representative (no seed spread enters it).")
  if not items:
    items.append("No λ_max measurement: the comparison cannot be made.")
  return out + [items]


def _limitations(ctx: Context) -> list[str]:
  seeds = {r.seed for r in ctx.study.runs}
  out = []
  if len(seeds) == 1:
    out.append("One seed per (η, B): no intervals; a single run's λ_max varies between seeds (see the "
               "depth_width and bn_ablation studies for its seed-to-seed spread).")
  out.append("The epoch budget is fixed, so small batches take more steps; a run may not have reached the "
             "stationary regime the SDE argument assumes.")
  return out


TEMPLATE = Template(
    "lr_batch_ratio", TITLE,
    "Does the ratio of learning rate to batch size, η/B, set how sharp the minimum SGD "
    "finds is? The final λ_max of plain SGD on a grid of η × B against η/B and against the stability "
    "bound 2/η, with test accuracy and the generalization gap.", _applies, _results, _comparison,
    _limitations, quantities=_quantities)
