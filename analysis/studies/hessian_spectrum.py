"""Report template of the Hessian-spectrum study (experiments/configs/hessian_spectrum.py).

Spectral densities (stochastic Lanczos quadrature, from each run's latest `curvature/step<S>_hessian_*.npz`)
at initialization and after training, with and without BatchNorm, and after training on subsets of C
classes; the top-k eigenvalues of each run with the position of their largest relative gap; outlier
counts (`density.outliers`: Ritz values above the first wide gap over the bulk) against C. Compared with
Ghorbani et al. 2019 (outliers emerge in training and BatchNorm suppresses them), Papyan 2019 and Sagun
et al. 2017 (about C outliers).
"""

import math

import numpy as np
import pandas as pd

from analysis import plots, runs, stats, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import (
  CLASS_NAMES,
  Context,
  Template,
  missing_text,
  num,
  pct,
  spectrum,
)

TITLE = "Hessian spectrum"
KEY = "condition"
NORM_NAMES = {"batch": "BatchNorm", "none": "no norm", "layer": "LayerNorm"}


def phase_of(run: runs.Run) -> str:
  """`init` for a run that did not move its parameters (learning rate 0 or at most one step)."""
  lr = run.flat_config.get("schedule.lr")
  steps = (run.summary or {}).get("total_steps", run.flat_config.get("training.num_steps"))
  return "init" if lr == 0 or (isinstance(steps, int) and 0 < steps <= 1) else "trained"


def classes_of(run: runs.Run) -> int | None:
  """The number of classes the run was trained on: its class subset, else the length of its per-class
  test accuracy, else the dataset's class count."""
  subset = run.flat_config.get("data.options.classes")
  if isinstance(subset, tuple | list) and subset:
    return len(subset)
  final = (run.summary or {}).get("final") or {}
  if isinstance(final.get("test/class_accuracy"), list):
    return len(final["test/class_accuracy"])
  names = CLASS_NAMES.get(run.flat_config.get("data.name"))
  return len(names) if names else None


def _full_classes(ctx: Context) -> int | None:
  counts = [c for c in (classes_of(r) for r in ctx.study.runs) if c]
  return max(counts) if counts else None


def _labeler(ctx: Context):
  full = _full_classes(ctx)

  def label(r: runs.Run) -> str:
    norm = str(r.flat_config.get("model.knobs.norm", "none"))
    text = f"{phase_of(r)}, {NORM_NAMES.get(norm, norm)}"
    c = classes_of(r)
    return text + (f", {c} classes" if c is not None and c != full else "")

  return label


def largest_gap(values) -> int | None:
  """k such that the largest ratio λ_k / λ_{k+1} among the positive top eigenvalues (in decreasing
  order) lies after the k-th: a count of outliers above the bulk from the top-k alone."""
  v = np.sort(np.asarray([x for x in values if x > 0], np.float64))[::-1]
  if len(v) < 3:
    return None
  return int(np.argmax(v[:-1] / v[1:])) + 1


def _measurement(r: runs.Run) -> dict | None:
  """The run's latest curvature record with a density: nodes, weights, top values, outliers, step."""
  s = spectrum([r])
  if s is None:
    return None
  nodes, weights, _, rec = s
  res = rec.get("results") or {}
  top = [float(x) for x in (res.get("top") or {}).get("values") or [] if runs._is_number(x)]
  outl = ((res.get("density") or {}).get("outliers") or {})
  return {"nodes": nodes, "weights": weights, "top": top, "outliers": outl.get("count"),
          "outlier values": outl.get("values") or [], "step": (rec.get("operator") or {}).get("step"),
          "operator": rec.get("operator") or {},
          "lambda_max": float(top[0]) if top else (res.get("spectrum") or {}).get("lambda_max")}


def _prepare(ctx: Context) -> Context:
  """The conditions are named by `KEY` alone."""
  return ctx.with_key(KEY, _labeler(ctx), label=True)


def _applies(ctx: Context) -> str | None:
  if not any(spectrum([r]) is not None for r in ctx.study.runs):
    return ("no run has a spectral density under curvature/ (config `curvature.density_every`, or "
            "`experiments.measure --sections curvature --config.curvature.density_every=1`)")
  return None


