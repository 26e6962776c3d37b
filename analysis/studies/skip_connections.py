"""Report template of the skip_connections study (experiments/configs/skip_connections.py).

Li, Xu, Taylor, Studer & Goldstein 2018 ("Visualizing the Loss Landscape of Neural Nets", NeurIPS,
arXiv:1712.09913): 2-D filter-normalized loss landscapes of ResNets with and without skip connections
at several depths, and the Hessian's |lambda_min / lambda_max| as a measure of non-convexity. Results:
accuracy, lambda_max, lambda_min / lambda_max per model; the landscapes' contours on one colour scale;
the landscape summaries of research/landscape/tracking.py (`land/rise_<split>`: the mean loss rise at
+-1 filter norm along the two directions; `land/nonconvex_<split>`: the share of grid points where the
surface curves down). Per-run quantity for the criteria (`quantities`): `curv/lambda_ratio` =
|lambda_min| / lambda_max at the end. A landscape's centre is called a minimum only when every network
drawn fits its training data (eval_train accuracy >= 99%); otherwise it is the trained parameters.
"""

import math

import numpy as np

from analysis import landscapes, plots, runs, stats, style, tables, wording
from analysis.document import Finding, Section, TableBlock
from analysis.results import Context, Template, bn_mode_phrase, num, pct, standard_results

TITLE = "Skip connections"
SKIP_KEY = "model.knobs.skip"
MODEL_KEY = "model.name"
SPLIT = "eval_train"
BAR_KEY = "depth, skips"  # the landscape Li et al. draw: the training loss
RATIO = "curv/lambda_ratio"
FITS = 0.99  # eval_train accuracy from which a trained network is called a minimum in a figure


def _skip(run: runs.Run) -> bool:
  return bool(run.flat_config.get(SKIP_KEY, True))


def _depth_label(run: runs.Run) -> str:
  return str(run.flat_config.get(MODEL_KEY, "?"))


def _label(model: str, skip: bool) -> str:
  return f"{model}, {'with' if skip else 'no'} skips"


def _short(model: str, skip: bool) -> str:
  depth = "".join(c for c in model if c.isdigit()) or model
  return f"{depth}\n{'skip' if skip else 'no skip'}"


def _applies(ctx: Context) -> str | None:
  skips = {_skip(r) for r in ctx.study.runs}
  if skips != {True, False}:
    return f"`{SKIP_KEY}` is not both True and False across the runs"
  return None


def _models(ctx: Context) -> list[str]:
  return list(dict.fromkeys(_depth_label(r) for r in ctx.study.runs))


def _groups(ctx: Context) -> dict[tuple[str, bool], list[runs.Run]]:
  out: dict = {}
  for model in _models(ctx):
    for skip in (True, False):
      rs = [r for r in ctx.study.runs if _depth_label(r) == model and _skip(r) == skip]
      if rs:
        out[(model, skip)] = rs
  return out


def _values(ctx: Context, rs, metric: str) -> np.ndarray:
  return ctx.values(rs, metric)


def _loss_name(ctx: Context) -> str:
  names = {r.flat_config.get("loss.name", "cross_entropy") for r in ctx.study.runs}
  return names.pop() if len(names) == 1 else "cross_entropy"


def _train_accuracy(run: runs.Run) -> float:
  a = (run.final_metrics() or {}).get("eval_train/accuracy")
  return float(a) if runs._is_number(a) else math.nan


def _ratios(ctx: Context) -> dict[str, float]:
  """{run: |lambda_min| / lambda_max} from the runs table's final values (nan where one is missing)."""
  t = ctx.table
  if not {"curv/lambda_min", "curv/lambda_max"} <= set(t.columns):
    return {}
  out = {}
  for name, lo, hi in zip(t["run"], t["curv/lambda_min"], t["curv/lambda_max"]):
    ok = runs._is_number(lo) and runs._is_number(hi) and math.isfinite(lo) and math.isfinite(hi) and hi > 0
    out[name] = abs(float(lo)) / float(hi) if ok else math.nan
  return out


def _quantities(ctx: Context) -> dict[str, dict[str, float]]:
  """{run: {RATIO: |lambda_min| / lambda_max at the end}} (Li et al.'s non-convexity ratio)."""
  return {name: {RATIO: v} for name, v in _ratios(ctx).items() if math.isfinite(v)}


