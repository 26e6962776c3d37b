"""Report template of the optimizer study (experiments/configs/optimizers.py).

Full-batch GD, minibatch SGD, heavy-ball momentum and Adam at a matched number of steps: final lambda_max
(for Adam also the preconditioned lambda_max, `curv/precond_lambda_max`), each relative to its stability
threshold (2/eta, 3.8/eta, 38/eta), training and test accuracy and the generalization gap, GD against
SGD and Adam against SGD with Welch intervals over seeds. Compared with Keskar et al. 2017 and
Jastrzebski et al. 2017 (noise finds flatter minima), Cohen et al. 2021, 2022 (edge of stability) and
Wilson et al. 2017 (adaptive methods generalize worse).
"""

import dataclasses
import math

import numpy as np
import pandas as pd

from analysis import criteria, plots, runs, stats, style, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import (
  ADAPTIVE,
  Context,
  Template,
  curvature_mode_text,
  generic_findings,
  group_runs,
  lambda_max_history,
  missing_text,
  num,
  pct,
  threshold_of,
)
from analysis.studies.edge_of_stability import REACH, WINDOW, run_quantities

TITLE = "Optimizers"
KEY = "optimizer"
PRECOND = "curv/precond_lambda_max"
# the criteria's groups (experiments/configs/optimizers.py GROUPS): config keys every run of a group matches
GROUPS = {"GD": {"optimizer.name": "sgd", "training.full_batch": True},
          "SGD": {"optimizer.name": "sgd", "training.full_batch": False},
          "Adam": {"optimizer.name": "adam"}}
# (criterion id, a, b, metric, compare, expected, name): the comparisons of the config's criteria, in their
# direction; their groups are the recorded criterion's (`_pairs`), GROUPS where a sweep recorded none
COMPARISONS = (("gd_sharper", "GD", "SGD", "curv/lambda_max", "ratio", ">",
                "GD ends sharper than SGD (Keskar et al. 2017)"),
               ("sgd_more_accurate_than_gd", "SGD", "GD", "test/accuracy", "difference", ">",
                "SGD more accurate than GD (Keskar et al. 2017)"),
               ("adam_less_accurate", "SGD", "Adam", "test/accuracy", "difference", ">",
                "Adam less accurate than SGD (Wilson et al. 2017)"))


def optimizer_label(run: runs.Run) -> str:
  """`GD (full batch)`, `SGD (batch 128)`, `SGD-momentum 0.9 (batch 128)`, `Adam (batch 128)` from the run's
  config (`style.optimizer_label`)."""
  return style.optimizer_label(run.flat_config)


def _labeler(ctx: Context):
  """`optimizer_label`, with the learning rate appended where one optimizer ran at several."""
  lrs: dict[str, set] = {}
  for r in ctx.study.runs:
    lrs.setdefault(optimizer_label(r), set()).add(r.flat_config.get("schedule.lr"))
  return lambda r: (optimizer_label(r) if len(lrs[optimizer_label(r)]) == 1
                    else f"{optimizer_label(r)}, η={r.flat_config.get('schedule.lr'):g}")


def _prepare(ctx: Context) -> Context:
  """The conditions are named by `KEY` alone (in the sweep's order)."""
  return ctx.with_key(KEY, _labeler(ctx), label=True)


def _applies(ctx: Context) -> str | None:
  labels = {optimizer_label(r) for r in ctx.study.runs}
  if len(labels) < 2:
    return f"the runs use one optimizer ({', '.join(sorted(labels))})"
  return None


def _finished(rs: list[runs.Run]) -> list[runs.Run]:
  return [r for r in rs if r.status in ("done", "early_stopped")]


def _final(ctx: Context, rs: list[runs.Run], metric: str) -> np.ndarray:
  return ctx.values(_finished(rs), metric)


def _in_group(run: runs.Run, group: dict) -> bool:
  return all(run.overrides.get(k, run.flat_config.get(k)) == v for k, v in group.items())


