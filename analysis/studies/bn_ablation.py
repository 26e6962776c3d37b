"""Report template of the BatchNorm ablation (experiments/configs/bn_ablation.py): norm = batch / none /
layer over seeds, on accuracy, generalization gap, the Hessian along training (top eigenvalues of the
loss training descends, its spectrum at the end) and Santurkar et al.'s trajectory smoothness, compared
with Santurkar et al. 2018, Ghorbani et al. 2019 and Cohen et al. 2021."""

import dataclasses
import json
import math

import numpy as np

from analysis import criteria, plots, runs, stats, style, wording
from analysis.document import Finding, Section, distinct, num, pct, seeds_text
from analysis.results import (
  Context,
  Template,
  curvature_mode_text,
  seed_histories,
  standard_results,
  threshold_of,
)

TITLE = "BatchNorm ablation"

NORM_KEY = "model.knobs.norm"
SMOOTHNESS = (("smooth/loss_range", "loss variation along the gradient step", "loss range", "4(a)"),
              ("smooth/grad_change", "gradient change along the step (gradient predictiveness)",
               "max ‖∇L(w − cη∇L) − ∇L(w)‖", "4(b)"),
              ("smooth/beta", "effective β-smoothness", "effective β-smoothness", "4(c)"))
# (metric, what, how it is summarized over training): ratios without / with BatchNorm
RATIOS = (("curv/lambda_max@mean", "λ_max (mean over training)"),
          ("curv/lambda_max", "λ_max at the end"),
          ("curv/trace", "the Hessian trace at the end"),
          ("curv/lambda_1_over_lambda_k", "λ_1 / λ_k at the end"),
          ("smooth/loss_range@mean", "the loss variation along the step (mean over training)"),
          ("smooth/grad_change@mean", "the gradient change along the step (mean over training)"),
          ("smooth/beta@mean", "the effective β-smoothness (mean over training)"))


def _bn_applies(ctx: Context) -> str | None:
  norms = distinct(_norm_of(r) for r in ctx.study.runs)
  if len(norms) < 2:
    return f"`{NORM_KEY}` takes one value ({', '.join(map(str, norms))}) across the runs"
  if "batch" not in norms:
    return f"no run uses `{NORM_KEY}=batch`, the reference of the ablation"
  return None


def _bn_groups(ctx: Context) -> dict[str, list[runs.Run]]:
  out = {}
  for r in ctx.study.runs:
    out.setdefault(_norm_of(r), []).append(r)
  return out


def _norm_of(run: runs.Run):
  return run.flat_config.get(NORM_KEY, "none")


def _bn_prepare(ctx: Context) -> Context:
  """The norm is a condition key even where no sweep index names it."""
  return ctx.with_key(NORM_KEY, _norm_of)


def _tracked(run: runs.Run) -> bool:
  c = run.flat_config
  return bool(c.get("curvature.every_steps") or c.get("curvature.at_end") or c.get("smoothness.every_steps")
              or c.get("smoothness.at_end"))


def _split(ctx: Context) -> tuple[Context, list[runs.Run]]:
  """(the main runs' context, the step-size sweep's runs): when the runs that tracked curvature or
  smoothness share one training length, runs of another length are the step-size sweep (shorter trainings
  at larger step sizes, compared on training accuracy only); the main runs' conditions are named by the
  keys that vary among them."""
  steps = lambda r: r.flat_config.get("training.num_steps")
  lengths = distinct(steps(r) for r in ctx.study.runs if _tracked(r))
  if len(lengths) != 1:
    return ctx, []
  main = [r for r in ctx.study.runs if steps(r) == lengths[0]]
  sweep = [r for r in ctx.study.runs if steps(r) != lengths[0]]
  if not sweep:
    return ctx, []
  keys = [k for k in ctx.study.override_keys if k == NORM_KEY or len(distinct(
      json.dumps(r.overrides.get(k, r.flat_config.get(k)), sort_keys=True, default=str) for r in main)) > 1]
  keys = [k for k in keys if k.split(".")[0] not in ("curvature", "smoothness")]  # tracked or not: same norm
  names = {r.name for r in main}
  study = dataclasses.replace(ctx.study, runs=main, override_keys=keys)
  return dataclasses.replace(ctx, study=study, table=ctx.table[ctx.table["run"].isin(names)]), sweep