def _mode_text(ctx: Context) -> str:
  return bn_mode_phrase(ctx.study.runs)


def _results(ctx: Context):
  t = ctx.table
  ratios = _ratios(ctx)
  if any(math.isfinite(v) for v in ratios.values()):
    t[RATIO] = t["run"].map(ratios).astype(float)
  t["condition"] = [_label(_depth_label(r), _skip(r)) for r in ctx.study.runs]
  t[BAR_KEY] = [_short(_depth_label(r), _skip(r)) for r in ctx.study.runs]  # short tick labels
  land = [f"land/rise_{SPLIT}", f"land/nonconvex_{SPLIT}"]
  bars = ("test/accuracy", "curv/lambda_max", "curv/lambda_ratio", *land)
  blocks = standard_results(ctx, bar_metrics=bars, bar_key=BAR_KEY, thresholds=False)
  metrics = ["test/accuracy", "eval_train/accuracy", "curv/lambda_max", "curv/lambda_min",
             "curv/lambda_ratio", *land, "land/rise_test"]
  metrics = [m for m in metrics if m in t.columns and t[m].notna().any()]
  names = {"curv/lambda_min": "λ_min", "curv/lambda_ratio": "|λ_min/λ_max|",
           f"land/rise_{SPLIT}": "rise, train", "land/rise_test": "rise, test",
           f"land/nonconvex_{SPLIT}": "non-convex share"}
  if metrics:
    blocks.insert(0, TableBlock("skip_connections", tables.mean_std_table(
        t, ["condition"], metrics, names=names, caption=(
            "Per model, mean ± standard deviation over seeds: accuracies in percent; λ_max and λ_min of the "
            f"training-loss Hessian at the end (fixed probe set; {_mode_text(ctx)}); |λ_min/λ_max| Li et "
            "al.'s non-convexity ratio; rise: mean loss at ±1 along each filter-normalized direction minus "
            f"the loss at the trained point ({style.loss_unit(_loss_name(ctx))}); non-convex share: "
            "the fraction of the 2-D grid's interior points where "
            "the surface curves down (smallest finite-difference curvature below -1% of the largest)."))))
  panels, first, accs = {}, None, {}
  for (model, skip), rs in _groups(ctx).items():
    run = next((r for r in rs if (s := landscapes.latest_scan(r, "2d")) is not None and SPLIT in s.values),
               None)
    if run is None:
      continue
    scan = landscapes.latest_scan(run, "2d")
    first = first or scan
    xs, ys = scan.axes
    acc = _train_accuracy(run)
    accs[_label(model, skip)] = acc
    title = _label(model, skip) + (f" (train {100 * acc:.1f}%)" if math.isfinite(acc) else "")
    panels[title] = (xs, ys, scan.values[SPLIT]["loss"].T)
  if panels:
    info = first.info
    settings = info.get("settings") or {}
    n = (info.get("splits") or {}).get(SPLIT, {}).get("num_examples", settings.get("num_examples"))
    at_minimum = all(math.isfinite(a) and a >= FITS for a in accs.values())
    below = [f"{k} ({100 * a:.1f}%)" for k, a in accs.items() if not (math.isfinite(a) and a >= FITS)]
    centre = ("a minimum: every network drawn fits its training data (eval_train accuracy ≥ "
              f"{100 * FITS:g}%)" if at_minimum else "the trained parameters, not called a minimum: "
              f"{', '.join(below)} below {100 * FITS:g}% eval_train accuracy")
    fig = ctx.figure("landscapes_2d", lambda p: plots.loss_contours(
        panels, ncols=2, loss_name=_loss_name(ctx), at_minimum=at_minimum, path=p), (
        f"Training loss ({style.loss_unit(_loss_name(ctx))}; eval_train, {n} examples) on the plane "
        "θ + α d₁ + β d₂ around each model's final parameters θ (star: "
        f"{centre}), {len(first.axes[0])} × {len(first.axes[1])} points, two random Gaussian directions "
        f"normalized per filter ({settings.get('normalization', 'filter')}; biases and BatchNorm parameters "
        f"not moved; Li et al. 2018), BatchNorm mode {info.get('bn_mode')} (running statistics, as in Li et "
        "al.'s code); one seed per model, all panels on one colour scale; each panel's title gives its "
        "network's final eval_train accuracy."))
    if fig:
      blocks.insert(1, fig)
  return [Section("Results", blocks)], _findings(ctx)


