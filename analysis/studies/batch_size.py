"""Report template of the batch_size study (experiments/configs/batch_size.py).

Keskar, Mudigere, Nocedal, Smelyanskiy & Tang 2017 ("On Large-Batch Training for Deep Learning:
Generalization Gap and Sharp Minima", ICLR, arXiv:1609.04836). Results per batch size over seeds:
accuracy, generalization gap, the training loss reached, lambda_max (and the trace), Keskar's
epsilon-sharpness when the runs logged it (`sharp/epsilon_sharpness`), the loss rise of a 1-D
filter-normalized scan (`land/rise_<split>`); the linear interpolation from the small-batch to the
large-batch solution of each seed (Keskar's Figure 3, from the sweep's post step,
`<sweep>/interpolation/`), with the loss rise beyond each end.

Per-run quantity for the criteria (`quantities`): `interp/rise_large_minus_small`, on the large-batch run
of each seed pair: the training-loss rise from t = 1 to the largest t minus the rise from t = 0 to the
smallest t. The comparison with Keskar et al. is made at a matched training loss or says that the large
batch under-fit (the criterion `matched_training_loss` of the config, its margin read from sweep.json).
"""

import math

import numpy as np

from analysis import criteria, landscapes, plots, runs, stats, style, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import Context, Template, is_solver_diagnostic, num, pct, standard_results

TITLE = "Batch size"
BATCH_KEY = "training.batch_size"
HIDDEN_KEYS = ("curvature.every_steps",)  # zipped with the batch size: not a condition of its own
RISE = "interp/rise_large_minus_small"
TRAIN_LOSS_MARGIN = 0.05  # nats, when sweep.json records no `matched_training_loss` criterion
FITS = 0.99  # eval_train accuracy from which a solution is called a minimum in a figure


def _batch(run: runs.Run) -> int | None:
  return run.flat_config.get(BATCH_KEY)


def _applies(ctx: Context) -> str | None:
  sizes = {_batch(r) for r in ctx.study.runs}
  if len(sizes) < 2:
    return f"`{BATCH_KEY}` takes one value across the runs"
  return None


def _by_batch(ctx: Context) -> dict[int, list[runs.Run]]:
  out: dict = {}
  for r in sorted(ctx.study.runs, key=lambda r: _batch(r) or 0):
    out.setdefault(_batch(r), []).append(r)
  return out


def _sharp_columns(ctx: Context) -> list[str]:
  """The sharpness values the runs logged (Keskar's epsilon-sharpness first), without their solvers'
  diagnostics (standard errors, restart spreads, times)."""
  cols = [c for c in ctx.table.columns if c.startswith("sharp/") and ctx.table[c].notna().any()
          and not is_solver_diagnostic(c)]
  eps = [c for c in cols if "eps" in c]
  return (eps or cols)[:3]


def _loss_name(ctx: Context) -> str:
  names = {r.flat_config.get("loss.name", "cross_entropy") for r in ctx.study.runs}
  return names.pop() if len(names) == 1 else "cross_entropy"


def _fits(rs: list[runs.Run]) -> bool:
  """Whether every run fits its training data (eval_train accuracy >= FITS): only then is its solution
  called a minimum."""
  accs = [(r.final_metrics() or {}).get("eval_train/accuracy") for r in rs]
  return bool(accs) and all(runs._is_number(a) and a >= FITS for a in accs)


def _margin(ctx: Context) -> float:
  """The `matched_training_loss` criterion's margin as recorded in sweep.json (else TRAIN_LOSS_MARGIN)."""
  for c in (ctx.study.index or {}).get("criteria") or []:
    if isinstance(c, dict) and c.get("id") == "matched_training_loss" and runs._is_number(c.get("margin")):
      return float(c["margin"])
  return TRAIN_LOSS_MARGIN