def _group(ctx: Context, name: str) -> list[runs.Run]:
  return [r for r in ctx.study.runs if _in_group(r, GROUPS[name])]


@dataclasses.dataclass(frozen=True)
class _Pair:
  """The two groups of one comparison: runs, labels, and what `tune` chose for each ({} untuned)."""
  a: list
  b: list
  label_a: str
  label_b: str
  tuned_a: dict
  tuned_b: dict


def _pairs(ctx: Context) -> dict[str, _Pair]:
  """criterion id -> its two groups, for every comparison of COMPARISONS: the recorded criterion's groups
  (a step size chosen by its `tune` named in the labels), GROUPS where the sweep recorded no criterion."""
  found = {c.id: c for c in criteria.recorded(ctx.study)[0]}
  out = {}
  for cid, a, b, *_ in COMPARISONS:
    c = found.get(cid)
    if c is None:
      out[cid] = _Pair(_group(ctx, a), _group(ctx, b), a, b, {}, {})
      continue
    (ra, ta), (rb, tb) = (criteria.group_of(c, ctx.study.runs, w, ctx.table) for w in ("a", "b"))
    out[cid] = _Pair(ra, rb, _pair_label(a, ra, ta), _pair_label(b, rb, tb), ta, tb)
  return out


def _pair_label(name: str, rs: list[runs.Run], tuned: dict) -> str:
  """`SGD (η = 0.4, tuned)`: the group's name with its one step size, else the name alone."""
  lrs = {r.flat_config.get("schedule.lr") for r in rs}
  return f"{name} (η = {lrs.pop():g}{', tuned' if tuned else ''})" if len(lrs) == 1 else name


def _bn_text(ctx: Context) -> str:
  """How the Hessian treated BatchNorm (`curvature_mode_text`; in batch mode each optimizer's own batch is
  the ghost batch, GD's its chunks), or that the network has none."""
  mode = curvature_mode_text(ctx.study.runs)
  if not mode:
    return "a network without BatchNorm"
  if "batch" not in {r.flat_config.get("curvature.bn_mode", "eval") for r in ctx.study.runs}:
    return mode
  chunks = sorted({r.flat_config.get("curvature.chunk_size") for r in ctx.study.runs} - {None})
  return (f"BatchNorm with batch statistics over ghost batches of {', '.join(map(str, chunks))} (each "
          "optimizer's own batch; GD: its chunks)")


