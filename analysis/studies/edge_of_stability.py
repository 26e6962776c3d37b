"""Report template of the edge-of-stability study (experiments/configs/edge_of_stability.py): lambda_max
over training against the stability threshold 2/eta (and its momentum and Adam analogues) per step size,
compared with Cohen et al. 2021, 2022.

The criteria of the config are judged on per-run quantities derived here from the lambda_max history
(`eos_quantities`; ratios are lambda / threshold):
  eos/start_ratio, eos/end_ratio, eos/max_ratio   at the first and last measurement, and the largest
  eos/started_above     1 if the first measurement is at or above the threshold (then the run catapults
                        down first, Lewkowycz et al. 2020; that is not progressive sharpening)
  eos/reached           1 if a measurement >= REACH x threshold follows the first measurement below the
                        window (< WINDOW[0] x threshold: a crossing from below the window, never the first
                        measurement; a run that falls into the window from above has not crossed), else 0
  eos/crossing_step     the step of that crossing
  eos/sharpening        the largest lambda_max after the lowest one (between the first measurement below the
                        window and the crossing, or the end), over that lowest value
  eos/window_fraction   share of the measurements from the crossing to the end inside WINDOW x threshold
                        (0 when the threshold was not reached from below)
  eos/hover_fraction    the same up to the last measurement at or above WINDOW[0] x threshold: a final
                        decline below the window (cross-entropy, Cohen et al. 2021 Sec. 3) is left out
  eos/above_fraction    of the measurements counted by hover_fraction, the share at or above the threshold
                        (Cohen et al.: "at or just above"; the rest of the window is a sharpness settled
                        just below it, as at a minimum fitted below the threshold)
Adam-type runs get the same quantities for the preconditioned sharpness (`curv/precond_lambda_max`)
against 38/eta, named `eos/precond_*`; their raw lambda_max is not compared with 38/eta.
"""

import math

import numpy as np
import pandas as pd

from analysis import plots, runs, style, tables
from analysis.document import Finding, Section, TableBlock, num
from analysis.results import ADAPTIVE, Context, Template, lambda_max_history, threshold_of

TITLE = "Edge of stability"
REACH = 0.95  # experiments/configs/edge_of_stability.py: REACH, WINDOW (the criteria are worded with them)
WINDOW = (0.9, 1.1)
PRECOND = "curv/precond_lambda_max"
FITTED = 1e-3  # MSE training loss at the end below which a run has fitted its training set (a limitation)


def eos_quantities(steps: np.ndarray, values: np.ndarray, threshold: float, prefix: str = "eos/") -> dict:
  """The quantities of the module docstring from one run's (steps, lambda_max) and its threshold; {} with
  fewer than two finite measurements or no positive threshold."""
  steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
  ok = np.isfinite(values)
  steps, values = steps[ok], values[ok]
  if len(values) < 2 or threshold is None or not math.isfinite(threshold) or threshold <= 0:
    return {}
  r = values / threshold
  q = {"start_ratio": r[0], "end_ratio": r[-1], "max_ratio": r.max(), "started_above": float(r[0] >= 1.0),
       "reached": 0.0, "window_fraction": 0.0, "hover_fraction": 0.0, "above_fraction": math.nan,
       "sharpening": math.nan,
       "crossing_step": math.nan, "first_below_step": math.nan}
  below = np.flatnonzero(r < WINDOW[0])
  if len(below):
    start = int(below[0])
    q["first_below_step"] = steps[start]
    later = np.flatnonzero(r[start + 1:] >= REACH) + start + 1
    end = int(later[0]) if len(later) else len(r) - 1
    low = start + int(np.argmin(values[start:end + 1]))
    q["sharpening"] = float(values[low:end + 1].max() / values[low]) if values[low] > 0 else math.nan
    if len(later):
      post = r[end:]
      inside = (post >= WINDOW[0]) & (post <= WINDOW[1])
      last = int(np.flatnonzero(post >= WINDOW[0])[-1])
      q |= {"reached": 1.0, "crossing_step": steps[end], "window_fraction": float(inside.mean()),
            "hover_fraction": float(inside[:last + 1].mean()),
            "above_fraction": float((post[:last + 1] >= 1.0).mean())}
  return {prefix + k: float(v) for k, v in q.items()}


def _adaptive(run: runs.Run) -> bool:
  return run.flat_config.get("optimizer.name") in ADAPTIVE


