"""Report template of the Hessian-spectrum study (experiments/configs/hessian_spectrum.py).

From each run's latest `curvature/step<S>_hessian_*` record: the top-k Lanczos eigenvalues (with their
residuals), the position of their largest relative gap (`research.core.spectral.largest_gap`, the
definition of the evaluator's `curv/top_gap_index`) among the top 2C for a run on C classes,
lambda_1 / lambda_k, the gradient's share in the top-k eigenspace, and the SLQ density (drawn with the
top-k marked and its resolution stated; SLQ counts no outliers). Per-run quantity for the criteria:
`spectrum/gap_minus_classes` (gap position among the top 2C minus C). Compared with Sagun et al. 2017 and
Papyan 2019 (about C outliers) and Ghorbani et al. 2019 (outliers emerge in training, BatchNorm
suppresses them), with Welch intervals over seeds.
"""

import math

import numpy as np
import pandas as pd

from analysis import plots, runs, stats, style, tables, wording
from analysis.document import Finding, Section, TableBlock, seeds_text
from analysis.results import (
  CLASS_NAMES,
  Context,
  Template,
  missing_text,
  num,
  pct,
  spectrum,
)
from research.core import spectral

TITLE = "Hessian spectrum"
KEY = "condition"
NORM_NAMES = {"batch": "BatchNorm", "none": "no norm", "layer": "LayerNorm"}
GAP_QUANTITY = "spectrum/gap_minus_classes"


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


def _norm(run: runs.Run) -> str:
  return str(run.flat_config.get("model.knobs.norm", "none"))


def _full_classes(ctx: Context) -> int | None:
  counts = [c for c in (classes_of(r) for r in ctx.study.runs) if c]
  return max(counts) if counts else None


def _labeler(ctx: Context):
  full = _full_classes(ctx)

  def label(r: runs.Run) -> str:
    text = f"{phase_of(r)}, {NORM_NAMES.get(_norm(r), _norm(r))}"
    c = classes_of(r)
    return text + (f", {c} classes" if c is not None and c != full else "")

  return label


def largest_gap(values) -> int | None:
  """i such that the largest ratio λ_i / λ_(i+1) among the positive top eigenvalues (in decreasing order)
  lies after the i-th: `research.core.spectral.largest_gap`'s position (the evaluator's definition)."""
  return spectral.largest_gap(values)[0]


def gap_within(top, classes: int | None) -> int | None:
  """The largest-gap position among the top 2C eigenvalues (None when fewer than 2C were computed)."""
  v = np.sort(np.asarray(top, np.float64))[::-1]
  if classes is None or len(v) < 2 * classes:
    return None
  return largest_gap(v[:2 * classes])


def _measurement(r: runs.Run) -> dict | None:
  """The run's latest curvature record: top values and residuals (descending), density nodes and
  weights when it has them, the operator's settings and the step."""
  recs = [c for c in r.curvature if ((c.get("results") or {}).get("top") or {}).get("values")]
  if not recs:
    return None
  recs.sort(key=lambda c: (c.get("operator") or {}).get("step", -1))
  rec = recs[-1]
  res = rec.get("results") or {}
  top = res["top"]
  vals = np.asarray([float(x) if runs._is_number(x) else math.nan for x in top["values"]], np.float64)
  resid = np.asarray([float(x) if runs._is_number(x) else math.nan
                      for x in top.get("residual_norms") or [math.nan] * len(vals)], np.float64)
  order = np.argsort(-vals)
  s = spectrum([r])
  nodes = weights = None
  if s is not None and (s[3].get("operator") or {}).get("step") == (rec.get("operator") or {}).get("step"):
    nodes, weights = s[0], s[1]
  c = classes_of(r)
  return {"top": vals[order], "residuals": resid[order], "nodes": nodes, "weights": weights,
          "step": (rec.get("operator") or {}).get("step"), "operator": rec.get("operator") or {},
          "lambda_max": float(vals[order][0]) if len(vals) else math.nan, "classes": c,
          "gap": gap_within(vals, c), "separation": separation(vals),
          "grad share": ((res.get("gradient") or {}).get("top_subspace_fraction"))}


def separation(top) -> float | None:
  """λ_1 / λ_k of the top-k eigenvalues (k >= 3, all positive): how far the largest eigenvalue stands
  above the k-th."""
  v = np.sort(np.asarray(top, np.float64))[::-1]
  return float(v[0] / v[-1]) if len(v) >= 3 and v[-1] > 0 else None