def _results(ctx: Context):
  label_of = _labeler(ctx)
  groups = group_runs(ctx, label_of)
  kinds: dict[str, int] = {}  # each optimizer's step sizes next to each other, in increasing order
  for rs in groups.values():
    kinds.setdefault(optimizer_label(rs[0]), len(kinds))
  groups = dict(sorted(groups.items(), key=lambda kv: (kinds[optimizer_label(kv[1][0])],
                                                       kv[1][0].flat_config.get("schedule.lr") or 0.0)))
  order = list(groups)
  momentum = any(r.flat_config.get("optimizer.name") == "momentum" for r in ctx.study.runs)
  rank = {label: i for i, label in enumerate(order)}
  table = ctx.table.assign(_rank=ctx.table[KEY].map(rank)).sort_values("_rank", kind="stable")
  blocks, findings = [], generic_findings(ctx)
  metrics = [m for m in ("test/accuracy", "valid/accuracy", "eval_train/accuracy", "gap/accuracy",
                         "curv/lambda_max", PRECOND)
             if m in ctx.table.columns and ctx.table[m].notna().any()]
  if metrics:
    blocks.append(TableBlock("summary", tables.mean_std_table(table, [KEY], metrics, caption=(
        "At the end of training, per optimizer: mean ± sample standard deviation over its seeds; accuracies "
        "in percent (validation: the split the tuned comparison chooses step sizes on), gap = train minus "
        "test accuracy (train: the whole training subset); λ_max: top "
        f"eigenvalue of the training-loss Hessian on the whole training set ({_bn_text(ctx)}); for Adam also "
        "the preconditioned λ_max of P^-1/2 H P^-1/2; bold: the best mean among finished conditions."))))
  rows = []
  for label, rs in groups.items():
    thr, tname = threshold_of(rs[0])
    adaptive = rs[0].flat_config.get("optimizer.name") in ADAPTIVE
    raw, pre = _final(ctx, rs, "curv/lambda_max"), _final(ctx, rs, PRECOND)
    compared = pre if adaptive else raw
    lr = rs[0].flat_config.get("schedule.lr", math.nan)
    qs = [run_quantities(r) for r in rs]
    prefix = "eos/precond_" if adaptive else "eos/"
    reached = [q[prefix + "reached"] for q in qs if prefix + "reached" in q]
    above = [q[prefix + "started_above"] for q in qs if prefix + "started_above" in q]
    end = float(compared.mean() / thr) if len(compared) and thr else math.nan
    rows.append({"optimizer": label, "η": lr, "threshold": f"{tname} = {num(thr)}" if thr else "–",
                 "compared / threshold (end)": end,
                 "started above": f"{int(sum(above))} of {len(above)}" if above else "–",
                 f"reached {REACH:g} from below": (f"{int(sum(reached))} of {len(reached)}" if reached
                                                    else "–"),
                 "seeds": len(rs)})
    if not len(raw):
      continue
    iv = stats.mean_interval(raw)
    text = (f"{label} (η = {lr:g}): final λ_max {num(iv.estimate)} "
            f"({wording.interval_text(iv, fmt=num)})")
    values = {"optimizer": label, "metric": "curv/lambda_max", "mean": iv.estimate, "n": len(raw),
              "interval": iv.as_dict()}
    if thr and len(compared):
      what = "preconditioned λ_max" if adaptive else "λ_max"
      text += f"; its {what} ended at {compared.mean() / thr:.2f} of {tname} = {num(thr)} (mean over seeds)"
      values |= {"threshold": thr, "ratio to threshold": float(compared.mean() / thr), "adaptive": adaptive}
      if reached:
        text += (f"; it reached {REACH:g} of the threshold after a measurement below it in "
                 f"{int(sum(reached))} of {len(reached)} runs")
        if sum(above):
          text += (f" ({int(sum(above))} started above the threshold at initialization: a fall from there is "
                   "a catapult, not progressive sharpening, and only a later crossing from below counts)")
        values |= {"reached": int(sum(reached)), "runs": len(reached), "started above": int(sum(above))}
    findings.append(Finding(text + ".", values))
  if rows:
    blocks.append(TableBlock("sharpness", tables.frame_table(pd.DataFrame(rows), caption=(
        "Sharpness against each optimizer's stability threshold (2/η for SGD"
        + (", (2 + 2β)/η for heavy-ball momentum" if momentum else "")
        + ", 38/η for Adam's preconditioned sharpness): the compared quantity at the end over the "
        f"threshold (mean over seeds); runs whose first measurement was at or above it; runs in which it "
        f"reached {REACH:g} of the threshold after a measurement below it (a crossing from below, never the "
        "initialization). The threshold is a full-batch notion: minibatch runs usually stay below it."),
        scale_accuracy=False)))
  if not any(len(_final(ctx, rs, "curv/lambda_max")) for rs in groups.values()):
    blocks.append(missing_text("final sharpness", "`curv/lambda_max` in metrics.jsonl (config "
                               "`curvature.at_end`)"))
  level = criteria.test_level(ctx.study)  # the verdict table's level, so that text and table agree
  pairs = _pairs(ctx)
  for cid, _, _, metric, compare, expected, name in COMPARISONS:
    pair = pairs[cid]
    a, b = pair.label_a, pair.label_b
    x, y = _final(ctx, pair.a, metric), _final(ctx, pair.b, metric)
    if not (len(x) and len(y)):
      continue
    if compare == "ratio":
      iv = stats.ratio_interval(x, y, level=level)
      j = wording.judge(iv, expected, **wording.TIMES)
      text = f"{a} / {b}, final λ_max: {iv.estimate:.2f}x (ratio of geometric means); this {j.text}."
    else:
      iv = stats.difference_interval(x, y, level=level)
      j = wording.judge(iv, expected, **wording.POINTS)
      text = (f"{a} minus {b}, test accuracy: {100 * iv.estimate:+.2f} points ({pct(x.mean())} vs "
              f"{pct(y.mean())}); this {j.text}.")
    findings.append(Finding(f"{name}: {text}", {"a": a, "b": b, "metric": metric, "estimate": iv.estimate,
                                                 "verdict": j.verdict, "interval": iv.as_dict()}))
  seeds = {}
  for label, rs in groups.items():
    curves = [lambda_max_history(r) for r in rs if r.flat_config.get("optimizer.name") not in ADAPTIVE]
    curves += [r.curve(PRECOND) for r in rs if r.flat_config.get("optimizer.name") in ADAPTIVE]
    curves = [c for c in curves if len(c[0]) > 1]
    if curves:
      seeds[label] = curves
  if seeds:
    thr = {k: threshold_of(groups[k][0])[0] for k in seeds}
    fig = ctx.figure("lambda_max", lambda p: plots.lambda_max_curves(
        seeds=seeds, thresholds=thr, threshold_label="threshold", normalized=True, path=p),
        "Sharpness over training divided by each optimizer's stability threshold (λ_max for GD, SGD"
        + (" and momentum" if momentum else "") + "; Adam: the preconditioned sharpness against 38/η; log "
        "axis); per optimizer the mean over seeds with "
        f"markers at every measurement, {plots.interval_text('minmax')} as a band and each seed as a thin "
        f"line; dashed: the threshold. Hessian: {_bn_text(ctx)}."
        + (f" Drawn: {', '.join(seeds)}; the other runs measured λ_max at the end only (the summary table) "
           "or not at all (the tuning runs)." if len(seeds) < len(groups) else ""))
    if fig:
      blocks.append(fig)
  raw = {}
  for label, rs in groups.items():
    curves = [r.curve("curv/lambda_max") for r in rs]
    curves = [c for c in curves if len(c[0]) > 1]
    if curves:
      raw[label] = curves
  if len(raw) > 1:  # one curve is the figure above, in other units
    fig = ctx.figure("lambda_max_raw", lambda p: plots.lambda_max_curves(seeds=raw, path=p),
                     "Raw λ_max of the training-loss Hessian over training for every optimizer, Adam "
                     f"included (mean over seeds with markers, {plots.interval_text('minmax')} as a band, "
                     "seeds as thin lines); the thresholds are in the figure above.")
    if fig:
      blocks.append(fig)
  dots = [m for m in ("test/accuracy", "gap/accuracy", "curv/lambda_max")
          if m in ctx.table.columns and ctx.table[m].notna().any()]
  if dots and len(groups) > 1:
    loss = str(ctx.study.runs[0].flat_config.get("loss.name", "cross_entropy"))
    fig = ctx.figure("by_optimizer", lambda p: plots.ablation_bars(
        table, KEY, dots, order=order, error="t", loss_name=loss, path=p),
        "Per optimizer (each at its step sizes in increasing order): the mean over seeds (diamond) with its "
        f"{plots.interval_text('t')} as whiskers, and each seed as a grey point; the value axes are fitted "
        f"to the data. {plots.LOG_PANELS}"
        + (" λ_max: the runs at the base step sizes (the tuning runs measure accuracy only)."
           if "curv/lambda_max" in dots and ctx.table["curv/lambda_max"].isna().any() else ""))
    if fig:
      blocks.append(fig)
  # the conditions the verdict table compares (with a tuning grid, the others would crowd the figure)
  compared = {label_of(r) for pair in pairs.values() for r in pair.a + pair.b}
  shown = {k: rs for k, rs in groups.items() if k in compared} if compared else groups
  full = {label: bool(rs[0].flat_config.get("training.full_batch")) for label, rs in shown.items()}
  loss = str(ctx.study.runs[0].flat_config.get("loss.name", "cross_entropy"))
  fig = ctx.figure("training_curves", lambda p: plots.training_curves(
      shown, splits=("train", "eval_train", "test"), loss_name=loss, full_batch=full, path=p),
      "Training curves per optimizer: the training-step value (solid; GD: the whole training set, others: "
      f"their minibatch), the whole training subset (dotted) and test (dashed), evaluated "
      f"{', '.join(sorted({r.eval_interval for r in ctx.study.runs}))}; loss in "
      f"{style.loss_unit(loss)}, accuracy in percent; band: min–max over seeds."
      + (f" Drawn: the {len(shown)} conditions the verdict table compares; the other "
         f"{len(groups) - len(shown)} (step sizes of the tuning) are in the summary table."
         if len(shown) < len(groups) else ""))
  if fig:
    blocks.append(fig)
  fit = {label: _final(ctx, rs, "eval_train/accuracy") for label, rs in groups.items()}
  fit = {k: v for k, v in fit.items() if len(v)}
  if fit:
    findings.append(Finding(
        "Training-set accuracy at the end: " + "; ".join(f"{k} {pct(v.mean())}" for k, v in fit.items())
        + ".",
        {"eval_train/accuracy": {k: float(v.mean()) for k, v in fit.items()}}))
  answer = _answer(ctx, groups, fit)
  if answer:
    findings.append(answer)
  return [Section("Results", blocks)], findings