def _findings(ctx: Context) -> list[Finding]:
  out = []
  groups = _groups(ctx)
  for model in _models(ctx):
    a, b = groups.get((model, False)), groups.get((model, True))
    if not (a and b):
      continue
    for metric, name, fmt in (("test/accuracy", "test accuracy", "diff"),
                              ("curv/lambda_max", "λ_max", "ratio"),
                              ("curv/lambda_ratio", "|λ_min/λ_max|", "ratio"),
                              (f"land/rise_{SPLIT}", "the training-loss rise at ±1 filter norm", "ratio"),
                              (f"land/nonconvex_{SPLIT}", "the non-convex share of the landscape", "diff")):
      x, y = _values(ctx, a, metric), _values(ctx, b, metric)
      if not (len(x) and len(y)):
        continue
      if fmt == "diff":
        iv = stats.difference_interval(x, y)
        d = iv.estimate
        if metric == "test/accuracy":
          text = (f"{model}: removing the skip connections changed test accuracy by {100 * d:+.2f} points "
                  f"({pct(x.mean())} vs {pct(y.mean())}; {wording.interval_text(iv, **wording.POINTS)}).")
        else:
          text = (f"{model}: {name} is {x.mean():.3g} without and {y.mean():.3g} with skip connections "
                  f"(difference {d:+.3g}; {wording.interval_text(iv)}).")
        values = {"model": model, "metric": metric, "difference": d, "ci": (iv.lo, iv.hi)}
      else:
        iv = stats.ratio_interval(x, y)
        text = (f"{model}: without skip connections {name} is {num(x.mean())} vs {num(y.mean())} with them, "
                f"{iv.estimate:.2f}x (ratio of geometric means; "
                f"{wording.interval_text(iv, **wording.TIMES)}).")
        values = {"model": model, "metric": metric, "ratio": iv.estimate, "ci": (iv.lo, iv.hi)}
      values["interval"] = iv.as_dict()
      out.append(Finding(text, values | {"without": float(x.mean()), "with": float(y.mean()), "n": len(x)}))
  return out


def _by(findings: list[Finding], metric: str) -> dict[str, dict]:
  return {f.values["model"]: f.values for f in findings if f.values.get("metric") == metric}


def _comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Li et al. (2018, NeurIPS, \"Visualizing the loss landscape of neural nets\", Figs. 5 and 7) find "
         "that without skip connections the filter-normalized landscape of deep ResNets turns chaotic and "
         "non-convex as depth grows (ResNet-56 and -110 without shortcuts; ResNet-20 is barely affected), "
         "with large negative Hessian eigenvalues relative to the largest (|λ_min/λ_max| large) and worse "
         "accuracy, while with skips it stays smooth and nearly convex around the minimum."]
  items = []
  models = _models(ctx)
  for metric, what in ((f"land/nonconvex_{SPLIT}", "non-convex share of the landscape"),
                       ("curv/lambda_ratio", "|λ_min/λ_max|"),
                       (f"land/rise_{SPLIT}", "loss rise at ±1 filter norm")):
    found = _by(findings, metric)
    for model in models:
      v = found.get(model)
      if v is None:
        continue
      iv = stats.Interval.from_dict(v["interval"])
      j = wording.judge(iv, ">", **(wording.TIMES if "ratio" in v else {}))
      against = (" (its estimate points the other way: higher with skips)"
                 if j.verdict == "inconclusive" and iv.estimate < (1.0 if "ratio" in v else 0.0) else "")
      items.append(f"{model}: the {what} is {num(v['without'])} without vs {num(v['with'])} with skips; "
                   f"Li et al. report it higher without skips: this {j.text}{against}.")
    gaps = [found[m]["without"] - found[m]["with"] for m in models if m in found]
    if len(gaps) >= 2 and all(math.isfinite(g) for g in gaps):
      grows = all(b >= a for a, b in zip(gaps, gaps[1:]))
      items.append(f"The difference in {what} (without minus with skips) across {', '.join(models)}: "
                   + ", ".join(f"{g:+.3g}" for g in gaps) + (": the means grow with depth" if grows else
                                                              ": the means do not grow with depth")
                   + " (means only, no interval across depths: not a test of Li et al.'s trend).")
  acc = _by(findings, "test/accuracy")
  for model in models:
    v = acc.get(model)
    if v is not None:
      j = wording.judge(stats.Interval.from_dict(v["interval"]), "<", **wording.POINTS)
      items.append(f"{model}: test accuracy {100 * v['difference']:+.2f} points without skips; lower for "
                   f"deep nets without skips (Li et al.): this {j.text}.")
  if not items:
    items.append("No model has both a run with and one without skip connections: no comparison is made.")
  depth = max((int("".join(c for c in m if c.isdigit()) or 0) for m in models), default=0)
  caveat = []
  if depth < 56:
    caveat.append(f"The deepest model here has depth {depth}; Li et al. see the chaotic landscapes from "
                  "depth 56 on (ResNet-20 without skips stays fairly convex in their Figure 5), so these "
                  "depths test the onset of the effect, not its strong form.")
  return out + [items] + _unfitted(ctx) + caveat