def _matched(ctx: Context) -> tuple[wording.Judgement, np.ndarray, np.ndarray] | None:
  """Whether the largest and smallest batch reached the same training loss (eval_train) within the
  margin: the judgement of large - small, and the two groups' values."""
  groups = _by_batch(ctx)
  if len(groups) < 2:
    return None
  x = ctx.values(groups[max(groups)], "eval_train/loss")
  y = ctx.values(groups[min(groups)], "eval_train/loss")
  if not (len(x) and len(y)):
    return None
  unit = style.loss_unit(_loss_name(ctx))
  return wording.judge(stats.difference_interval(x, y), "=", margin=_margin(ctx), unit=unit,
                       fmt=lambda v: f"{v:+.3g}"), x, y


def _pair_runs(name: str) -> tuple[str, str] | None:
  small, sep, large = name.partition("__")
  return (small, large) if sep else None


def _quantities(ctx: Context) -> dict[str, dict[str, float]]:
  """{large-batch run: {RISE: rise beyond the large-batch end - rise beyond the small-batch end}}."""
  out = {}
  for name, scan in landscapes.interpolations(ctx.study.root, []).items():
    pair, rises = _pair_runs(name), _end_rises(scan, "eval_train")
    if pair and rises is not None:
      out[pair[1]] = {RISE: rises[1] - rises[0]}
  return out


def _end_rises(scan: landscapes.Scan, split: str) -> tuple[float, float, float] | None:
  """(rise beyond the small-batch end, rise beyond the large-batch end, barrier) of the loss: the loss
  at the smallest t minus at t = 0, at the largest t minus at t = 1 (in the loss's unit)."""
  ts = scan.axes[0]
  loss = scan.values.get(split, {}).get("loss")
  i0, i1 = np.flatnonzero(np.isclose(ts, 0.0)), np.flatnonzero(np.isclose(ts, 1.0))
  if loss is None or not len(i0) or not len(i1) or ts[0] >= 0 or ts[-1] <= 1:
    return None
  barrier = ((scan.info.get("barriers") or {}).get(split) or {}).get("loss", {}).get("barrier", math.nan)
  return float(loss[0] - loss[i0[0]]), float(loss[-1] - loss[i1[0]]), float(barrier)