def _answer(ctx: Context, groups: dict[str, list[runs.Run]], fit: dict[str, np.ndarray]) -> Finding | None:
  """The question's answer as measured (means over seeds, no test): the smallest final lambda_max among
  the conditions that measured it, and the smallest generalization gap with its training accuracy."""
  lam = {k: v for k, rs in groups.items() if len(v := _final(ctx, rs, "curv/lambda_max"))}
  gap = {k: v for k, rs in groups.items() if len(v := _final(ctx, rs, "gap/accuracy"))}
  if not (lam or gap):
    return None
  parts = []
  flat = min(lam, key=lambda k: lam[k].mean()) if lam else None
  small = min(gap, key=lambda k: gap[k].mean()) if gap else None
  if lam:
    parts.append(f"the smallest mean final λ_max is {flat}'s, {num(lam[flat].mean())} (of {len(lam)} "
                 "conditions that measured it; Adam's raw λ_max is not held to a 2/η threshold and its "
                 "preconditioned one is the comparable quantity)")
  if gap:
    at = f", at {pct(fit[small].mean())} training accuracy" if small in fit else ""
    parts.append(f"the smallest mean gap is {small}'s, {100 * gap[small].mean():.1f} points{at} (gaps of "
                 "networks that fit their training set to different degrees are not comparable minima)")
  return Finding("The question, as measured (means over seeds, picked after the runs, no test): "
                 + "; ".join(parts) + ".", {"smallest": {"lambda_max": flat, "gap": small}})


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Keskar et al. (2017, ICLR) and Jastrzebski et al. (2017) find that gradient noise steers SGD to "
         "flatter minima than (near) full-batch training, with better test accuracy. Cohen et al. (2021, "
         "ICLR) find that full-batch GD's λ_max rises from below to 2/η and hovers there. Wilson et al. "
         "(2017, NeurIPS) find that Adam generalizes worse than SGD on image classification. The verdict "
         "table judges these claims; the comparisons behind it:"]
  items = [f.text for f in findings if "verdict" in f.values]
  for f in findings:
    v = f.values
    if v.get("optimizer", "").startswith("GD") and "reached" in v:
      catapult = (f"; {v['started above']} run(s) started above 2/η at initialization: a fall from there is "
                  "a catapult (Lewkowycz et al. 2020), not counted as reaching it"
                  if v["started above"] else "")
      items.append(f"GD at the edge of stability: it reached {REACH:g} of 2/η from below in {v['reached']} "
                   f"of {v['runs']} runs and ended at {v['ratio to threshold']:.2f} of it on average"
                   f"{catapult}"
                   + (f": above Cohen et al.'s hovering window ({WINDOW[0]:g}-{WINDOW[1]:g} of 2/η), so the "
                      "crossing reproduces and the hovering at 2/η does not"
                      if v["ratio to threshold"] > WINDOW[1] else "") + ".")
    if v.get("adaptive") and "ratio to threshold" in v:
      items.append(f"{v['optimizer']}: preconditioned λ_max ended at {v['ratio to threshold']:.2f} of 38/η. "
                   "Cohen et al. (2022) study full-batch Adam; with minibatches the sharpness usually stays "
                   "below the threshold, so this is not a test of their claim.")
  if len(items) == 0:
    items.append("Neither sharpness nor accuracy could be compared between the optimizers: the comparison "
                 "cannot be made.")
  return out + [items] + _measured_reasons(ctx)