def _unfitted(ctx: Context) -> list[str]:
  """The measured reason for the landscape and Hessian comparisons when a network without skips ends far
  from fitting its training subset: Li et al. compare trained minima."""
  out = []
  fit = {}
  for r in ctx.study.runs:
    acc = r.final_metrics().get("eval_train/accuracy")
    if acc is not None and math.isfinite(acc):
      fit.setdefault(bool(r.flat_config.get("model.knobs.skip", True)), []).append(acc)
  if fit.get(False) and max(fit[False]) < FITS:
    with_skips = (f" (with skips {100 * min(fit[True]):.1f}–{100 * max(fit[True]):.1f}%)" if fit.get(True)
                  else "")
    without = f"{100 * min(fit[False]):.1f}–{100 * max(fit[False]):.1f}%"
    out.append(f"Measured reason for the landscape and Hessian comparisons: the networks without skips end "
               f"at {without} training-subset accuracy{with_skips}: their Hessian and landscape are "
               "measured at a point of training, not at a minimum, where Li et al. compare trained "
               "networks; the comparison needs both networks trained to fit. The test-accuracy difference "
               "cannot be told apart from this under-fitting (how far each network trains in this budget): "
               "it is not the gap between trained networks that Li et al. report.")
  return out


def _limitations(ctx: Context) -> list[str]:
  seeds = min((len(rs) for rs in _groups(ctx).values()), default=0)
  models = _models(ctx)
  out = [] if len(models) > 1 else [
      f"One depth only ({', '.join(models) or 'none'}): the question's second half, whether the effect "
      "changes with depth, is not measured in these runs (the paper variant sweeps depths)."]
  out += ["The landscape uses two random directions and one seed per model: another draw of the directions "
         "changes the picture in detail (Li et al. report it does not change it qualitatively)."]
  if seeds < 2:
    out.append("One seed per network: no interval can be formed, so every comparison between networks with "
               "and without skip connections is inconclusive, whatever the size of the difference.")
  scans = [s for r in ctx.study.runs if (s := landscapes.latest_scan(r, "2d")) is not None]
  if scans:
    n = {str((s.info.get("splits") or {}).get(SPLIT, {}).get("num_examples")) for s in scans}
    pts = {f"{len(s.axes[0])} × {len(s.axes[1])}" for s in scans}
    out.append(f"Landscapes on {', '.join(sorted(n))} training examples at {', '.join(sorted(pts))} points "
               "(Li et al.: the whole training set at 51 × 51); coarse grids smooth out small-scale "
               "non-convexity, and the non-convex share depends on the grid spacing.")
  if any(r.flat_config.get("model.knobs.norm", "batch") == "batch" for r in ctx.study.runs):
    out.append("The landscapes use BatchNorm in eval mode (Li et al.'s convention): every point uses the "
               "running statistics of the trained network, not statistics recomputed for the moved weights; "
               "the Hessian's eigenvalues are of the loss training descends (batch statistics) when "
               "`curvature.bn_mode` is batch, so the two need not agree in detail.")
  return out


TEMPLATE = Template(
    "skip_connections", TITLE,
    "What do skip connections do to the loss landscape and the Hessian, and does that "
    "change with depth? ResNets with and without their skip connections: accuracy, λ_max, |λ_min/λ_max| and "
    "2-D filter-normalized loss landscapes (Li et al. 2018).", _applies, _results, _comparison, _limitations,
    quantities=_quantities)