def _fit_at(r: runs.Run, step) -> tuple[float, float]:
  """(accuracy, loss) on the training subset (`eval_train/*`) at the last evaluation at or before `step`
  (nan when the run has none)."""
  rows = [m for m in r.metrics if runs._is_number(m.get("eval_train/accuracy"))
          and (step is None or m.get("step", -1) <= step)]
  if not rows:
    return math.nan, math.nan
  last = max(rows, key=lambda m: m.get("step", -1))
  loss = last.get("eval_train/loss")
  return float(last["eval_train/accuracy"]), float(loss) if runs._is_number(loss) else math.nan


def _ratio_at(top, i: int) -> float:
  """λ_i / λ_(i+1) (1-based i) of the descending top eigenvalues; nan out of range or non-positive."""
  v = np.asarray(top, np.float64)
  return float(v[i - 1] / v[i]) if 1 <= i < len(v) and v[i] > 0 else math.nan


def _rank_at_classes(top, c: int) -> int | None:
  """The rank (1: largest) of max(λ_(C-1)/λ_C, λ_C/λ_(C+1)) among the 2C − 1 ratios of the top 2C."""
  v = np.asarray(top, np.float64)[:2 * c]
  if len(v) < 2 * c or not (v > 0).all():
    return None
  ratios = v[:-1] / v[1:]
  best = max(ratios[i - 1] for i in (c - 1, c) if i >= 1)
  return int((ratios > best).sum()) + 1


def _gap_profile(trained: list) -> str | None:
  """A paragraph computed from the runs, per class count C: the largest ratio λ_i/λ_(i+1) among the top
  2C and where it lies, against the ratios at C − 1 and C (what C outliers above a bulk would make the
  largest) and the rank of the larger of them, the spread λ_1/λ_C of the top C, and the fit of the
  training set when the Hessian was measured. It says by how much the
  outlier criterion passes or fails."""
  per_c: dict[int, list] = {}
  for r, m in trained:
    if m["gap"] is not None and len(m["top"]) >= 2 * m["classes"]:
      per_c.setdefault(m["classes"], []).append((r, m))
  if not per_c:
    return None
  parts = []
  for c in sorted(per_c):
    items = per_c[c]
    largest = np.asarray([_ratio_at(m["top"], m["gap"]) for _, m in items])
    at_c = np.asarray([_ratio_at(m["top"], c) for _, m in items])
    at_c1 = np.asarray([_ratio_at(m["top"], c - 1) for _, m in items])  # nan for C = 1
    spread = np.asarray([m["top"][0] / m["top"][c - 1] if m["top"][c - 1] > 0 else math.nan
                         for _, m in items])
    ranks = [_rank_at_classes(m["top"], c) for _, m in items]
    fits = [_fit_at(r, m["step"]) for r, m in items]
    acc = np.asarray([a for a, _ in fits])
    loss = np.asarray([x for _, x in fits])

    def rng(x, fmt=lambda v: f"{v:.2f}"):
      x = x[np.isfinite(x)]
      if not len(x):
        return "–"
      return fmt(x.mean()) + (f" ({fmt(x.min())}–{fmt(x.max())})" if len(x) > 1 else "")

    text = (f"C = {c} ({len(items)} runs): the largest ratio among the top {2 * c} was {rng(largest)}, after "
            f"eigenvalue {', '.join(str(m['gap']) for _, m in items)}; the ratio after eigenvalue C − 1 was "
            f"{rng(at_c1)} and after C {rng(at_c)}, the larger of the two ranking "
            f"{', '.join('–' if k is None else str(k) for k in ranks)} among the {2 * c - 1} ratios; the "
            f"top C span λ_1/λ_C = {rng(spread)}")
    if np.isfinite(acc).any():
      text += (f", measured at training-subset accuracy {rng(acc, lambda v: f'{100 * v:.1f}%')} and loss "
               f"{rng(loss, lambda v: f'{v:.3g}')}")
    parts.append(text + ".")
  return ("Gap profile (trained, no normalization; mean over runs, min–max in parentheses). About C "
          "outliers would make the ratio after C − 1 or C the largest: " + " ".join(parts))


def _quantities(ctx: Context) -> dict[str, dict[str, float]]:
  out = {}
  for r in ctx.study.runs:
    m = _measurement(r)
    if m is not None and m["gap"] is not None and m["classes"]:
      out[r.name] = {GAP_QUANTITY: float(m["gap"] - m["classes"])}
  return out


def _prepare(ctx: Context) -> Context:
  """The conditions are named by `KEY` alone."""
  return ctx.with_key(KEY, _labeler(ctx), label=True)