def _results(ctx: Context):
  ctx.study.override_keys[:] = [k for k in ctx.study.override_keys if k not in HIDDEN_KEYS]
  sharp = _sharp_columns(ctx)
  rise = [m for m in ("land/rise_eval_train",) if m in ctx.table.columns]
  bars = ("test/accuracy", "gap/accuracy", "curv/lambda_max", *sharp, *rise)
  blocks = standard_results(ctx, bar_metrics=bars, bar_key=BATCH_KEY)
  metrics = ["test/accuracy", "eval_train/accuracy", "eval_train/loss", "gap/accuracy", "gap/loss",
             "curv/lambda_max", "curv/trace", *sharp, "land/rise_eval_train", "land/rise_test"]
  metrics = [m for m in metrics if m in ctx.table.columns and ctx.table[m].notna().any()]
  unit = style.loss_unit(_loss_name(ctx))
  if metrics:
    blocks.insert(0, TableBlock("batch_size", tables.mean_std_table(
        ctx.table, [BATCH_KEY], metrics,
        names={"land/rise_eval_train": "rise, train", "land/rise_test": "rise, test",
               "sharp/epsilon_sharpness": "ε-sharpness"}, caption=(
            f"Per batch size, mean ± standard deviation over seeds: accuracies in percent, losses in {unit}, "
            "gaps train minus test (train: the fixed eval_train subset, whose loss is the one the "
            "`matched_training_loss` criterion compares); λ_max and trace of the training-loss Hessian at "
            "the end (fixed probe set); ε-sharpness: Keskar et al.'s Metric 2.1, 100 (max over the box of "
            "the loss increase) / (1 + loss), a lower bound from random restarts of projected ascent; "
            "rise: the mean loss at ±1 along a filter-normalized random direction minus the loss at the "
            f"solution ({unit})."))))
  curves = landscapes.interpolations(ctx.study.root, ctx.problems)
  if curves:
    first = next(iter(curves.values()))
    ts = first.axes[0]
    n = {s: (first.info.get("splits") or {}).get(s, {}).get("num_examples") for s in first.values}
    for metric in ("loss", "accuracy"):
      lines = {}
      for scan in curves.values():
        if len(scan.axes[0]) != len(ts) or not np.allclose(scan.axes[0], ts):
          continue
        seed = scan.info.get("seed_a")
        for split in ("eval_train", "test"):
          if split in scan.values:
            lines[f"seed {seed}, {'train' if split == 'eval_train' else split}"] = scan.values[split][metric]
      a, b = first.info.get("batch_size_a"), first.info.get("batch_size_b")
      xlabel = f"α: (1 − α) θ(batch {a}) + α θ(batch {b})"
      fig = ctx.figure(f"interpolation_{metric}", lambda p, lines=lines, metric=metric, xlabel=xlabel: (
          plots.interpolation_curves(ts, lines, metric=metric, xlabel=xlabel, loss_name=_loss_name(ctx),
                                     path=p)),
          f"{metric.capitalize()} along the line from the batch-{a} solution (α = 0) to the batch-{b} "
          f"solution (α = 1) of each seed, extended to α in [{ts[0]:g}, {ts[-1]:g}] (Keskar et al. 2017, "
          f"Fig. 3); train: {n.get('eval_train')} eval_train examples, test: {n.get('test')} test "
          f"examples" + (f"; loss in {unit}" if metric == "loss" else "; accuracy in percent") + ".")
      if fig:
        blocks.insert(2 if metric == "loss" else 3, fig)
  one_d, shown = {}, []
  for b, rs in _by_batch(ctx).items():
    run = next((r for r in rs if (s := landscapes.latest_scan(r, "1d")) is not None
                and "eval_train" in s.values), None)
    if run is not None:
      scan = landscapes.latest_scan(run, "1d")
      one_d[f"batch {b}"] = (scan.axes[0], scan.values["eval_train"]["loss"], scan)
      shown.append(run)
  if one_d:
    alphas = next(iter(one_d.values()))[0]
    at_minimum = _fits(shown)
    if all(len(v[0]) == len(alphas) for v in one_d.values()):
      s0 = next(iter(one_d.values()))[2]
      fig = ctx.figure("landscape_1d", lambda p: plots.loss_curve_1d(
          alphas, {k: v[1] for k, v in one_d.items()}, xlabel="step along a filter-normalized direction α",
          loss_name=_loss_name(ctx), at_minimum=at_minimum, path=p), (
          f"Training loss ({unit}; eval_train, "
          f"{(s0.info.get('splits') or {}).get('eval_train', {}).get('num_examples')} examples) along one "
          "random filter-normalized direction through each batch size's final parameters (one seed each; "
          + ("every run shown fits its training data, eval_train accuracy ≥ "
             f"{100 * FITS:g}%, so the centre is called a minimum" if at_minimum else
             f"not every run shown reaches {100 * FITS:g}% eval_train accuracy, so the centre is the trained "
             "parameters, not a minimum")
          + "; Li et al. 2018 find that with filter normalization large batches give visually sharper "
          "minima, though not dramatically so, with higher test error)."))
      if fig:
        blocks.append(fig)
  return [Section("Results", blocks)], _findings(ctx, curves)