def _results(ctx: Context):
  label_of = _labeler(ctx)
  meas = {}  # condition -> (run, measurement) of its first run (seed) with a spectrum
  for r in ctx.study.runs:
    if label_of(r) not in meas and (m := _measurement(r)) is not None:
      meas[label_of(r)] = (r, m)
  blocks: list = []
  findings: list[Finding] = []
  missing = [label_of(r) + ("" if r.status in ("done", "early_stopped") else f" (run status: {r.status})")
             for r in ctx.study.runs if label_of(r) not in meas]
  if missing:
    blocks.append(missing_text(f"spectra of {', '.join(missing)}", "a curvature/ record with a density"))
  rows = []
  for label, (r, m) in meas.items():
    acc = ctx.values([r], "test/accuracy")
    rows.append({"condition": label, "classes": classes_of(r), "step": m["step"], "λ_max": m["lambda_max"],
                 "top-k": len(m["top"]), "outliers (SLQ)": m["outliers"],
                 "largest gap after": largest_gap(m["top"]) or "–",
                 "test acc. (%)": 100 * float(acc[0]) if len(acc) else math.nan})
  if rows:
    frame = pd.DataFrame(rows)
    table = tables.frame_table(frame, scale_accuracy=False, caption=(
        f"One row per condition ({'its first seed with a spectrum' if _seeds(ctx) > 1 else 'one seed'}): "
        "the step measured, λ_max (Lanczos), how many top eigenvalues were "
        "computed, the SLQ outlier count (Ritz values above the first wide gap over the bulk; a crude rule "
        "with one probe) and, from the top-k alone, after which eigenvalue their largest ratio λ_k/λ_(k+1) "
        "lies."))
    table.align = "l" + "r" * (len(table.header) - 1)
    blocks.append(TableBlock("spectra", table))
  op = next(iter(meas.values()))[1]["operator"] if meas else {}
  setting = (f"{op.get('num_examples')} training examples, BatchNorm mode {op.get('bn_mode')}, one seed; "
             "Gaussian kernel of 1/200 of the range, log density; triangles: outlier Ritz values")

  def spectra_figure(name, chosen, what, show=lambda k: k):
    chosen = {show(k): (meas[k][1]["nodes"], meas[k][1]["weights"]) for k in chosen if k in meas}
    if len(chosen) >= 1:
      fig = ctx.figure(name, lambda p: plots.spectral_density(chosen, path=p),
                       f"Hessian spectral density {what} ({setting}).")
      if fig:
        blocks.append(fig)

  full = _full_classes(ctx)
  for norm in ("batch", "none", "layer"):
    name = NORM_NAMES[norm]
    chosen = [k for k, (r, _) in meas.items() if r.flat_config.get("model.knobs.norm", "none") == norm
              and classes_of(r) == full]
    if chosen:
      phases = " and ".join(dict.fromkeys({"init": "at initialization", "trained": "after training"}[phase_of(
          meas[k][0])] for k in sorted(chosen, key=lambda k: phase_of(meas[k][0]) != "init")))
      spectra_figure(f"spectrum_{norm}", chosen, (f"with {name}" if norm != "none" else
                                                  "without normalization") + f", {phases}")
  by_classes = {k: (r, m) for k, (r, m) in meas.items() if phase_of(r) == "trained"
                and r.flat_config.get("model.knobs.norm", "none") == "none"}
  if len({classes_of(r) for r, _ in by_classes.values()}) > 1:
    ordered = sorted(by_classes, key=lambda k: classes_of(by_classes[k][0]) or 0)
    spectra_figure("spectrum_classes", ordered, "after training without normalization on C classes",
                   show=lambda k: f"C = {classes_of(by_classes[k][0])}")
  tops = {k: m["top"] for k, (_, m) in meas.items() if len(m["top"]) > 1}
  if tops:
    fig = ctx.figure("top_eigenvalues", lambda p: plots.ranked_values(
        tops, ylabel="Hessian eigenvalue (Lanczos)", path=p),
                     "The top eigenvalues of each run's Hessian in decreasing order: outliers stand above "
                     "the point where the curve flattens into the bulk.")
    if fig:
      blocks.append(fig)
  counts = [(classes_of(r), m["outliers"], largest_gap(m["top"])) for r, m in by_classes.values()]
  counts = sorted((c for c in counts if c[0] is not None), key=lambda c: c[0])
  if len({c[0] for c in counts}) > 1:
    cs = np.array([c[0] for c in counts], np.float64)
    xs = np.concatenate([cs, cs])
    ys = np.array([c[1] if c[1] is not None else np.nan for c in counts]
                  + [c[2] if c[2] is not None else np.nan for c in counts], np.float64)
    groups = ["SLQ outlier count"] * len(counts) + ["largest gap in the top-k"] * len(counts)
    grid = np.array([cs.min(), cs.max()])
    panels = [{"x": xs, "y": ys, "xlabel": "number of classes C", "ylabel": "outlier eigenvalues",
               "reference": (grid, grid, "C outliers")}]
    fig = ctx.figure("outliers_vs_classes", lambda p: plots.scatter_panels(panels, groups=groups, path=p),
                     "Outlier count against the number of classes (trained, no normalization): the SLQ rule "
                     "and the position of the largest gap among the top-k eigenvalues (which cannot exceed "
                     "k − 1); dashed: C outliers (Papyan 2019).")
    if fig:
      blocks.append(fig)
    findings.append(Finding(
        "Outliers after training without normalization, by number of classes C: "
        + "; ".join(f"C = {c}: {o} by the SLQ rule, largest top-k gap after eigenvalue {g}"
                    for c, o, g in counts)
        + ".", {"metric": "outliers vs classes", "counts": [list(c) for c in counts]}))
  trained = [r for r in ctx.study.runs if phase_of(r) == "trained"]
  if trained:
    fig = ctx.figure("training_curves", lambda p: plots.training_curves(
        {k: v for k, v in ctx.groups().items() if phase_of(v[0]) == "trained"}, path=p),
        "Training curves of the trained runs: minibatch training (solid) and test (dashed) loss and "
        "accuracy.")
    if fig:
      blocks.append(fig)
  for label, (_, m) in meas.items():
    text = f"{label} (step {m['step']}): λ_max {num(m['lambda_max'] or math.nan)}"
    if m["outliers"] is not None:
      text += f", {m['outliers']} outlier(s) above the bulk by the SLQ rule"
    g = largest_gap(m["top"])
    if g is not None:
      text += (f"; among the top {len(m['top'])} eigenvalues ({num(m['top'][0])} down to "
               f"{num(m['top'][-1])}) the largest ratio between neighbours lies after the {g}{_ordinal(g)}")
    findings.append(Finding(text + ".", {"condition": label, "lambda_max": m["lambda_max"],
                                         "outliers": m["outliers"], "gap": g, "step": m["step"]}))

  def find(phase, norm):
    for label, (r, m) in meas.items():
      if phase_of(r) == phase and r.flat_config.get("model.knobs.norm", "none") == norm \
          and classes_of(r) == full:
        return label, m
    return None

  for phase in ("init", "trained"):
    a, b = find(phase, "none"), find(phase, "batch")
    if a and b and a[1]["lambda_max"] and b[1]["lambda_max"]:
      ratio = a[1]["lambda_max"] / b[1]["lambda_max"]
      findings.append(Finding(
          f"{'At initialization' if phase == 'init' else 'After training'}, λ_max without BatchNorm was "
          f"{ratio:.2f}x that with it ({num(a[1]['lambda_max'])} vs {num(b[1]['lambda_max'])}), with "
          f"{a[1]['outliers']} vs {b[1]['outliers']} SLQ outliers (one seed each, no interval).",
          {"metric": "bn ratio", "phase": phase, "ratio": ratio, "outliers none": a[1]["outliers"],
           "outliers batch": b[1]["outliers"], "interval": stats.ratio_interval(
               [a[1]["lambda_max"]], [b[1]["lambda_max"]]).as_dict()}))
  for norm in ("batch", "none"):
    a, b = find("trained", norm), find("init", norm)
    if a and b and a[1]["lambda_max"] and b[1]["lambda_max"]:
      ratio = a[1]["lambda_max"] / b[1]["lambda_max"]
      sep = [separation(m["top"]) for m in (b[1], a[1])]
      text = (f"With {NORM_NAMES[norm]}, training changed λ_max {ratio:.2f}x ({num(b[1]['lambda_max'])} at "
              f"initialization, {num(a[1]['lambda_max'])} after) and the SLQ outliers from "
              f"{b[1]['outliers']} to {a[1]['outliers']}")
      if None not in sep:
        text += (f"; the top eigenvalue over the k-th (separation from the bulk) went from {sep[0]:.1f} to "
                 f"{sep[1]:.1f}")
      findings.append(Finding(text + ".", {
          "metric": "training ratio", "norm": norm, "ratio": ratio, "outliers init": b[1]["outliers"],
          "outliers trained": a[1]["outliers"], "separation init": sep[0], "separation trained": sep[1]}))
  acc = {label: ctx.values(rs, "test/accuracy") for label, rs in ctx.groups().items()}
  acc = {k: v for k, v in acc.items() if len(v) and k in meas and phase_of(meas[k][0]) == "trained"}
  if acc:
    findings.append(Finding("Test accuracy of the trained runs: " + "; ".join(
        f"{k} {pct(v.mean())}" for k, v in acc.items()) + ".", {"test/accuracy": {k: float(v.mean())
                                                                                   for k, v in acc.items()}}))
  return [Section("Results", blocks)], findings