def _values(ctx: Context, rs: list[runs.Run], metric: str) -> np.ndarray:
  if metric.endswith("@mean"):
    v = np.asarray([criteria.history_stat(r, metric[:-len("@mean")]) for r in rs], np.float64)
    return v[np.isfinite(v)]
  return ctx.values(rs, metric)


def _phase_mean(curve: tuple[np.ndarray, np.ndarray], lo: float, hi: float) -> float:
  """Mean of a tracked metric's (steps, values) over the measurements at steps in (lo, hi] (step 0 alone:
  lo = hi = 0)."""
  steps, ys = curve
  keep = ((steps == 0) if hi == 0 else (steps > lo) & (steps <= hi)) & np.isfinite(ys)
  return float(ys[keep].mean()) if keep.any() else math.nan


def _phases(groups: dict[str, list[runs.Run]]) -> list[Finding]:
  """Where along training the tracked ratios without / with BatchNorm come from: at initialization, over
  the first half of the measurements after it and over the second (ratios of geometric means over seeds;
  descriptive, no interval)."""
  if "batch" not in groups or "none" not in groups:
    return []
  out = []
  for metric, name in RATIOS:
    base = metric[:-len("@mean")]
    curves = {norm: [r.curve(base) for r in groups[norm]] for norm in ("none", "batch")}
    last = max((float(s.max()) for cs in curves.values() for s, _ in cs if len(s)), default=0.0)
    if last <= 0:
      continue
    half = last / 2
    parts = []
    for label, lo, hi in (("at initialization", 0.0, 0.0), (f"steps 1-{half:g}", 0.0, half),
                          (f"after step {half:g} to {last:g}", half, last)):
      a = np.asarray([_phase_mean(cv, lo, hi) for cv in curves["none"]])
      b = np.asarray([_phase_mean(cv, lo, hi) for cv in curves["batch"]])
      a, b = a[np.isfinite(a) & (a > 0)], b[np.isfinite(b) & (b > 0)]
      if len(a) and len(b):
        parts.append((label, float(np.exp(np.log(a).mean() - np.log(b).mean()))))
    if len(parts) == 3:
      what = name.replace(" (mean over training)", "")
      out.append(Finding(
          f"{style.capitalized(what)} without normalization / with BatchNorm by phase of training: "
          + ", ".join(f"{r:.2f}x {label}" for label, r in parts)
          + " (ratios of geometric means over seeds of each run's mean in the phase; no interval).",
          {"metric": metric, "phases": dict(parts)}))
  return out


def _phase_text(findings: list[Finding]) -> list[str]:
  """Where along training the ratios of `_phases` put the difference: a paragraph, or nothing."""
  names = dict(RATIOS)
  rows = [(names[f.values["metric"]].replace(" (mean over training)", ""), list(f.values["phases"].items()))
          for f in findings if "phases" in f.values and f.values.get("metric") in names]
  if not rows:
    return []
  lower = [name for name, parts in rows if parts[0][1] < 1]
  first, second = rows[0][1][1][0], rows[0][1][2][0]
  text = ("Where along training the difference lies (ratios without / with BatchNorm of geometric means "
          "over seeds by phase, from the findings; no interval): "
          + "; ".join(f"{name} {parts[0][1]:.2f}x at initialization, {parts[1][1]:.2f}x over {parts[1][0]}, "
                      f"{parts[2][1]:.2f}x {parts[2][0]}" for name, parts in rows) + ". ")
  if lower:
    text += (f"At initialization the network with BatchNorm is the rougher one on {len(lower)} of "
             f"{len(rows)} of these measures ({', '.join(lower)}), in these point estimates (no interval): "
             "the published direction appears during training, not in the initial network. ")
  weaker = [name for name, parts in rows if parts[2][1] < parts[1][1]]
  if weaker:
    text += (f"It is weaker {second} than over {first} for {len(weaker)} of {len(rows)} "
             f"({', '.join(weaker)}); the criteria average over every measurement after initialization, "
             "so they weigh both halves alike.")
  return [text.strip()]