def run_quantities(run: runs.Run) -> dict:
  """`eos_quantities` of one run: the raw lambda_max against 2/eta or (2 + 2 beta)/eta, or for Adam-type
  runs the preconditioned sharpness against 38/eta (`eos/precond_*`)."""
  t, _ = threshold_of(run)
  if _adaptive(run):
    return eos_quantities(*run.curve(PRECOND), t, prefix="eos/precond_")
  return eos_quantities(*lambda_max_history(run), t)


def _quantities(ctx: Context) -> dict:
  return {r.name: run_quantities(r) for r in ctx.study.runs}


def _eos_applies(ctx: Context) -> str | None:
  if not any(len(lambda_max_history(r)[0]) > 1 for r in ctx.study.runs):
    return "no run has λ_max measured at two or more steps (`curv/lambda_max` in metrics.jsonl)"
  return None


def _loss(run: runs.Run) -> str:
  return str(run.flat_config.get("loss.name", "cross_entropy"))


def _q(run: runs.Run) -> tuple[dict, str]:
  """(quantities without their prefix, what was compared)."""
  prefix = "eos/precond_" if _adaptive(run) else "eos/"
  what = "preconditioned sharpness" if _adaptive(run) else "λ_max"
  return {k[len(prefix):]: v for k, v in run_quantities(run).items()}, what


def _final(ctx: Context, run: runs.Run, metric: str) -> float:
  v = ctx.values([run], metric)
  return float(v[0]) if len(v) else math.nan


def _short(run: runs.Run) -> str:
  """`GD (full batch), η=0.02` (a figure's legend; one loss per figure)."""
  return f"{style.optimizer_label(run.flat_config)}, η={run.flat_config.get('schedule.lr', math.nan):.3g}"


def _run_label(run: runs.Run) -> str:
  """`GD (full batch) at η=0.02 (mse)`: a run in running text, without commas."""
  return (f"{style.optimizer_label(run.flat_config)} at η={run.flat_config.get('schedule.lr', math.nan):.3g} "
          f"({_loss(run)})")


def _step(x: float) -> str:
  return f"{int(x)}" if math.isfinite(x) else "–"


def _run_text(label: str, run: runs.Run) -> tuple[str, dict]:
  q, what = _q(run)
  t, tname = threshold_of(run)
  if not q:
    return f"{label} ({run.name}): {what} measured at fewer than two steps.", {}
  text = f"{label} (seed {run.seed}): {what} started at {q['start_ratio']:.2f} of {tname} = {num(t)}"
  if q["started_above"]:
    text += (" (above it), fell below it by step " + _step(q["first_below_step"]) + " (the catapult of "
             "Lewkowycz et al. 2020, not progressive sharpening)" if math.isfinite(q["first_below_step"])
             else " (above it) and never fell below it, so it never reached the threshold from below")
  if q["reached"]:
    text += (f"; from its lowest value below the window it rose {q['sharpening']:.2f}x and crossed "
             f"{REACH:g} of the threshold at step {_step(q['crossing_step'])}; from there, "
             f"{100 * q['window_fraction']:.0f}% of the measurements lay in [{WINDOW[0]:g}, {WINDOW[1]:g}] x "
             "the threshold")
    if q["hover_fraction"] != q["window_fraction"]:
      text += f" ({100 * q['hover_fraction']:.0f}% up to a final decline below the window)"
  elif math.isfinite(q["first_below_step"]):
    text += (f"; below the threshold it rose at most {q['sharpening']:.2f}x and did not reach {REACH:g} of "
             "the threshold again")
  text += f"; it ended at {q['end_ratio']:.2f} of the threshold."
  return text, {"condition": label, "run": run.name, "threshold": t, "threshold name": tname,
                "compared": what, **q}


def _seed_curves(ctx: Context, rs: list[runs.Run]) -> list[tuple[np.ndarray, np.ndarray]]:
  out = []
  for r in rs:
    s, v = r.curve(PRECOND) if _adaptive(r) else lambda_max_history(r)
    if len(s) > 1:
      out.append((s, v))
  return out