def _threshold_ratio(ctx: Context, rs: list[runs.Run]) -> float:
  """Mean final lambda_max over 2/eta of finished runs (nan without a threshold)."""
  thr = threshold_of(rs[0])[0] if rs else None
  v = _final(ctx, rs, "curv/lambda_max")
  return float(v.mean() / thr) if thr and len(v) else math.nan


def _measured_reasons(ctx: Context) -> list[str]:
  """For each pre-registered comparison the verdict table leaves undecided (its interval, at the table's
  level, contains no effect): the effect against the seed-to-seed spread and the seeds that spread would
  need; for GD's crossing of 2/eta, what each GD run that did not reach it measured."""
  level = criteria.test_level(ctx.study)
  out = []
  pairs = _pairs(ctx)
  for cid, _, _, metric, compare, expected, name in COMPARISONS:
    pair = pairs[cid]
    ra, rb, a, b = pair.a, pair.b, pair.label_a, pair.label_b
    x, y = _final(ctx, ra, metric), _final(ctx, rb, metric)
    got = stats.compared(x, y, compare, level)
    if got is None or not got[0].finite:
      continue
    iv, effect, sa, sb = got
    if not iv.lo <= iv.null <= iv.hi:
      if (iv.lo > iv.null) != (expected == ">") and metric == "test/accuracy":  # contradicts the claim
        fa, fb = _final(ctx, ra, "eval_train/accuracy"), _final(ctx, rb, "eval_train/accuracy")
        if len(fa) and len(fb):
          out.append(f"Measured reason, {name}: the verdict's {wording.interval_text(iv, **wording.POINTS)} "
                     f"lies on the other side of the claim. Training accuracy at the end: {pct(fa.mean())} "
                     f"({a}) and {pct(fb.mean())} ({b}) on {_num_train(ctx)} training images after "
                     f"{_steps_text(ctx)}"
                     + (": the comparison is between optimizers at different degrees of fit within this "
                        "step budget at these untuned step sizes, where Wilson et al. tune each method's "
                        "step size and train to a small training loss." if "tuned" not in a + b else
                        f", each at its step size of best mean validation accuracy ({a}, {b})."))
      continue
    why = (wording.why_undecided(effect, sa, sb, len(x), len(y), level, "1" if compare == "ratio" else "0",
                                  "per optimizer")
           if (effect > 0) == (expected == ">") else wording.AGAINST)
    if compare == "ratio":
      text = (f"Measured reason, {name}: the ratio {iv.estimate:.2f}x is a log-difference of {effect:+.2f} "
              f"against a seed-to-seed standard deviation of the log of {sa:.2f} ({a}) and {sb:.2f} ({b}) "
              f"over {len(x)} vs {len(y)} seeds, so the verdict's "
              f"{wording.interval_text(iv, **wording.TIMES)} contains 1; {why}.")
      ta, tb = _threshold_ratio(ctx, ra), _threshold_ratio(ctx, rb)
      if math.isfinite(ta) and math.isfinite(tb):
        text += (f" Final λ_max over 2/η of their common step size: {ta:.2f} ({a}) and {tb:.2f} ({b}) (mean "
                 "over seeds).")
    else:
      text = (f"Measured reason, {name}: the difference {100 * effect:+.2f} points is smaller than its "
              f"uncertainty from the seed-to-seed spread (standard deviation {100 * sa:.2f} points for {a}, "
              f"{100 * sb:.2f} for {b}, {len(x)} vs {len(y)} seeds): the verdict's "
              f"{wording.interval_text(iv, **wording.POINTS)} contains 0; {why}.")
      fa, fb = _final(ctx, ra, "eval_train/accuracy"), _final(ctx, rb, "eval_train/accuracy")
      if len(fa) and len(fb):
        text += (f" Training accuracy at the end: {pct(fa.mean())} ({a}) and {pct(fb.mean())} ({b}) on "
                 f"{_num_train(ctx)} training images.")
      if cid == "sgd_more_accurate_than_gd":
        text += _batch_fraction(ra)
    out.append(text)
  gd = [r for r in _finished(_group(ctx, "GD")) if r.flat_config.get("optimizer.name") not in ADAPTIVE]
  missed = [(r, q) for r in gd if (q := run_quantities(r)) and not q.get("eos/reached")]
  if missed:
    parts = []
    for r, q in missed:
      below = q.get("eos/first_below_step", math.nan)
      parts.append(f"seed {r.seed}: started at {q['eos/start_ratio']:.2f}, at most {q['eos/max_ratio']:.2f}, "
                   + (f"first below {WINDOW[0]:g} at step {int(below)}" if math.isfinite(below)
                      else f"never below {WINDOW[0]:g}"))
    out.append(f"Measured reason, GD at 2/η: {len(missed)} of {len(gd)} GD runs did not reach {REACH:g} of "
               f"2/η after a measurement below {WINDOW[0]:g} of it (λ_max over 2/η; {'; '.join(parts)}).")
  return out