def _findings(ctx: Context, curves: dict) -> list[Finding]:
  out = []
  groups = _by_batch(ctx)
  for b, rs in groups.items():
    a = ctx.values(rs, "test/accuracy")
    if not len(a):
      continue
    iv = stats.mean_interval(a)
    g = ctx.values(rs, "gap/accuracy")
    lam = ctx.values(rs, "curv/lambda_max")
    text = f"Batch {b}: test accuracy {pct(iv.estimate)} ({wording.interval_text(iv, fmt=pct)})"
    if len(g):
      text += f", gap {100 * g.mean():.2f} points"
    if len(lam):
      text += f", λ_max {num(lam.mean())}"
    out.append(Finding(text + ".", {"batch_size": b, "test/accuracy mean": iv.estimate, "n": iv.n[0],
                                    "interval": iv.as_dict()}))
  if len(groups) >= 2:
    small, large = min(groups), max(groups)
    for metric, name in (("test/accuracy", "test accuracy"), ("gap/accuracy", "the accuracy gap")):
      x, y = ctx.values(groups[large], metric), ctx.values(groups[small], metric)
      if len(x) and len(y):
        iv = stats.difference_interval(x, y)
        out.append(Finding(
            f"Batch {large} vs {small}: {name} {100 * iv.estimate:+.2f} points "
            f"({wording.interval_text(iv, **wording.POINTS)}).",
            {"metric": metric, "large": large, "small": small, "difference": iv.estimate,
             "ci": (iv.lo, iv.hi), "interval": iv.as_dict()}))
    for metric in ("curv/lambda_max", "curv/trace", *_sharp_columns(ctx), "land/rise_eval_train"):
      x, y = ctx.values(groups[large], metric), ctx.values(groups[small], metric)
      if len(x) and len(y) and y.mean() != 0:
        iv = stats.ratio_interval(x, y)
        out.append(Finding(
            f"Batch {large} vs {small}: {metric} {num(x.mean())} vs {num(y.mean())}, {iv.estimate:.2f}x "
            f"(ratio of geometric means; {wording.interval_text(iv, **wording.TIMES)}).",
            {"metric": metric, "large": large, "small": small, "ratio": iv.estimate, "ci": (iv.lo, iv.hi),
             "interval": iv.as_dict(), "mean large": float(x.mean()), "mean small": float(y.mean())}))
  matched = _matched(ctx)
  if matched is not None:
    j, x, y = matched
    unit = style.loss_unit(_loss_name(ctx))
    out.append(Finding(
        f"Training loss (eval_train) at the end: {x.mean():.3g} {unit} with batch {max(groups)} vs "
        f"{y.mean():.3g} with batch {min(groups)}; equal within ±{_margin(ctx):g} {unit}: this {j.text}.",
        {"metric": "eval_train/loss", "large": max(groups), "small": min(groups), "verdict": j.verdict,
         "mean large": float(x.mean()), "mean small": float(y.mean())}))
  unit = style.loss_unit(_loss_name(ctx))
  for split in ("eval_train", "test"):
    rises = [r for s in curves.values() if (r := _end_rises(s, split)) is not None]
    if rises:
      before, after, barrier = (np.asarray(v) for v in zip(*rises))
      first = next(iter(curves.values()))
      t0, t1 = first.axes[0][0], first.axes[0][-1]
      where = "training" if split == "eval_train" else "test"
      iv = stats.mean_interval(after - before)  # paired by seed
      finite = barrier[np.isfinite(barrier)]
      barrier_mean = float(finite.mean()) if len(finite) else math.nan
      barrier_text = f"; barrier between them {barrier_mean:.3g} {unit}" if len(finite) else ""
      out.append(Finding(
          f"Interpolation ({len(rises)} seed pair(s)), {where} loss: it rises by {before.mean():.3g} {unit} "
          f"from the small-batch solution to α = {t0:g} and by {after.mean():.3g} {unit} from the "
          f"large-batch solution to α = {t1:g} (large minus small side, paired: "
          f"{wording.interval_text(iv, unit, lambda v: f'{v:+.3g}')}){barrier_text}.",
          {"split": split, "rise small side": float(before.mean()), "rise large side": float(after.mean()),
           "barrier": barrier_mean, "pairs": len(rises), "interval": iv.as_dict()}))
  return out