def _smoothness_figures(ctx: Context, groups: dict[str, list[runs.Run]]) -> list:
  out = []
  for metric, what, ylabel, panel in SMOOTHNESS:
    seeds = {norm: [r.curve(metric) for r in rs if len(r.curve(metric)[0]) > 1]
             for norm, rs in groups.items()}
    seeds = {k: v for k, v in seeds.items() if v}
    if not seeds:
      continue
    points = max(len(s) for v in seeds.values() for s, _ in v)
    settings = distinct((r.flat_config.get("smoothness.bn_mode"), r.flat_config.get("smoothness.chunk_size"),
                         r.flat_config.get("smoothness.num_examples"))
                        for rs in groups.values() for r in rs if _norm_of(r) == "batch")
    ghost = settings[0][1] if len(settings) == 1 else None
    mode = (f"; BatchNorm with batch statistics over ghost batches of {ghost or 'the training batch size'}"
            if len(settings) == 1 and settings[0][0] == "batch" else "")
    if metric == "smooth/loss_range":
      loss = distinct(r.flat_config.get("loss.name", "cross_entropy") for rs in groups.values() for r in rs)
      ylabel = style.loss_label(loss[0], "loss range") if len(loss) == 1 else ylabel
    draw = lambda p, seeds=seeds, ylabel=ylabel: plots.seed_curves(seeds, band="minmax", ylabel=ylabel,
                                                                    path=p)
    fig = ctx.figure(f"smoothness_{metric.split('/')[1]}", draw,
        f"Santurkar et al.'s {what} over training (their Fig. {panel}), per norm: mean over seeds (markers, "
        f"{points} measurements), band {plots.interval_text('minmax')}, thin lines the seeds. At each "
        f"measurement the loss and gradient are evaluated at w − cη∇L(w) for the step multiples c of "
        f"`smoothness.multiples` on a fixed probe set of "
        f"{settings[0][2] if len(settings) == 1 else 'the'} training images{mode}.")
    if fig:
      out.append(fig)
  return out


TRAINS = 0.5  # a run of the step-size sweep "trains" when its training-set accuracy at the end exceeds this


def _sweep_point(ctx: Context, run: runs.Run, steps: int | None = None) -> tuple[float, float, bool]:
  """(lr, training-set accuracy at the end or after `steps`, diverged) of one run."""
  lr = float(run.flat_config.get("schedule.lr", math.nan))
  diverged = run.status == "diverged"
  if steps is None:
    v = ctx.values([run], "eval_train/accuracy")
    return lr, float(v[0]) if len(v) else math.nan, diverged
  s, ys = run.curve("eval_train/accuracy")
  at = ys[s == steps]
  return lr, float(at[0]) if len(at) else math.nan, diverged