def _applies(ctx: Context) -> str | None:
  if not any(_measurement(r) is not None for r in ctx.study.runs):
    return ("no run has a curvature record with top eigenvalues under curvature/ (config "
            "`curvature.at_end`, or `experiments.measure --sections curvature`)")
  return None


def _mode_text(op: dict) -> str:
  mode = op.get("bn_mode")
  if mode == "batch":
    return (f"BatchNorm in batch mode, statistics of ghost batches of {op.get('ghost_batch_size', '?')} "
            "training examples (the loss training descends)")
  return f"BatchNorm mode {mode}" if mode else "BatchNorm mode not recorded"


def _geomean(x: np.ndarray) -> float:
  return float(np.exp(np.mean(np.log(x)))) if len(x) and (x > 0).all() else math.nan


def _seed(r: runs.Run):
  return r.flat_config.get("seed", r.overrides.get("seed"))


def _results(ctx: Context):
  label_of = _labeler(ctx)
  meas = {r.name: (r, m) for r in ctx.study.runs if (m := _measurement(r)) is not None}
  blocks: list = []
  findings: list[Finding] = []
  missing = [f"{label_of(r)} (seed {_seed(r)}" + ("" if r.status in ("done", "early_stopped")
                                                   else f", run status: {r.status}") + ")"
             for r in ctx.study.runs if r.name not in meas]
  if missing:
    blocks.append(missing_text(f"the curvature of {', '.join(missing)}", "a curvature/ record with top "
                               "eigenvalues"))
  rows = []
  for r, m in meas.values():
    acc = ctx.values([r], "test/accuracy")
    c = m["classes"]
    rows.append({"condition": label_of(r), "seed": _seed(r), "C": c, "step": m["step"],
                 "λ_max": m["lambda_max"], "k": len(m["top"]),
                 "λ_1/λ_k": m["separation"] if m["separation"] is not None else math.nan,
                 "largest gap in top 2C after": m["gap"] if m["gap"] is not None else "–",
                 "gradient in top-k (%)": (100 * m["grad share"] if runs._is_number(m["grad share"])
                                           else math.nan),
                 "test acc. (%)": 100 * float(acc[0]) if len(acc) else math.nan})
  op = next(iter(meas.values()))[1]["operator"] if meas else {}
  if rows:
    table = tables.frame_table(pd.DataFrame(rows), scale_accuracy=False, caption=(
        f"One row per run, at its last measurement ({_mode_text(op)}; {op.get('num_examples')} training "
        "examples): λ_max and the top k eigenvalues (Lanczos), λ_1/λ_k, the position i of the largest ratio "
        "λ_i/λ_(i+1) among the top 2C (C classes; `research.core.spectral.largest_gap`; about C outliers "
        "put it at C − 1 or C), the share of the probe-set gradient's squared norm in the top-k "
        "eigenspace."))
    table.align = "l" + "r" * (len(table.header) - 1)
    blocks.append(TableBlock("spectra", table))

  # Densities: the first seed of each condition that has one, top-k marked, resolution stated.
  first: dict[str, tuple[runs.Run, dict]] = {}
  for r, m in meas.values():
    if m["nodes"] is not None:
      first.setdefault(label_of(r), (r, m))

  def spectra_figure(name, chosen, what, show=lambda k: k):
    chosen = [k for k in chosen if k in first]
    if not chosen:
      return
    dens = {show(k): (first[k][1]["nodes"], first[k][1]["weights"]) for k in chosen}
    top = {show(k): first[k][1]["top"] for k in chosen}
    resid = {show(k): first[k][1]["residuals"] for k in chosen}
    o = first[chosen[0]][1]["operator"]
    mode = (_mode_text(o) if any(_norm(first[k][0]) == "batch" for k in chosen)
            else "no BatchNorm layer (no BatchNorm mode applies)")
    seeds = "; ".join(f"{show(k)}: seed {_seed(first[k][0])}, step {first[k][1]['step']}" for k in chosen)
    fig = ctx.figure(name, lambda p: plots.spectral_density(dens, top=top, residuals=resid, path=p),
                     f"Hessian spectral density {what}: {mode}, {o.get('num_examples')} training "
                     f"examples, one seed per curve ({seeds}). "
                     + plots.spectral_density_caption(dens, top=top, residuals=resid))
    if fig:
      blocks.append(fig)

  full = _full_classes(ctx)
  for norm in ("batch", "none", "layer"):
    chosen = sorted((k for k, (r, _) in first.items() if _norm(r) == norm and classes_of(r) == full),
                    key=lambda k: phase_of(first[k][0]) != "init")
    if chosen:
      phases = " and ".join(dict.fromkeys({"init": "at initialization", "trained": "after training"}[
          phase_of(first[k][0])] for k in chosen))
      spectra_figure(f"spectrum_{norm}", chosen, (f"with {NORM_NAMES[norm]}" if norm != "none" else
                                                  "without normalization") + f", {phases}")
  by_c = sorted((k for k, (r, _) in first.items() if phase_of(r) == "trained" and _norm(r) == "none"),
                key=lambda k: classes_of(first[k][0]) or 0)
  if len({classes_of(first[k][0]) for k in by_c}) > 1:
    spectra_figure("spectrum_classes", by_c, "after training without normalization on C classes",
                   show=lambda k: f"C = {classes_of(first[k][0])}")
  tops = {}
  for r, m in meas.values():
    if len(m["top"]) > 1:
      tops.setdefault(label_of(r), m["top"])
  if tops:
    fig = ctx.figure("top_eigenvalues", lambda p: plots.ranked_values(
        tops, ylabel="Hessian eigenvalue (Lanczos)", path=p),
        f"The top {max(len(v) for v in tops.values())} eigenvalues of each condition's Hessian (its first "
        f"seed; {_mode_text(op)}) in decreasing order: outliers stand above where the curve flattens.")
    if fig:
      blocks.append(fig)

  # About C outliers: the gap position among the top 2C, per run, trained without normalization.
  trained_none = [(r, m) for r, m in meas.values() if phase_of(r) == "trained" and _norm(r) == "none"
                  and m["classes"]]
  per_c: dict[int, list[int | None]] = {}
  for _, m in sorted(trained_none, key=lambda t: t[1]["classes"]):
    per_c.setdefault(m["classes"], []).append(m["gap"])
  if len(per_c) > 1:
    cs = [c for c, gs in per_c.items() for g in gs if g is not None]
    gs = [g for c, gs_ in per_c.items() for g in gs_ if g is not None]
    if cs:
      grid = np.array([min(cs), max(cs)], np.float64)
      panels = [{"x": np.asarray(cs, np.float64), "y": np.asarray(gs, np.float64),
                 "xlabel": "number of classes C", "ylabel": "largest-gap position in the top 2C",
                 "references": [(grid, grid, "i = C"), (grid, grid - 1, "i = C − 1")]}]
      fig = ctx.figure("gap_vs_classes", lambda p: plots.scatter_panels(panels, path=p),
                       "Position i of the largest ratio λ_i/λ_(i+1) among the top 2C eigenvalues against the "
                       "number of classes C, one point per run (trained, no normalization; runs at the same "
                       "position overlap); dashed: i = C, dotted: i = C − 1 (either is C outliers' "
                       "signature, Papyan 2019).")
      if fig:
        blocks.append(fig)
  profile = _gap_profile(trained_none)
  if profile:
    blocks.append(profile)
  for c, gaps in per_c.items():
    ok = sum(g is not None and c - 1 <= g <= c for g in gaps)
    findings.append(Finding(
        f"C = {c} (trained, no normalization, {seeds_text(len(gaps))}): the largest relative gap among the "
        f"top {2 * c} eigenvalues lies after eigenvalue "
        + ", ".join("–" if g is None else str(g) for g in gaps)
        + f" ({ok} of {len(gaps)} runs at C − 1 or C).",
        {"metric": "gap vs classes", "classes": c, "gaps": gaps, "within": ok, "n": len(gaps)}))

  # Ghorbani et al.: ratios over seeds, trained / init and none / batch, on all classes.
  def group(phase, norm):
    return [(r, m) for r, m in meas.values() if phase_of(r) == phase and _norm(r) == norm
            and classes_of(r) == full]

  comparisons = [("emerge", "none", ("trained", "none"), ("init", "none")),
                 ("emerge", "batch", ("trained", "batch"), ("init", "batch")),
                 ("batchnorm", "trained", ("trained", "none"), ("trained", "batch"))]
  for kind, tag, ga, gb in comparisons:
    a, b = group(*ga), group(*gb)
    for key, name in (("separation", "λ_1/λ_k"), ("lambda_max", "λ_max")):
      xa = np.asarray([m[key] for _, m in a if m[key] is not None], np.float64)
      xb = np.asarray([m[key] for _, m in b if m[key] is not None], np.float64)
      if not (len(xa) and len(xb)):
        continue
      iv = stats.ratio_interval(xa, xb)
      what = (f"With {NORM_NAMES[tag]}, training changed {name}" if kind == "emerge" else
              f"After training, {name} without / with BatchNorm was")
      findings.append(Finding(
          f"{what} {iv.estimate:.2f}x (geometric means {num(_geomean(xa))} vs {num(_geomean(xb))}; seeds "
          f"{num(xa.min())}–{num(xa.max())} vs {num(xb.min())}–{num(xb.max())}; "
          f"{wording.interval_text(iv, **wording.TIMES)}).",
          {"metric": f"{kind} {key}", "norm": tag, "ratio": iv.estimate, "interval": iv.as_dict()}))
  acc = {label: ctx.values(rs, "test/accuracy") for label, rs in ctx.groups().items()}
  acc = {k: v for k, v in acc.items() if len(v) and not k.startswith("init")}
  if acc:
    findings.append(Finding("Test accuracy of the trained runs (mean over seeds): " + "; ".join(
        f"{k} {pct(v.mean())} ({seeds_text(len(v))})" for k, v in acc.items()) + ".",
        {"test/accuracy": {k: float(v.mean()) for k, v in acc.items()}}))
  trained = {k: v for k, v in ctx.groups().items() if phase_of(v[0]) == "trained"}
  if trained:
    loss = ctx.study.runs[0].flat_config.get("loss.name", "cross_entropy")
    opt = style.optimizer_label(ctx.study.runs[0].flat_config)
    fig = ctx.figure("training_curves", lambda p: plots.training_curves(trained, loss_name=loss, path=p),
                     f"Training curves of the trained runs ({opt}): minibatch training (solid) and test "
                     f"(dashed) loss in {style.loss_unit(loss)} and accuracy in percent, "
                     "mean over seeds with the min–max band.")
    if fig:
      blocks.append(fig)
  return [Section("Results", blocks)], findings


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Sagun et al. (2017) and Papyan (2019, ICML) find a bulk near zero plus about C outliers, C the "
         "number of classes; Ghorbani et al. (2019, ICML) find that the outliers separate from the bulk "
         "during training and that BatchNorm suppresses them. The verdict table judges these claims; here "
         "are the numbers behind them."]
  items = []
  claims = {"emerge separation": ("more separated after training (Ghorbani et al.)", ">"),
            "emerge lambda_max": (None, ">"),
            "batchnorm separation": ("more separated without BatchNorm (Ghorbani et al.)", ">"),
            "batchnorm lambda_max": ("a larger λ_max without BatchNorm (Ghorbani et al.)", ">")}
  for f in findings:
    v = f.values
    claim = claims.get(v.get("metric"))
    if claim and claim[0]:
      j = wording.judge(stats.Interval.from_dict(v["interval"]), claim[1], **wording.TIMES)
      where = f" ({NORM_NAMES[v['norm']]})" if v["metric"].startswith("emerge") else ""
      items.append(f"{claim[0][0].upper() + claim[0][1:]}{where}: ratio {v['ratio']:.2f}x; this {j.text}.")
    if v.get("metric") == "gap vs classes":
      items.append(f"About C outliers, C = {v['classes']}: the largest top-{2 * v['classes']} gap at C − 1 "
                   f"or C in {v['within']} of {v['n']} runs.")
  if not items:
    items.append("The runs needed for the comparisons (trained with and without BatchNorm, at "
                 "initialization, or several class counts) have no curvature record: the comparison "
                 "cannot be made.")
  return out + [items]