def _find(findings, **match) -> dict | None:
  for f in findings:
    if all(f.values.get(k) == v for k, v in match.items()):
      return f.values
  return None


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Keskar et al. (2017, ICLR, \"On large-batch training for deep learning: generalization gap and "
         "sharp minima\") find that at the same learning rate and epochs, large batches (10% of the training "
         "set) reach similar training accuracy but lower test accuracy than small ones (256), and converge "
         "to sharper minima: larger ε-sharpness and Hessian eigenvalues; along the line from the small- to "
         "the large-batch solution the loss rises much more steeply beyond the large-batch end (their "
         "Figure 3)."]
  items = []
  groups = _by_batch(ctx)
  matched = _matched(ctx)
  unit = style.loss_unit(_loss_name(ctx))
  if matched is not None:
    j, x, y = matched
    small, large = min(groups), max(groups)
    premise = (f"Training loss (eval_train): {x.mean():.3g} {unit} with batch {large} vs {y.mean():.3g} with "
               f"batch {small}; equal within ±{_margin(ctx):g} {unit} (Keskar et al.'s runs reach similar "
               f"training accuracy): this {j.text}. ")
    if j.verdict == "no difference":
      premise += "The comparisons below are at a matched training loss, as Keskar et al.'s."
      if (x > 0).all() and (y > 0).all():
        fold = stats.ratio_interval(x, y).estimate
        if fold >= 2 or fold <= 0.5:
          premise += (f" Matched within the margin, the two losses still differ {fold:.3g}-fold (ratio of "
                      "geometric means, large over small batch): near zero loss the Gauss-Newton part of "
                      "the cross-entropy Hessian scales with p(1 − p) of the predicted probabilities, which "
                      "shrinks with the loss, so curvature ratios of that order can follow from the loss "
                      "level alone.")
    elif j.verdict == "contradicts" and x.mean() > y.mean():
      premise += ("The large batch under-fit at this epoch budget: the comparisons below are between a "
                  "solution and a less-trained network, not between two minima, and do not test Keskar et "
                  "al.'s claim as stated.")
    elif j.verdict == "contradicts":
      premise += ("The small batch ended at the higher training loss: the comparisons below are not at a "
                  "matched training loss.")
    else:
      premise += "The comparisons below are not shown to be at a matched training loss."
    items.append(premise)
  gap = _find(findings, metric="gap/accuracy")
  if gap:
    wider = wording.judge(stats.Interval.from_dict(gap["interval"]), ">", **wording.POINTS)
    items.append(f"Accuracy gap (train minus test), batch {gap['large']} minus {gap['small']}: "
                 f"{100 * gap['difference']:+.2f} points; larger with the large batch, as Keskar et al. "
                 f"report: this {wider.text}.")
  if len(groups) >= 2:
    small, large = min(groups), max(groups)
    a, b = ctx.values(groups[large], "gap/loss"), ctx.values(groups[small], "gap/loss")
    if len(a) >= 2 and len(b) >= 2:
      iv = stats.difference_interval(a, b)
      j = wording.judge(iv, ">", unit=unit, fmt=lambda x: f"{x:+.3g}")
      items.append(f"Loss gap (test minus training loss), batch {large} minus {small}: {iv.estimate:+.3g} "
                   f"{unit} ({a.mean():.3g} against {b.mean():.3g}); larger with the large batch, Keskar et "
                   f"al.'s direction in loss terms: this {j.text}.")
  v = _find(findings, metric="test/accuracy")
  if v:
    j = wording.judge(stats.Interval.from_dict(v["interval"]), "<", **wording.POINTS)
    items.append(f"Test accuracy, batch {v['large']} minus {v['small']}: {100 * v['difference']:+.2f} "
                 f"points; lower with the large batch, as Keskar et al. report: this {j.text}.")
  names = {"sharp/epsilon_sharpness": "ε-sharpness (Keskar's Metric 2.1)"}
  for metric, name in (("curv/lambda_max", "λ_max"), *((c, names.get(c, c)) for c in _sharp_columns(ctx))):
    v = _find(findings, metric=metric)
    if v:
      j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", **wording.TIMES)
      items.append(f"{name}: {v['ratio']:.2f}x with batch {v['large']} vs {v['small']}; sharper with the "
                   f"large batch, as Keskar et al. report: this {j.text}.")
  if not _sharp_columns(ctx):
    items.append("Keskar et al.'s ε-sharpness was not measured in these runs (no `sharp/` metrics); λ_max "
                 "and the trace stand in for it.")
  v = _find(findings, split="eval_train")
  if v:
    j = wording.judge(stats.Interval.from_dict(v["interval"]), ">", unit=unit, fmt=lambda x: f"{x:+.3g}")
    items.append(f"Interpolation, training loss: {v['rise large side']:.3g} {unit} beyond the large-batch "
                 f"end vs {v['rise small side']:.3g} beyond the small-batch end; steeper on the large-batch "
                 f"side, as in Keskar et al.'s Figure 3: this {j.text}.")
  if not items:
    items.append("No pair of batch sizes with readable results: no comparison is made.")
  return out + [items] + _measured_reasons(ctx) + [
      "Caveat: Dinh et al. (2017) show that sharpness measures like these change under reparameterizations "
      "that leave the function unchanged, and Li et al. (2018) that the small-to-large interpolation's "
      "picture flips with weight decay (the weights' scale changes), while filter-normalized plots keep "
      "large batches (mildly) sharper: sharper here is a statement about these measures, not about "
      "generalization as such."]