def separation(top) -> float | None:
  """λ_1 / λ_k of the top-k eigenvalues (k >= 3, all positive): how far the largest outlier stands
  above the k-th eigenvalue, a proxy for the edge of the bulk."""
  v = np.sort(np.asarray(top, np.float64))[::-1]
  return float(v[0] / v[-1]) if len(v) >= 3 and v[-1] > 0 else None


def _seeds(ctx: Context) -> int:
  return max((len(v) for v in ctx.groups().values()), default=0)


def _ordinal(n: int) -> str:
  return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Ghorbani et al. (2019, ICML) find that during training large isolated eigenvalues separate from "
         "the bulk, that without BatchNorm they are large, and that BatchNorm suppresses them. Papyan (2019, "
         "ICML) and Sagun et al. (2017) find a bulk near zero plus about C outliers, C the number of "
         "classes."]
  items = []
  for f in findings:
    v = f.values
    if v.get("metric") == "bn ratio" and v["phase"] == "trained":
      r = v["ratio"]
      more = (v["outliers none"] or 0) > (v["outliers batch"] or 0)
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.TIMES)
      items.append(f"After training, λ_max without / with BatchNorm = {r:.2f}x; a larger top outlier without "
                   f"BatchNorm (Ghorbani et al.): this {j.text}"
                   + f"; the SLQ outlier count, {v['outliers none']} vs {v['outliers batch']}, is "
                   + ("in the same direction" if more else "not") + ".")
    if v.get("metric") == "training ratio":
      si, st = v.get("separation init"), v.get("separation trained")
      if si is None or st is None:
        continue
      j = wording.judge(stats.ratio_interval([st], [si]), ">", **wording.TIMES)
      items.append(f"Outliers separating from the bulk during training ({NORM_NAMES[v['norm']]}): λ_1/λ_k "
                   f"{si:.1f} → {st:.1f} (λ_max {v['ratio']:.2f}x); more separated after training (Ghorbani "
                   f"et al.): this {j.text}.")
    if v.get("metric") == "outliers vs classes":
      counts = v["counts"]
      near = [c for c, o, g in counts if g is not None and abs(g - c) <= 1]
      rising = all(b[2] is not None and a[2] is not None and b[2] >= a[2] for a, b in zip(counts, counts[1:]))
      items.append("About C outliers (Papyan; Sagun et al.): the largest top-k gap lies within one of C for "
                   f"{len(near)} of {len(counts)} class counts"
                   + (" and never falls as C grows" if rising else ", and falls as C grows")
                   + (": **showed**." if len(near) == len(counts) else ": **did not show**.")
                   + " The SLQ rule counts " + ", ".join(f"{o} (C = {c})" for c, o, _ in counts)
                   + (": within one of C for every C."
                      if all(o is not None and abs(o - c) <= 1 for c, o, _ in counts)
                      else ": not C (with one probe it can count bulk Ritz values as outliers, or miss "
                      "outliers that merge)."))
  if not items:
    items.append("The runs needed for the comparisons (trained with and without BatchNorm, or several class "
                 "counts) have no spectrum: the comparison cannot be made.")
  return out + [items]


def _limitations(ctx: Context) -> list[str]:
  probes = {np.atleast_2d(m["nodes"]).shape[0] for r in ctx.study.runs if (m := _measurement(r))}
  out = ["One spectrum per condition: no intervals over seeds"
         + (", and a single SLQ probe gives one noisy density per run." if probes <= {1} else ".")]
  modes = {(m["operator"] or {}).get("bn_mode") for r in ctx.study.runs if (m := _measurement(r))}
  if "batch" in modes:
    out.append("The Hessians use BatchNorm in batch mode (statistics of the probe set), the loss training "
               "descends, not the network with running statistics used at test time.")
  out.append("The top-k gap count cannot exceed k − 1; with k = 12 and C = 10 it can only just reach C.")
  return out


TEMPLATE = Template(
    "hessian_spectrum", TITLE,
    "What does the Hessian's eigenvalue density look like at initialization and after "
    "training, with and without BatchNorm, and how many outliers leave the bulk as the number of classes "
    "changes?", _applies, _results, _comparison, _limitations,
    _prepare)