def _step_size_sweep(ctx: Context, main: Context, sweep: list[runs.Run]) -> tuple[list, list[Finding]]:
  """The step-size sweep: training accuracy after the sweep's steps against the step size per norm (the
  main runs' evaluation at the same step adds the base step size), the largest step size at which every
  run trained, and per step size the difference BatchNorm minus none over seeds."""
  steps = distinct(int(r.flat_config.get("training.num_steps") or 0) for r in sweep)
  n_steps = steps[0] if len(steps) == 1 and steps[0] > 0 else None
  points: dict[str, list] = {}
  for r in sweep:
    points.setdefault(str(_norm_of(r)), []).append(_sweep_point(ctx, r))
  if n_steps is not None:
    for r in main.study.runs:
      p = _sweep_point(main, r, n_steps)
      if math.isfinite(p[1]):
        points.setdefault(str(_norm_of(r)), []).append(p)
  points = {k: sorted(v) for k, v in points.items()}
  after = f"after {n_steps} steps" if n_steps else "at the end"
  fig = ctx.figure("step_size_sweep", lambda p: plots.step_size_sweep(
      {f"norm={k}": v for k, v in points.items()}, trains_at=TRAINS, chance=0.1, path=p),
      f"Step-size sweep: accuracy on the fixed training subset {after}, per norm, against the learning rate "
      f"(SGD with momentum 0.9, log axis); every run a point (runs that diverged: a cross on the lower "
      f"edge with their count), the line through the means per step size. A run counts as training above "
      f"{100 * TRAINS:g}% (dashed); "
      f"chance is 10% (dotted). The smallest step size is the main runs' own, evaluated at the same step.")
  findings = []
  largest = {}
  for norm, pts in points.items():
    by_lr: dict[float, list] = {}
    for lr, acc, div in pts:
      by_lr.setdefault(lr, []).append(bool(not div and math.isfinite(acc) and acc > TRAINS))
    ok = [lr for lr, t in sorted(by_lr.items()) if all(t)]
    first_fail = next((lr for lr, t in sorted(by_lr.items()) if not all(t)), None)
    largest[norm] = max(ok) if ok else None
    counts = "; ".join(f"η = {lr:g}: {sum(t)} of {len(t)}" for lr, t in sorted(by_lr.items()))
    what = (f"the largest step size of the grid at which every run trained is η = {largest[norm]:g}"
            if ok else "no step size of the grid at which every run trained")
    if len(by_lr) == 1:
      what = f"only η = {next(iter(by_lr)):g} was run (not swept)"
    findings.append(Finding(
        f"norm={norm}: {what}" + (f" (the next, {first_fail:g}, did not)" if ok and first_fail and
                                  first_fail > largest[norm] else "")
        + f"; runs training above {100 * TRAINS:g}% {after}: {counts}.",
        {"norm": norm, "metric": "largest_stable_lr", "largest": largest[norm], "first_failing": first_fail,
         "counts": {f"{lr:g}": [int(sum(t)), len(t)] for lr, t in by_lr.items()}}))
  for lr in sorted({lr for pts in points.values() for lr, _, _ in pts}):
    a = np.asarray([acc for x, acc, _ in points.get("batch", []) if x == lr], np.float64)
    b = np.asarray([acc for x, acc, _ in points.get("none", []) if x == lr], np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
      continue
    iv = stats.difference_interval(a, b)
    findings.append(Finding(
        f"Training accuracy {after} at η = {lr:g}, BatchNorm minus none: {100 * iv.estimate:+.2f} points "
        f"({pct(a.mean())} vs {pct(b.mean())}; {wording.interval_text(iv, **wording.POINTS)}).",
        {"norm": "none", "metric": "step_size_accuracy", "lr": lr, "difference": iv.estimate,
         "interval": iv.as_dict(), "n batch": len(a), "n": len(b)}))
  return ([fig] if fig else []), findings


def _bn_results(ctx: Context):
  full = ctx
  ctx, sweep = _split(ctx)
  bars = ("test/accuracy", "gap/accuracy", "curv/lambda_max", "curv/trace")
  blocks = standard_results(ctx, bar_metrics=bars, bar_key=NORM_KEY)
  groups = _bn_groups(ctx)
  blocks += _smoothness_figures(ctx, groups)
  base = groups["batch"]
  findings = []
  for norm, rs in groups.items():
    if norm == "batch":
      continue
    what = "without normalization" if norm == "none" else f"with norm={norm}"
    for metric, name in RATIOS:
      a, b = _values(ctx, rs, metric), _values(ctx, base, metric)
      if not (len(a) and len(b)):
        continue
      iv = stats.ratio_interval(a, b)
      findings.append(Finding(
          f"{style.capitalized(name)} {what} / with BatchNorm: {iv.estimate:.2f}x (ratio of geometric "
          f"means; means {num(a.mean())} vs {num(b.mean())}; {wording.interval_text(iv, **wording.TIMES)}"
          f"{_mode_note(base, metric)}).",
          {"norm": norm, "metric": metric, "ratio": iv.estimate, "ci": (iv.lo, iv.hi),
           "interval": iv.as_dict(),
           "mean": float(a.mean()), "mean batch": float(b.mean()), "n": len(a), "n batch": len(b)}))
    for metric, name in (("test/accuracy", "Test accuracy"), ("gap/accuracy", "The accuracy gap")):
      show = pct if metric == "test/accuracy" else (lambda x: f"{100 * x:.2f} points")
      a, b = ctx.values(base, metric), ctx.values(rs, metric)
      if not (len(a) and len(b)):
        continue
      iv = stats.difference_interval(a, b)
      findings.append(Finding(
          f"{name} with BatchNorm minus {what}: {100 * iv.estimate:+.2f} points ({show(a.mean())} vs "
          f"{show(b.mean())}; {wording.interval_text(iv, **wording.POINTS)}).",
          {"norm": norm, "metric": metric, "difference": iv.estimate, "ci": (iv.lo, iv.hi),
           "interval": iv.as_dict(), "mean batch": float(a.mean()), "mean": float(b.mean()),
           "n batch": len(a), "n": len(b)}))
  findings += _phases(groups)
  findings += _regime(ctx, groups)
  if sweep:
    more, found = _step_size_sweep(full, ctx, sweep)
    blocks += more
    findings += found
  return [Section("Results", blocks)], findings


def _mode_note(base: list[runs.Run], metric: str) -> str:
  """`; BatchNorm runs: Hessian with batch statistics ...` for curvature and smoothness metrics."""
  if metric.startswith("curv/"):
    mode = curvature_mode_text(base)
    return f"; BatchNorm runs' Hessian: {mode}" if mode else ""
  if metric.startswith("smooth/"):
    fc = [r.flat_config for r in base]
    modes = distinct((c.get("smoothness.bn_mode", "batch"), c.get("smoothness.chunk_size")) for c in fc)
    words = [f"batch statistics over ghost batches of {g or 'the training batch size'}" if m == "batch"
             else "running statistics (eval mode)" for m, g in modes]
    return f"; BatchNorm runs probed with {' / '.join(words)}" if words else ""
  return ""


def _regime(ctx: Context, groups: dict[str, list[runs.Run]]) -> list[Finding]:
  """Where λ_max sits relative to the optimizer's stability threshold (Cohen et al. 2021)."""
  out = []
  for norm, rs in groups.items():
    threshold, name = threshold_of(rs[0])
    hist = seed_histories(rs)
    if threshold is None or not hist:
      continue
    start = np.asarray([v[0] / threshold for s, v in hist if s[0] == 0])
    peak = np.asarray([np.nanmax(v[s > 0]) / threshold for s, v in hist if (s > 0).any()])
    end = np.asarray([v[-1] / threshold for _, v in hist])
    if not len(peak):
      continue
    began = f"{start.min():.2f}-{start.max():.2f}x at initialization, " if len(start) else ""
    below = [float(s[np.argmax(v < threshold)]) for s, v in hist if (v < threshold).any()]
    above = (f"; above the threshold at initialization, below it from step {int(max(below))} on"
             if len(start) and start.max() > 1 and below else "")
    out.append(Finding(
        f"norm={norm}: λ_max as a multiple of the stability threshold {name} = {num(threshold)}: {began}"
        f"at most {peak.min():.2f}-{peak.max():.2f}x at any later measurement and ended at {end.min():.2f}-"
        f"{end.max():.2f}x (ranges over {seeds_text(len(peak))}; minibatch training, where λ_max below the "
        f"threshold is the expected regime{above}).",
        {"norm": norm, "metric": "lambda_max / threshold", "threshold": threshold, "start": start.tolist(),
         "peak": peak.tolist(), "end": end.tolist()}))
  return out


def _bn_comparison(ctx: Context, findings: list[Finding]) -> list:
  whole = ctx  # the criteria are judged over every run, the step-size sweep's included
  ctx, sweep = _split(ctx)
  mode = curvature_mode_text(ctx.study.runs) or "no network with BatchNorm measured"
  out = ["Santurkar et al. (2018, NeurIPS, \"How does batch normalization help optimization?\") find that "
         "BatchNorm makes the loss smoother along the training trajectory: the loss varies less along the "
         "gradient step, the gradient changes less (it is more predictive) and the effective β-smoothness "
         "is lower (their Fig. 4). Ghorbani et al. (2019, ICML) find that without BatchNorm the Hessian has "
         "large isolated eigenvalues that BatchNorm suppresses (about one per class: the top 2C "
         "eigenvalues are needed to see them, which the `hessian_spectrum` study measures, not this one). "
         "Cohen et al. (2021, ICLR) add a caution: "
         "at a fixed step size full-batch training drives λ_max up to the stability threshold with or "
         "without BatchNorm, so sharpness at the end measures the step size as much as the architecture; "
         "under minibatch SGD λ_max settles below the threshold.",
         f"The Hessian here: {mode}. The verdict table at the top judges each pre-registered criterion; "
         "per comparison:"]
  items, verdicts = [], []
  for f in findings:
    v = f.values
    if v.get("norm") != "none" or "interval" not in v:
      continue
    iv = stats.Interval.from_dict(v["interval"])
    name = dict(RATIOS).get(v["metric"])
    if name:
      j = wording.judge(iv, '>', **wording.TIMES)
      verdicts.append(j.verdict)
      items.append(f"{name} without / with BatchNorm = {v['ratio']:.2f}x; against the published direction "
                   f"(higher without BatchNorm), on its own 95% interval, this {j.text}.")
    elif v["metric"] == "test/accuracy":
      j = wording.judge(iv, '>', **wording.POINTS)
      verdicts.append(j.verdict)
      items.append(f"Test accuracy with minus without BatchNorm {100 * v['difference']:+.2f} points; against "
                   "the published direction (higher with BatchNorm), on its own 95% interval, this "
                   f"{j.text}.")
  regime = [f.text for f in findings if f.values.get("metric") == "lambda_max / threshold"]
  if not items:
    items.append("No measurement of a run without normalization: the comparison cannot be made.")
  summary = []
  if verdicts:
    counts = {w: verdicts.count(w) for w in ("shows", "contradicts", "inconclusive")}
    joint = criteria.test_level(whole.study)
    summary = [f"Without normalization against BatchNorm, of {len(verdicts)} comparisons the published "
               f"direction shows in {counts['shows']}, is contradicted in {counts['contradicts']} and is "
               f"inconclusive in {counts['inconclusive']} at these seeds, each at its own 95% level. The "
               f"verdict table judges the pre-registered ones jointly, each at {100 * joint:.4g}%, so a "
               "comparison can show here and be inconclusive there."]
    summary += _measured_reason(ctx, findings)
  summary += criteria.undecided_reasons(whole.study, whole.table)
  summary += _phase_text(findings)
  ends = [e for f in findings if f.values.get("metric") == "lambda_max / threshold" for e in f.values["end"]]
  regime = [f"Regime (Cohen et al. 2021): every run with λ_max tracked ended at {min(ends):.2f}-"
            f"{max(ends):.2f}x its stability threshold (the findings give each condition), "
            + ("below it: the regime of minibatch SGD, not the edge of stability." if max(ends) < 1
               else "at or above it in some runs.")] if ends else []
  stable = {f.values["norm"]: f.values for f in findings if f.values.get("metric") == "largest_stable_lr"}
  step = []
  if sweep and stable:
    grid = sorted({float(lr) for v in stable.values() for lr in v["counts"]})
    stable = {norm: v for norm, v in stable.items() if len(v["counts"]) > 1}
    words = "; ".join(f"{norm}: " + (f"η = {v['largest']:g}" if v["largest"] is not None
                                     else "none of the grid") for norm, v in stable.items())
    step = [f"Step sizes (Ioffe & Szegedy 2015; Bjorck et al. 2018, NeurIPS: BatchNorm's benefit comes from "
            f"the larger step sizes it tolerates): the largest step size of the sweep at which every run "
            f"trained, per norm: {words}. The verdict table judges the difference at the decisive step "
            f"size; the grid ({', '.join(f'{lr:g}' for lr in grid)}) locates a limit only to the next "
            "step size of the grid."]
  return out + [items] + summary + regime + step


def _measured_reason(ctx: Context, findings: list[Finding]) -> list[str]:
  """What the measurements say when the curvature and smoothness comparisons are not decided: the range
  of the ratios none / batch, the widest interval, and the network's depth against Santurkar et al.'s."""
  ratios = [f.values for f in findings if f.values.get("norm") == "none" and "ratio" in f.values]
  if not ratios:
    return []
  decided = [v for v in ratios if not (v["ci"][0] <= 1 <= v["ci"][1])]
  if decided:
    return []
  lo, hi = min(v["ratio"] for v in ratios), max(v["ratio"] for v in ratios)
  widest = max(ratios, key=lambda v: v["ci"][1] / v["ci"][0])
  blocks = distinct(r.flat_config.get("model.knobs.blocks", 2) for r in ctx.study.runs)
  model = distinct(r.flat_config.get("model.name") for r in ctx.study.runs)
  depth = (f"`{model[0]}` with {blocks[0]} convolution blocks" if len(model) == 1 and len(blocks) == 1
           and model[0] == "simple_cnn" else f"`{', '.join(map(str, model))}`")
  return [f"Measured reason: every curvature and smoothness ratio without / with BatchNorm lies between "
          f"{lo:.2f}x and {hi:.2f}x, each 95% interval containing 1 (the widest: {widest['ci'][0]:.2f} to "
          f"{widest['ci'][1]:.2f}x for {dict(RATIOS).get(widest['metric'], widest['metric'])}): at this "
          f"scale ({depth}) these seeds do not tell the two networks apart: the effect Santurkar et al. "
          f"measure on VGG networks on CIFAR-10 is either absent here or smaller than these seeds "
          f"resolve (no difference is shown either)."]


def _bn_limitations(ctx: Context) -> list[str]:
  out = ["Ablating the normalization also changes the parameter count and the effective learning rate "
         "(BatchNorm makes preceding weights scale-invariant), so equal step sizes are not equal steps.",
         "The smoothness probes move along the plain gradient at the current learning rate; with momentum "
         "the optimizer's actual update points elsewhere."]
  seeds = [len(rs) for rs in _bn_groups(_split(ctx)[0]).values()]
  if seeds and min(seeds) < 3:
    out.append(f"{min(seeds)} seed(s) per condition: Welch intervals with so few seeds are wide, and most "
               "comparisons can only be inconclusive.")
  return out


TEMPLATE = Template(
    "bn_ablation", TITLE,
    "Does BatchNorm make the loss landscape smoother? Networks with BatchNorm, with LayerNorm and without "
    "normalization, compared over seeds on accuracy, generalization gap, the top Hessian eigenvalue measured "
    "throughout training (with BatchNorm in the mode training uses: batch statistics) and Santurkar et al.'s "
    "trajectory smoothness.", _bn_applies, _bn_results,
    _bn_comparison, _bn_limitations, _bn_prepare)