def _limitations(ctx: Context) -> list[str]:
  ms = [m for r in ctx.study.runs if (m := _measurement(r))]
  out = []
  probes = {np.atleast_2d(m["nodes"]).shape[0] for m in ms if m["nodes"] is not None}
  if probes and probes <= {1}:
    out.append("Each density is one SLQ probe of one seed: a noisy picture of the bulk, whose resolution the "
               "figure states; the outlier criteria read the top-k Lanczos eigenvalues, not the density.")
  modes = {m["operator"].get("bn_mode") for m in ms}
  if "batch" in modes:
    out.append("The Hessians use BatchNorm in batch mode over fixed ghost batches: the loss training "
               "descends, not the network with running statistics used at test time.")
  ks = {len(m["top"]) for m in ms}
  if ks:
    out.append(f"The gap position among the top 2C needs k >= 2C eigenvalues (here k = "
               f"{'/'.join(map(str, sorted(ks)))}); a class count with 2C > k is not judged.")
  return out


TEMPLATE = Template(
    "hessian_spectrum", TITLE,
    "What does the Hessian's eigenvalue spectrum look like at initialization and after training, with and "
    "without BatchNorm, and how many eigenvalues stand above the bulk as the number of classes changes?",
    _applies, _results, _comparison, _limitations, _prepare, quantities=_quantities)