def _measured_reasons(ctx: Context) -> list[str]:
  """For each pre-registered criterion the verdict table leaves undecided (its interval, at the table's
  level, reaches no effect, or for the matched loss the margin): the measured effect against the
  seed-to-seed spread, and the seeds that spread would need (normal approximation)."""
  groups = _by_batch(ctx)
  if len(groups) < 2:
    return []
  level = criteria.test_level(ctx.study)
  small, large = min(groups), max(groups)
  out = []
  for metric, name, compare, expected in (("sharp/epsilon_sharpness", "ε-sharpness", "ratio", ">"),
                                          ("curv/lambda_max", "λ_max", "ratio", ">"),
                                          ("test/accuracy", "test accuracy", "difference", "<")):
    x, y = ctx.values(groups[large], metric), ctx.values(groups[small], metric)
    got = stats.compared(x, y, compare, level)
    if got is None:
      continue
    iv, effect, sa, sb = got
    if not (iv.finite and iv.lo <= iv.null <= iv.hi):
      continue
    null = "1" if compare == "ratio" else "0"
    why = (wording.why_undecided(effect, sa, sb, len(x), len(y), level, null, "per batch size")
           if effect and (effect > 0) == (expected == ">") else
           wording.AGAINST)
    if compare == "ratio":
      out.append(f"Measured reason, {name} (batch {large} / {small}): the ratio {iv.estimate:.2f}x is a "
                 f"log-difference of {effect:+.2f} against a seed-to-seed standard deviation of the log of "
                 f"{sa:.2f} (batch {large}) and {sb:.2f} (batch {small}) over {len(x)} vs {len(y)} seeds: "
                 f"the verdict's {wording.interval_text(iv, **wording.TIMES)} contains 1; {why}.")
    else:
      out.append(f"Measured reason, {name} (batch {large} minus {small}): {100 * effect:+.2f} points against "
                 f"a seed-to-seed standard deviation of {100 * sa:.2f} points (batch {large}) and "
                 f"{100 * sb:.2f} (batch {small}) over {len(x)} vs {len(y)} seeds: the verdict's "
                 f"{wording.interval_text(iv, **wording.POINTS)} contains 0; {why}.")
  x, y = ctx.values(groups[large], "eval_train/loss"), ctx.values(groups[small], "eval_train/loss")
  margin = _margin(ctx)
  unit = style.loss_unit(_loss_name(ctx))
  if len(x) >= 2 and len(y) >= 2:
    iv = stats.difference_interval(x, y, level=level)
    if iv.finite and not (-margin <= iv.lo and iv.hi <= margin):
      sa, sb = float(x.std(ddof=1)), float(y.std(ddof=1))
      d = float(x.mean() - y.mean())
      if abs(d) >= margin:
        acc_large = ctx.values(groups[large], "eval_train/accuracy")
        acc_small = ctx.values(groups[small], "eval_train/accuracy")
        why = (f"the difference itself is outside ±{margin:g} {unit}: batch {large if d > 0 else small} "
               "ended less fitted" + (f" (training accuracy {pct(acc_large.mean())} with batch {large}, "
                                      f"{pct(acc_small.mean())} with batch {small})"
                                      if len(acc_large) and len(acc_small) else ""))
      else:
        why = wording.why_undecided(margin - abs(d), sa, sb, len(x), len(y), level, "the margin's edge",
                        "per batch size")
      out.append(f"Measured reason, matched training loss: batch {large} minus {small}, {d:+.3g} {unit} "
                 f"({x.mean():.3g} vs {y.mean():.3g}; seed-to-seed standard deviation {sa:.3g} and "
                 f"{sb:.3g}, "
                 f"{len(x)} vs {len(y)} seeds): the verdict's {100 * level:.4g}% Welch interval "
                 f"{iv.lo:+.3g} to {iv.hi:+.3g} {unit} is not inside ±{margin:g} {unit}; {why}.")
  rises = np.array([q[RISE] for q in _quantities(ctx).values() if RISE in q], float)
  rises = rises[np.isfinite(rises)]
  if len(rises) >= 2:
    iv = stats.mean_interval(rises, level=level)
    if iv.finite and iv.lo <= 0 <= iv.hi:
      s = float(rises.std(ddof=1))
      m = float(rises.mean())
      why = (wording.why_undecided(m, s, None, len(rises), len(rises), level, "0", "(pairs)") if m > 0 else
             wording.AGAINST)
      out.append(f"Measured reason, interpolation: the rise beyond the large-batch end minus beyond the "
                 f"small-batch end is {m:+.3g} {unit} on average, per seed pair "
                 f"{', '.join(f'{v:+.3g}' for v in rises)} (standard deviation {s:.3g}): the verdict's "
                 f"{wording.interval_text(iv, unit, lambda v: f'{v:+.3g}')} contains 0; {why}.")
  return out