def _batch_fraction(rs: list[runs.Run]) -> str:
  """How large the minibatch is against the training set, beside Keskar et al.'s batch sizes."""
  batch = {r.flat_config.get("training.batch_size") for r in rs} - {None}
  n = {(r.summary or {}).get("num_train") for r in rs} - {None}
  if len(batch) != 1 or len(n) != 1:
    return ""
  b, n = batch.pop(), n.pop()
  return (f" SGD's batch of {b} is {100 * b / n:.3g}% of its {n:,} training images, where Keskar et al.'s "
          "small batch (256 of 50,000 CIFAR-10 images) is 0.5% and their large batch 10%; a possible reason, "
          "not measured here, is that SGD's gradient noise is too small to set the two apart.")


def _steps_text(ctx: Context) -> str:
  steps = {r.flat_config.get("training.num_steps") for r in ctx.study.runs} - {None}
  return f"{steps.pop():,} steps" if len(steps) == 1 else "training"


def _num_train(ctx: Context) -> str:
  n = {(r.summary or {}).get("num_train") for r in ctx.study.runs} - {None}
  return f"{n.pop():,}" if len(n) == 1 else "the"


def _limitations(ctx: Context) -> list[str]:
  lrs: dict[str, dict] = {}  # optimizer -> its step sizes (a dict keeps the sweep's order)
  for r in ctx.study.runs:
    lrs.setdefault(optimizer_label(r), {})[r.flat_config.get("schedule.lr")] = None
  listed = "; ".join(f"{k}: {', '.join(f'{v:g}' for v in vs)}" for k, vs in lrs.items())
  pairs = _pairs(ctx)
  tuned = [p for p in pairs.values() if p.tuned_a or p.tuned_b][:1]
  chosen, curse = [], []
  for p in tuned:
    for rs, info in ((p.a, p.tuned_a), (p.b, p.tuned_b)):
      chosen.append(criteria.tuned_text(info))
      v, t = _final(ctx, rs, "valid/accuracy"), _final(ctx, rs, "test/accuracy")
      if len(v) and len(t) and rs:
        curse.append(f"{optimizer_label(rs[0])} at η = {rs[0].flat_config.get('schedule.lr'):g}: "
                     f"validation {pct(v.mean())}, test {pct(t.mean())}")
  most = max(len(v) for v in lrs.values())
  steps = (f"Step sizes ({listed}): the tuned comparison chose from {most} per optimizer by mean "
           f"validation accuracy over seeds ({'; '.join(chosen)}), a coarse grid (Wilson et al. search more "
           "finely, with decay schedules; a choice at the grid's edge may not be the best step size). The "
           "choice and the comparison use the same runs: validation and test are disjoint images but the "
           "same trained networks, so the chosen step size's luck on validation partly carries over to test "
           "(the winner's curse; choosing on some seeds and comparing fresh ones would remove it)"
           + (f"; {'; '.join(curse)}" if curse else "") + ". GD and SGD are compared at one common step "
           "size, untuned, as Keskar et al. compare batch sizes." if tuned else
           f"Untuned learning rates ({listed}): a tuned comparison (Wilson et al. tune each) could order the "
           "optimizers differently.")
  every = {}
  for r in ctx.study.runs:
    if r.flat_config.get("curvature.at_end") or (r.flat_config.get("curvature.every_steps") or 0) > 0:
      every.setdefault(optimizer_label(r), set()).add(r.flat_config.get("curvature.every_steps") or 0)
  cadence = "; ".join(f"{k} " + (f"every {max(v)} steps" if max(v) else "at the end only")
                      for k, v in every.items())
  out = ["The budget is matched in steps, not in gradient evaluations: GD sees the whole training set at "
         "every step, SGD and Adam one batch.", steps]
  if cadence:
    out.append(f"λ_max was measured: {cadence}; at the edge of stability it oscillates between "
               "measurements.")
  n = {(r.summary or {}).get("num_train") for r in ctx.study.runs} - {None}
  out.append(f"Every run trains on the same fixed draw of {_num_train(ctx)} training images; the seed "
             "intervals do not cover another draw of them, which can move these comparisons by more than "
             "their intervals (the study config's design history gives a case)." if len(n) == 1 else
             "The seed intervals do not cover the draw of the training images.")
  same_lr = pairs["sgd_more_accurate_than_gd"]
  fit = [(lab, _final(ctx, rs, "eval_train/accuracy")) for lab, rs in (("SGD", same_lr.a), ("GD", same_lr.b))]
  if all(len(f) for _, f in fit) and min(f.mean() for _, f in fit) < 0.99:
    out.append("Keskar et al.'s claims speak of minima; here GD and SGD at the common step size end at "
               + " and ".join(f"{pct(f.mean())} ({lab})" for lab, f in fit) + " training accuracy, so "
               "'minimum' means the end of training, not a converged minimum.")
  return out


TEMPLATE = Template(
    "optimizers", TITLE,
    "At a matched number of steps, which optimizer (full-batch GD, minibatch SGD, heavy-ball "
    "momentum where the sweep runs it, Adam) ends in the flattest minimum and with the smallest "
    "generalization gap? Final λ_max (for "
    "Adam also the preconditioned λ_max) against each optimizer's stability threshold, training and test "
    "accuracy and the gap.", _applies, _results, _comparison, _limitations,
    _prepare, quantities=lambda ctx: {r.name: run_quantities(r) for r in ctx.study.runs})