def _eos_results(ctx: Context):
  groups = ctx.groups()
  blocks, findings, rows = [], [], []
  for label, rs in groups.items():
    for r in rs:
      text, values = _run_text(label, r)
      findings.append(Finding(text, values))
      if values:
        rows.append({"condition": label, "seed": r.seed, "loss": _loss(r),
                     "optimizer": style.optimizer_label(r.flat_config),
                     "threshold": f"{values['threshold name']} = {num(values['threshold'])}",
                     "start / thr.": values["start_ratio"], "crossed from below at step":
                     _step(values["crossing_step"]), "rise before crossing": values["sharpening"],
                     f"in [{WINDOW[0]:g}, {WINDOW[1]:g}] after crossing": values["window_fraction"],
                     "same, to the final decline": values["hover_fraction"],
                     "end / thr.": values["end_ratio"],
                     "train loss at end": _final(ctx, r, "eval_train/loss"),
                     "test acc. (%)": 100 * _final(ctx, r, "test/accuracy"),
                     "train acc. (%)": 100 * _final(ctx, r, "eval_train/accuracy")})
  if rows:
    blocks.append(TableBlock("stability", tables.frame_table(pd.DataFrame(rows), caption=(
        "Per run: the compared sharpness (λ_max of the full-batch training loss; Adam: the preconditioned "
        "sharpness) relative to the run's stability threshold: at the first measurement; the step at which "
        f"it reached {REACH:g} of the threshold after a measurement below it (a crossing from below; – : "
        "none); its rise from its lowest value below the window to that crossing (or the end); the share of "
        f"the measurements from the crossing inside [{WINDOW[0]:g}, {WINDOW[1]:g}] x the threshold (to the "
        "end, and up to a final decline below the window); at the end. These are the quantities the verdicts "
        "judge. Training loss and accuracies at the end (train: the whole training set)."),
        scale_accuracy=False)))
  for loss in dict.fromkeys(_loss(r) for r in ctx.study.runs):
    sub = {k: rs for k, rs in groups.items() if _loss(rs[0]) == loss}
    short = [_short(rs[0]) for rs in sub.values()]
    if len(set(short)) == len(short):  # short legend names where they still tell the conditions apart
      sub = dict(zip(short, sub.values()))
    seeds = {k: _seed_curves(ctx, rs) for k, rs in sub.items()}
    seeds = {k: v for k, v in seeds.items() if v}
    thr = {k: threshold_of(rs[0])[0] for k, rs in sub.items()}
    names = sorted({threshold_of(rs[0])[1] for rs in sub.values()})
    if seeds:
      fig = ctx.figure(f"lambda_max_{loss}", lambda p, seeds=seeds, thr=thr: plots.lambda_max_curves(
          seeds=seeds, thresholds=thr, threshold_label="threshold", normalized=True, window=WINDOW, path=p),
          f"{loss} runs: λ_max of the full-batch training loss (Adam: the preconditioned sharpness) divided "
          f"by each condition's stability threshold ({', '.join(names)}; values above the plot), at every "
          f"measurement; {plots.interval_text('minmax')} where a condition has several seeds. Dashed: the "
          f"threshold; grey: the window [{WINDOW[0]:g}, {WINDOW[1]:g}] x the threshold in which the hover "
          f"criteria count measurements. A run reaches the threshold only by crossing {REACH:g} from below "
          "after a measurement below the window; the first point is the initialization"
          + (" (the preconditioned sharpness: the first measurement after it, as Adam has no second-moment "
             "estimate at step 0)." if any(_adaptive(rs[0]) for rs in sub.values()) else "."))
      if fig:
        blocks.append(fig)
    full = {k: bool(rs[0].flat_config.get("training.full_batch")) for k, rs in sub.items()}
    draw = (lambda p, sub=sub, full=full, loss=loss: plots.training_curves(
        sub, splits=("train", "test"), loss_name=loss, full_batch=full, path=p))
    fig = ctx.figure(f"training_curves_{loss}", draw,
        f"{loss} runs: training (solid; full-batch GD: the whole training set) and test (dashed) loss in "
        f"{style.loss_unit(loss)} and accuracy in percent; band: min–max over seeds.")
    if fig:
      blocks.append(fig)
  return [Section("Results", blocks)], findings