def _limitations(ctx: Context) -> list[str]:
  out = []
  fraction = []
  for r in ctx.study.runs:
    n = (r.summary or {}).get("num_train")
    b = _batch(r)
    if n and b:
      fraction.append(b / n)
  if fraction and max(fraction) < 0.1:
    out.append(f"The largest batch is {100 * max(fraction):.1f}% of the training set, below Keskar et al.'s "
               "10%.")
  matched = _matched(ctx)
  if matched is not None and matched[0].verdict != "no difference":
    out.append(f"The batch sizes are not shown to reach the same training loss (within ±{_margin(ctx):g} "
               f"{style.loss_unit(_loss_name(ctx))}): sharpness and test accuracy are compared between runs "
               "at different stages of fitting, which confounds the batch size with under-fitting.")
  if not landscapes.interpolations(ctx.study.root, []):
    out.append("No interpolation under `interpolation/`: the sweep's post step did not run (or failed; see "
               "`post_sweep` in sweep.json).")
  return out


TEMPLATE = Template(
    "batch_size", TITLE,
    "Does large-batch training at the same learning rate and epochs find sharper minima that "
    "generalize worse (Keskar et al. 2017)? Accuracy, generalization gap, λ_max and sharpness per batch "
    "size over seeds, and the loss along the line from the small-batch to the large-batch solution.",
    _applies, _results, _comparison, _limitations, quantities=_quantities)