def _eos_comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Cohen et al. (2021, ICLR, arXiv:2103.00065) find that under full-batch gradient descent λ_max "
         "rises during training (progressive sharpening) until it reaches 2/η and then hovers right at or "
         "just above it while the loss keeps falling non-monotonically; with cross-entropy it later falls "
         "below 2/η as the loss goes to 0; with heavy-ball momentum β the threshold is (2 + 2β)/η. Cohen "
         "et al. (2022, arXiv:2207.14484) find the same for full-batch Adam's preconditioned sharpness at "
         "38/η. The verdict table judges each claim per run and step size; the runs behind it:"]
  items = []
  for f in findings:
    v = f.values
    if "reached" not in v:
      continue
    parts = []
    if v["started_above"]:
      parts.append(f"it started above the threshold ({v['start_ratio']:.2f} of it) and catapulted down "
                   "(Lewkowycz et al. 2020): that fall is not the edge of stability, and only a later "
                   "crossing from below counts")
    if v["reached"]:
      parts.append(f"it crossed from below at step {_step(v['crossing_step'])} after rising "
                   f"{v['sharpening']:.2f}x")
      if math.isfinite(v.get("above_fraction", math.nan)):
        parts.append(f"of its measurements from the crossing to the last one in or above the window, "
                     f"{100 * v['above_fraction']:.0f}% were at or above the threshold (Cohen et al.: at or "
                     "just above it) and the rest below it")
      if v["end_ratio"] < WINDOW[0] and v["hover_fraction"] > v["window_fraction"]:
        parts.append(f"it ended below the window at {v['end_ratio']:.2f} of the threshold: the late decline "
                     "Cohen et al. report for cross-entropy" if _loss_of(ctx, v["run"]) == "cross_entropy"
                     else f"it ended below the window at {v['end_ratio']:.2f} of the threshold")
    else:
      parts.append("it never reached the threshold from below within this run")
    items.append(f"{v['condition']}: " + "; ".join(parts) + ".")
  return out + ([items] if items else ["No run has a stability threshold (unknown optimizer)."])


def _loss_of(ctx: Context, name: str) -> str:
  return next((_loss(r) for r in ctx.study.runs if r.name == name), "")


def _eos_limitations(ctx: Context) -> list[str]:
  every = sorted({r.flat_config.get("curvature.every_steps") for r in ctx.study.runs} - {None})
  out = [f"λ_max is measured every {', '.join(map(str, every)) or '?'} steps: oscillations between "
         "measurements are not seen, so a crossing counts from "
         f"{REACH:g} of the threshold and hovering is a share of measurements inside "
         f"[{WINDOW[0]:g}, {WINDOW[1]:g}] x the threshold."]
  if any(_adaptive(r) for r in ctx.study.runs):
    out.append("For Adam the 38/η threshold applies to the preconditioned Hessian P^-1/2 H P^-1/2 "
               "(`curv/precond_lambda_max`, not measured at initialization, where Adam has no second "
               "moment); its raw λ_max is not compared with a threshold.")
  if any((run_quantities(r).get("eos/started_above") or 0) > 0 for r in ctx.study.runs):
    out.append("Some runs start above their threshold at initialization (their first measurement): they "
               "catapult down before any progressive sharpening; only a later crossing from below counts.")
  settings: dict[str, list[str]] = {}
  for rs in ctx.groups().values():
    c = rs[0].flat_config
    key = (f"initialization {c.get('model.knobs.initializer', 'the model default')} and input normalization "
           f"{c.get('data.options.normalization', 'standardize')}")
    settings.setdefault(key, []).append(f"{_run_label(rs[0])}")
  if len(settings) > 1:
    out.append("The runs do not share one initialization and input normalization (the study config's "
               "docstring gives the measured reason); λ_max at initialization, and so the distance to the "
               "threshold, depends on them. " + " ".join(
                   f"{k[0].upper()}{k[1:]}: {'; '.join(v)}." for k, v in settings.items()))
  fitted = [f"{_run_label(r)}: {_final(ctx, r, 'eval_train/loss'):.1e}" for r in ctx.study.runs
            if _loss(r) == "mse" and _q(r)[0].get("reached") and _final(ctx, r, "eval_train/loss") < FITTED]
  if fitted:
    out.append(f"Training loss at the end below {FITTED:g} ({'; '.join(fitted)}): once the training set is "
               "fitted, the sharpness can settle at a minimum just below the threshold instead of "
               "oscillating about it, and the hover share counts those measurements as well (the training "
               "curves show whether the loss still spikes, the mark of the edge of stability).")
  return out


TEMPLATE = Template(
    "edge_of_stability", TITLE,
    "Does λ_max rise from below to the stability threshold 2/η (and its momentum and Adam analogues) and "
    "hover there, for each step size?", _eos_applies, _eos_results, _eos_comparison, _eos_limitations,
    quantities=_quantities)
