"""The study figures, each a function of plain arrays (or runs) returning its matplotlib Figure.

Every function takes `path=None`; with a path it also writes PNG + PDF there (`style.save`). Inputs
are arrays, not file formats, so results that have no run-directory format yet (landscapes,
interpolations, measures, compression) plug in as soon as they exist:
- `training_curves(groups)`: loss and accuracy over steps, train (batch) vs test, mean over seeds with
  the min-max band.
- `seed_curves(seeds, references)`: any quantity over training per condition: the mean over seeds
  (line with markers), a band over seeds (min-max or a t-interval, `interval_text` says which), each
  seed as a thin line, and per-condition reference lines (e.g. 2/eta) dashed in the condition's colour.
- `lambda_max_curves(curves, thresholds)` (or `seeds=`): lambda_max over training with the stability
  thresholds
  (`stability_threshold`: 2/eta for SGD, (2 + 2 beta)/eta with heavy-ball momentum, (2 + 2 b1) /
  ((1 - b1) eta) = 38/eta for Adam's preconditioned sharpness with b1 = 0.9; Cohen et al. 2021, 2022).
- `spectral_density(spectra, top=)`: SLQ densities (log density axis) with the top-k Lanczos eigenvalues
  (and their residual norms) marked; `spectral_density_caption` states the resolution.
- `loss_curve_1d`, `loss_contour_2d`, `loss_surface_3d`: loss landscapes on a grid of step sizes along
  one or two directions (Li et al. 2018); `loss_contours` several 2-D landscapes side by side on one
  colour scale.
- `interpolation_curves`: loss (or accuracy) along a path between two solutions.
- `measure_vs_gap`: a measure against the generalization gap with Kendall's tau (Jiang et al. 2020).
- `dot_whisker(groups)` and `ablation_bars(table, by, metrics)` (dots, despite the old name): the mean
  over seeds per condition as a marker, its interval as whiskers, every seed as a small point, the value
  axis fitted to the data (not from 0), conditions in the order given.
Conventions: a function never pools what the caller did not group (each mapping entry or `by` value is
one condition; `ablation_bars` refuses groups that mix losses); legends show the caller's labels as
given; loss axes take their unit from `loss_name` (`style.loss_unit`); a landscape's centre is "trained
parameters" unless the caller passes `at_minimum=True`.
- `per_class_accuracy` (dots per class, axis fitted), `compression_curves`.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from analysis import stats, style
from research.core import spectral
from research.core.errors import UserError, choices_message

SPLIT_NAMES = {k: style.split_label(k) for k in ("train", "eval_train", "valid", "test")}
BANDS = ("minmax", "t", "std")


def _finish(fig, path):
  if path is not None:
    style.save(fig, path)
  return fig


def stability_threshold(optimizer: str, lr: float, *, momentum: float = 0.9, b1: float = 0.9) -> float | None:
  """The sharpness above which gradient descent on a quadratic diverges, for learning rate `lr`.

  sgd: 2/lr; momentum/nesterov (heavy ball, beta = momentum): (2 + 2 beta)/lr (3.8/lr at 0.9);
  adam/adamw: (2 + 2 b1)/((1 - b1) lr) (38/lr at b1 = 0.9), for the preconditioned sharpness
  (Cohen et al. 2022, "Adaptive gradient methods at the edge of stability"). Other optimizers: None.
  """
  if not lr or lr <= 0:
    return None
  if optimizer == "sgd":
    return 2.0 / lr
  if optimizer in ("momentum", "nesterov"):
    return (2.0 + 2.0 * momentum) / lr
  if optimizer in ("adam", "adamw"):
    return (2.0 + 2.0 * b1) / ((1.0 - b1) * lr)
  return None


def threshold_name(optimizer: str, *, momentum: float = 0.9, b1: float = 0.9) -> str:
  """`2/η`, `3.8/η`, `38/η` (the numerator of `stability_threshold`)."""
  t = stability_threshold(optimizer, 1.0, momentum=momentum, b1=b1)
  return f"{t:.3g}/η" if t is not None else ""


def _epoch_curve(run, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, values) of a metric from the records that carry an `epoch`."""
  pts = sorted((float(r["epoch"]), float(r[metric])) for r in run.metrics
               if isinstance(r.get(metric), int | float) and isinstance(r.get("epoch"), int | float))
  if not pts:
    return np.zeros(0), np.zeros(0)
  e, v = zip(*pts)
  return np.asarray(e, np.float64), np.asarray(v, np.float64)


def _mean_curve(runs, metric: str, x: str = "step") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(steps or epochs, mean, min, max) over the runs of a metric, on the union of their x values."""
  frames = []
  for run in runs:
    s, v = run.curve(metric) if x == "step" else _epoch_curve(run, metric)
    if len(s):
      frames.append(pd.Series(v, index=s))
  if not frames:
    return (np.zeros(0),) * 4
  table = pd.concat(frames, axis=1)
  return (table.index.to_numpy(np.float64), table.mean(axis=1).to_numpy(), table.min(axis=1).to_numpy(),
          table.max(axis=1).to_numpy())


def training_curves(groups: Mapping[str, Sequence], *, splits: Sequence[str] = ("train", "test"),
                    quantities: Sequence[str] = ("loss", "accuracy"), x: str = "step",
                    loss_name: str = "cross_entropy", full_batch: bool | Mapping[str, bool] = False,
                    path: str | Path | None = None):
  """Loss and accuracy over training steps, one colour per group (e.g. a condition's seeds), one line
  style per split (`train` is the running value of the training batches: minibatch, or the whole set
  with `full_batch` (one bool, or one per group label); `eval_train`/`valid`/`test` full-split
  evaluations). Lines are means over the group's runs; the band spans their min and max. x: `step`
  or `epoch` (for runs of different batch sizes). The loss axis is in `style.loss_unit(loss_name)`."""
  if isinstance(full_batch, Mapping):
    kinds = {bool(full_batch.get(k, False)) for k in groups}
    train_name = (style.split_label("train", full_batch=kinds.pop()) if len(kinds) == 1
                  else "train (batch value)")
  else:
    train_name = style.split_label("train", full_batch=bool(full_batch))
  fig, axes = style.figure(ncols=len(quantities), width=min(3.9 * len(quantities), 11.0), height=3.2)
  axes = np.atleast_1d(axes)
  split_styles = {"train": "-", "eval_train": (0, (1, 1)), "valid": "-.", "test": "--"}
  drawn, single = {}, {}  # single: a split evaluated once, drawn as a dot (its line style never shows)
  for ax, q in zip(axes, quantities):
    for i, runs in enumerate(groups.values()):
      for split in splits:
        metric = f"{split}/{q}"
        steps, mean, lo, hi = _mean_curve(runs, metric, x)
        if not len(steps):
          continue
        k = style.scale(metric)
        marker = "o" if len(steps) <= 12 else None
        name = train_name if split == "train" else SPLIT_NAMES.get(split, split)
        ax.plot(steps, k * mean, color=style.color(i), linestyle=split_styles.get(split, "-"), marker=marker,
                markersize=3, label=name)
        drawn.setdefault(split, name)
        single[split] = single.get(split, True) and len(steps) == 1
        if len(runs) > 1:
          ax.fill_between(steps, k * lo, k * hi, color=style.color(i), alpha=0.15, linewidth=0)
    ax.set_xlabel("training step" if x == "step" else "epoch")
    ax.set_ylabel({"loss": style.loss_label(loss_name), "accuracy": "accuracy (%)"}.get(q, q))
    if q == "loss":
      _log_if_wide(ax, "y")
  if len(groups) > 1:  # one entry per condition (colour) and one per split (line style)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=style.color(i), label=str(label)) for i, label in enumerate(groups)]
    handles += [Line2D([], [], color="0.35", marker="o" if single[split] else None, markersize=3,
                       linestyle="none" if single[split] else split_styles.get(split, "-"),
                       label=f"{name} (evaluated once)" if single[split] else name)
                for split, name in drawn.items()]
    if max(len(str(label)) for label in groups) <= 28:
      fig.legend(handles=handles, loc="outside right center")
    else:  # long labels beside the panels would squeeze them: below, in two columns
      fig.legend(handles=handles, loc="outside lower center", ncols=2)
      w, h = fig.get_size_inches()
      fig.set_size_inches(w, h + 0.2 * (len(handles) + 1) / 2)
  else:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
      axes[-1].legend(handles, labels, loc="best")
  return _finish(fig, path)


def _log_if_wide(ax, which: str, ratio: float = 30.0) -> None:
  """Log scale on an axis whose plotted positive data span more than `ratio`."""
  values = []
  for line in ax.get_lines():
    values.append(np.asarray(line.get_ydata() if which == "y" else line.get_xdata(), np.float64))
  if not values:
    return
  v = np.concatenate(values)
  v = v[np.isfinite(v)]
  if len(v) and v.min() > 0 and v.max() / v.min() > ratio:
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")


def interval_text(kind: str, level: float = 0.95, over: str = "seeds") -> str:
  """Caption words for an interval over seeds (or over what `over` names, e.g. runs pooled from a grid):
  `minmax`, `t` (the t-interval of the mean), `std`, or `given` (intervals the caller computed)."""
  if kind not in (*BANDS, "given"):
    raise UserError(choices_message("interval", kind, (*BANDS, "given")))
  return {"minmax": f"min–max over {over}",
          "t": f"{100 * level:g}% t-interval of the mean over {over} (t with n − 1 degrees of freedom)",
          "std": f"mean ± one sample standard deviation over {over}",
          "given": "the interval stated in the caption"}[kind]


def _interval(values: np.ndarray, kind: str, level: float) -> tuple[np.ndarray, np.ndarray]:
  """(lo, hi) along axis 0 of values (num_seeds, ...); NaN where fewer than 2 seeds."""
  n = values.shape[0]
  if n < 2:
    nan = np.full(values.shape[1:], np.nan)
    return nan, nan
  if kind == "minmax":
    return values.min(axis=0), values.max(axis=0)
  mean, sd = values.mean(axis=0), values.std(axis=0, ddof=1)
  half = sd if kind == "std" else float(scipy.stats.t.ppf((1 + level) / 2, n - 1)) * sd / np.sqrt(n)
  return mean - half, mean + half


def _common_steps(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """(steps logged by every seed, values (num_seeds, steps)); finite values only."""
  series = []
  for steps, values in runs:
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    ok = np.isfinite(values)
    series.append(pd.Series(values[ok], index=steps[ok]).groupby(level=0).last())
  if not series:
    return np.zeros(0), np.zeros((0, 0))
  table = pd.concat(series, axis=1, join="inner").sort_index()
  return table.index.to_numpy(np.float64), table.to_numpy(np.float64).T


def seed_curves(seeds: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], *,
                references: Mapping[str, float] | None = None, reference_label: str = "2/η",
                common_reference: tuple[float, str] | None = None,
                reference_band: tuple[float, float, str] | None = None, band: str = "minmax",
                level: float = 0.95, show_seeds: bool = True, xlabel: str = "training step",
                ylabel: str = "top Hessian eigenvalue $\\lambda_{\\max}$",
                styles: Mapping[str, tuple[int, str]] | None = None, path: str | Path | None = None):
  """A quantity over training per condition, its seeds shown. seeds: condition label -> one
  (steps (n,), values (n,)) per seed; each label is one condition (nothing else is pooled).

  Per condition (one colour): the mean over seeds as a line with markers, at the steps every seed logged;
  a band (`band`: `minmax`, `t` = the `level` t-interval of the mean, `std`; none for one seed;
  `interval_text(band, level)` words it for the caption); each seed as a thin line (`show_seeds`).
  references: label -> a horizontal line in that condition's colour, dashed, annotated
  `{reference_label} = value` (e.g. the stability threshold 2/η); references more than 5x above the data
  are named in a note instead of flattening the curves. common_reference: (value, legend name), one grey
  dashed line for all (e.g. 1 for λ_max / threshold). reference_band: (low, high, legend name), a grey
  shaded band behind the curves (e.g. the window [0.9, 1.1] around that line). styles: label -> (colour
  index, marker) for conditions of a two-factor grid (colour by one factor, marker by the other); by
  default each condition has its own colour and circles. The value axis is logarithmic when the data
  span more than 10x.
  """
  if band not in BANDS:
    raise UserError(choices_message("band", band, BANDS))
  references = {k: t for k, t in (references or {}).items()
                if k in seeds and t is not None and np.isfinite(t)}
  fig, ax = style.figure()
  every = []
  for i, (label, runs) in enumerate(seeds.items()):
    ci, marker = (styles or {}).get(label, (i, "o"))
    c = style.color(ci)
    if show_seeds and len(runs) > 1:
      for steps, values in runs:
        ax.plot(steps, values, color=c, linewidth=0.6, alpha=0.45, linestyle="-")
    steps, values = _common_steps(runs)
    every += [np.asarray(v, np.float64).ravel() for _, v in runs]
    if not len(steps):
      continue
    mean = values.mean(axis=0)
    lo, hi = _interval(values, band, level)
    if np.isfinite(lo).any():
      ax.fill_between(steps, lo, hi, color=c, alpha=0.18, linewidth=0)
      every += [lo, hi]
    ax.plot(steps, mean, color=c, linestyle="-", marker=marker if len(steps) <= 60 else None,
            markersize=3.5, label=label)
  v = np.concatenate(every) if every else np.zeros(0)
  v = v[np.isfinite(v)]
  top = float(v.max()) if len(v) else 1.0
  shown = {k: t for k, t in references.items() if t <= 5 * max(top, 1e-12)}
  order = list(seeds)
  shared = len(shown) > 1 and len(set(shown.values())) == 1  # one line for all: drawn once, in grey
  for k, t in (list(shown.items())[:1] if shared else shown.items()):
    c = "0.3" if shared else style.color(order.index(k))
    ax.axhline(t, color=c, linestyle="--", linewidth=1.1, alpha=0.9)
    ax.annotate(f"{reference_label} = {t:.3g}" + (" (every condition)" if shared else ""), xy=(0.01, t),
                xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points", ha="left",
                va="bottom", fontsize=7.5, color=c)
  if common_reference is not None:
    ax.axhline(common_reference[0], color="0.3", linestyle="--", linewidth=1.1, label=common_reference[1])
  if reference_band is not None:
    ax.axhspan(reference_band[0], reference_band[1], color="0.55", alpha=0.15, linewidth=0, zorder=0,
               label=reference_band[2])
  far = sorted({f"{t:.3g}" for k, t in references.items() if k not in shown}, key=float)
  if far:
    ax.text(0.01, 0.98, f"{reference_label} = {', '.join(far)}: above the plotted range", fontsize=7.5,
            transform=ax.transAxes, ha="left", va="top", color="0.3")
  if len(v) and v.min() > 0 and v.max() / v.min() > 10:  # e.g. sharp at initialization, flat after
    ax.set_yscale("log")
  elif len(v) and v.min() >= 0:
    ax.set_ylim(0, 1.1 * max([top, *shown.values(), *([common_reference[0]] if common_reference else []),
                              *([reference_band[1]] if reference_band else [])]))
  if references:
    ax.plot([], [], color="0.3", linestyle="--", linewidth=1.1, label=f"threshold {reference_label}")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  _legend(fig, ax, ax.get_legend_handles_labels()[1])
  return _finish(fig, path)


def lambda_max_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                      thresholds: Mapping[str, float] | None = None, *, threshold_label: str = "2/η",
                      ylabel: str = "top Hessian eigenvalue $\\lambda_{\\max}$",
                      normalized: bool = False, seeds: Mapping[str, Sequence[tuple]] | None = None,
                      band: str = "minmax", level: float = 0.95, show_seeds: bool = True,
                      window: tuple[float, float] | None = None, path: str | Path | None = None):
  """lambda_max over training steps per curve (e.g. per learning rate), each with its stability
  threshold as a dashed horizontal line of the same colour (Cohen et al. 2021, edge of stability).

  curves: label -> (steps (n,), lambda_max (n,)); thresholds: label -> threshold (same units).
  seeds: label -> one (steps, lambda_max) per seed, instead of `curves`: drawn by `seed_curves` (mean
  with markers, `band` over seeds, thin seed lines); the caption should say `interval_text(band, level)`.
  normalized: plot lambda_max / threshold instead, with one line at 1 (for curves whose thresholds
  differ by orders of magnitude, e.g. GD's 2/eta next to Adam's 38/eta); curves without a threshold
  are left out, and the thresholds are listed in a note above the axes (the legend keeps the caller's
  labels). window: (low, high) multiples of the threshold shaded grey in a normalized plot (e.g. the
  [0.9, 1.1] within which Cohen et al. 2021 see λ_max hover).
  """
  thresholds = thresholds or {}
  if seeds is not None:
    if not normalized:
      return seed_curves(seeds, references=thresholds, reference_label=threshold_label, band=band,
                         level=level, show_seeds=show_seeds, ylabel=ylabel, path=path)
    scaled = {k: [(st, np.asarray(v, np.float64) / thresholds[k]) for st, v in rs] for k, rs in seeds.items()
              if thresholds.get(k) is not None and np.isfinite(thresholds[k]) and thresholds[k] > 0}
    named = "" if threshold_label == "threshold" else f" ({threshold_label})"
    fig = seed_curves(scaled, common_reference=(1.0, "threshold"), reference_band=_window_band(window),
                      band=band, level=level, show_seeds=show_seeds,
                      ylabel=f"$\\lambda_{{\\max}}$ / threshold{named}")
    _threshold_note(fig.axes[0], {k: thresholds[k] for k in scaled})
    return _finish(fig, path)
  if curves is None:
    raise UserError("lambda_max_curves needs `curves` (label -> (steps, values)) or `seeds`")
  if normalized:
    return _normalized_lambda_curves(curves, thresholds, threshold_label, path, window)
  fig, ax = style.figure()
  top = 0.0
  for i, (label, (steps, values)) in enumerate(curves.items()):
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    ax.plot(steps, values, color=style.color(i), linestyle="-", marker="o" if len(steps) <= 25 else None,
            markersize=3, label=label)
    if len(values) and np.isfinite(values).any():
      top = max(top, float(np.nanmax(values)))
    t = thresholds.get(label)
    if t is not None and np.isfinite(t):
      ax.axhline(t, color=style.color(i), linestyle="--", linewidth=1.1, alpha=0.9)
  finite_t = {k: t for k, t in thresholds.items() if t is not None and np.isfinite(t)}
  # Thresholds within 5x of the curves are drawn in view; farther ones would flatten the curves, so
  # they are named in a note at the top instead.
  shown = {k: t for k, t in finite_t.items() if t <= 5 * max(top, 1e-12)}
  values = np.concatenate([np.asarray(v, np.float64) for _, v in curves.values()] or [np.zeros(0)])
  values = values[np.isfinite(values)]
  if len(values) and values.min() > 0 and values.max() / values.min() > 30:
    # values over decades (e.g. sharp at initialization, flat at the end): a log axis keeps both legible
    ax.set_yscale("log")
    ax.set_ylim(0.8 * min([values.min(), *shown.values()]), 1.25 * max([top, *shown.values()]))
  else:
    ax.set_ylim(0, 1.1 * max([top, *shown.values()]) if top > 0 or shown else 1.0)
  for i, label in enumerate(curves):
    if label in shown:
      ax.annotate(f"{threshold_label} = {shown[label]:.3g}", xy=(0.01, shown[label]),
                  xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points", ha="left",
                  va="bottom", fontsize=7.5, color=style.color(i))
  far = sorted({f"{t:.3g}" for k, t in finite_t.items() if k not in shown}, key=float)
  if far:
    ax.text(0.01, 0.98, f"{threshold_label} = {', '.join(far)}: above the plotted range", fontsize=7.5,
            transform=ax.transAxes, ha="left", va="top", color="0.3")
  ax.set_xlabel("training step")
  ax.set_ylabel(ylabel)
  if finite_t:
    ax.plot([], [], color="0.3", linestyle="--", linewidth=1.1, label=f"threshold {threshold_label}")
  _legend(fig, ax, curves)
  return _finish(fig, path)


def _legend(fig, ax, labels) -> None:
  """Inside the axes for up to 3 short labels; right of them for more; below them, one per line, for
  long ones."""
  if max((len(str(k)) for k in labels), default=0) <= 28:
    if len(labels) <= 3:
      ax.legend(loc="best")
    else:
      ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
      w, h = fig.get_size_inches()
      fig.set_size_inches(w + 0.075 * max(len(str(k)) for k in labels), h)
    return
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7.5, frameon=False)
  fig.set_size_inches(fig.get_size_inches()[0], fig.get_size_inches()[1] + 0.22 * (len(labels) + 1))


def _window_band(window: tuple[float, float] | None) -> tuple[float, float, str] | None:
  return None if window is None else (window[0], window[1], f"[{window[0]:g}, {window[1]:g}] × threshold")


def _normalized_lambda_curves(curves, thresholds, threshold_label, path, window=None):
  fig, ax = style.figure()
  for i, (label, (steps, values)) in enumerate(curves.items()):
    t = thresholds.get(label)
    if t is None or not np.isfinite(t) or t <= 0:
      continue
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    ax.plot(steps, values / t, color=style.color(i), linestyle=style.linestyle(i),
            marker="o" if len(steps) <= 25 else None, markersize=3, label=label)
  ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1.1, label="threshold")
  band = _window_band(window)
  if band is not None:
    ax.axhspan(band[0], band[1], color="0.55", alpha=0.15, linewidth=0, zorder=0, label=band[2])
  _threshold_note(ax, {k: thresholds[k] for k in curves
                       if thresholds.get(k) is not None and np.isfinite(thresholds[k]) and thresholds[k] > 0})
  ax.set_ylim(0, None)
  ax.set_xlabel("training step")
  named = "" if threshold_label == "threshold" else f" ({threshold_label})"
  ax.set_ylabel(f"$\\lambda_{{\\max}}$ / threshold{named}")
  _legend(fig, ax, ax.get_legend_handles_labels()[1])
  return _finish(fig, path)


def _threshold_note(ax, thresholds: Mapping[str, float]) -> None:
  """The thresholds of a normalized plot as a note above the axes, left-aligned, broken between entries
  (inside the axes it covered curves and tick labels); legend labels stay as given."""
  if not thresholds:
    return
  width = max(40, int(16 * ax.figure.get_size_inches()[0]))  # characters per line at 7 pt
  lines, line = [], "thresholds:"
  for k, t in thresholds.items():
    item = f"{k}: {t:.3g}"
    if len(line) + len(item) + 2 > width and line != "thresholds:":
      lines.append(line + ";")
      line = item
    else:
      line = f"{line} {item}" if line == "thresholds:" else f"{line}; {item}"
  ax.set_title("\n".join([*lines, line]), loc="left", fontsize=7, color="0.3")


@dataclasses.dataclass(frozen=True)
class _Quadrature:
  """SLQ nodes and weights as read from a run's .npz (the operator's size is not needed here)."""
  nodes: np.ndarray
  weights: np.ndarray
  size: int = 0


def _quadrature(nodes, weights) -> _Quadrature:
  as_2d = lambda a: np.atleast_2d(np.asarray(a, np.float64))
  return _Quadrature(as_2d(nodes), as_2d(weights))


def _density_setup(quads) -> tuple[np.ndarray, float]:
  """(grid (1500,), kernel width sigma): the node range padded by 4%, sigma 1/200 of the range."""
  live = np.concatenate([q.nodes[q.weights > 0] for q in quads.values()])
  lo, hi = float(live.min()), float(live.max())
  pad = 0.04 * (hi - lo + 1e-12)
  return np.linspace(lo - pad, hi + pad, 1500), max((hi - lo) / 200, 1e-12)


def spectral_density(spectra: Mapping[str, tuple[np.ndarray, np.ndarray]], *, num_params: int | None = None,
                     xlabel: str = "Hessian eigenvalue", top: Mapping[str, np.ndarray] | None = None,
                     residuals: Mapping[str, np.ndarray] | None = None, path: str | Path | None = None):
  """Smoothed SLQ spectral densities on a log density axis, with the top-k Lanczos eigenvalues marked.

  spectra: label -> (nodes, weights), each (num_probes, num_steps) as `density.slq` returns them
  (research.core.spectral.smooth). The kernel width is 1/200 of the node range; the density axis is cut
  7 decades below its peak. top: label -> the top-k eigenvalues of a separate Lanczos eigensolve, drawn as
  triangles along the bottom, with `residuals` (label -> residual norms ||H v - θ v||, which bound the
  distance from θ to the nearest eigenvalue) as horizontal error bars. Legend entries are the labels as
  given. `spectral_density_caption` states the resolution.
  """
  top, residuals = dict(top or {}), dict(residuals or {})
  quads = {k: _quadrature(*v) for k, v in spectra.items()}
  grid, sigma = _density_setup(quads)
  fig, ax = style.figure()
  peak = 0.0
  for i, (label, q) in enumerate(quads.items()):
    dens = spectral.smooth(q, grid, sigma)
    peak = max(peak, float(dens.max()))
    ax.plot(grid, np.maximum(dens, 1e-300), color=style.color(i), linestyle=style.linestyle(i), label=label)
  ax.set_yscale("log")
  floor = peak * 1e-7
  ax.set_ylim(floor, peak * 3)
  order = list(quads)
  first = True
  for label, values in top.items():  # a rug of triangles per spectrum along the bottom edge
    i = order.index(label) if label in order else len(order) + list(top).index(label)
    values = np.asarray(values, np.float64)
    y = np.full(len(values), floor * 2.2 * (2.6 ** i))
    err = residuals.get(label)
    if err is not None:
      ax.errorbar(values, y, xerr=np.asarray(err, np.float64), linestyle="none", ecolor=style.color(i),
                  elinewidth=0.9, capsize=2)
    ax.plot(values, y, linestyle="none", marker="^", color=style.color(i), markersize=4.5,
            markeredgecolor="white", markeredgewidth=0.4,
            label="top Lanczos eigenvalues" if first else None)
    first = False
  ax.set_xlabel(xlabel)
  ax.set_ylabel("spectral density (log scale)")
  ax.legend(loc="upper right")
  return _finish(fig, path)


def spectral_density_caption(spectra: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                             top: Mapping[str, np.ndarray] | None = None,
                             residuals: Mapping[str, np.ndarray] | None = None) -> str:
  """The resolution of `spectral_density`'s figure in words: the Gaussian kernel width, the Lanczos steps
  and probes of each spectrum, and what the triangles are (the same inputs as the figure)."""
  quads = {k: _quadrature(*v) for k, v in spectra.items()}
  _, sigma = _density_setup(quads)
  shapes = {(q.nodes.shape[0], q.nodes.shape[1]) for q in quads.values()}
  if len(shapes) == 1:
    probes, steps = shapes.pop()
    setting = f"{steps} Lanczos steps, {probes} probe vector{'s' if probes != 1 else ''}"
  else:
    setting = "; ".join(f"{k}: {q.nodes.shape[1]} Lanczos steps, {q.nodes.shape[0]} probes"
                        for k, q in quads.items())
  live = np.concatenate([q.nodes[q.weights > 0] for q in quads.values()])
  steps = max(q.nodes.shape[1] for q in quads.values())
  spacing = float(live.max() - live.min()) / max(steps, 1)
  text = (f"Stochastic Lanczos quadrature ({setting}), smoothed with a Gaussian kernel of width "
          f"σ = {sigma:.3g} (1/200 of the node range). With {steps} nodes per probe the nodes are about "
          f"{spacing:.3g} apart: features of the density narrower than about {max(spacing, sigma):.3g} are "
          "not resolved.")
  if top:
    ks = sorted({len(np.atleast_1d(v)) for v in top.values()})
    text += (f" Triangles (\"top Lanczos eigenvalues\"): the top {'/'.join(map(str, ks))} eigenvalue"
             f"{'' if ks == [1] else 's'} of a separate Lanczos eigensolve"
             + (", whiskers their residual norms ‖Hv − θv‖" if residuals else "."))
    if residuals:
      res = np.concatenate([np.atleast_1d(np.asarray(v, np.float64)) for v in residuals.values()])
      res = res[np.isfinite(res)]
      text += (f" (at most {res.max():.2g}: whiskers shorter than the triangles are hidden by them)."
               if len(res) else ".")
  return text


def centre_label(at_minimum: bool = False) -> str:
  """What a landscape's centre θ is called: `trained parameters`, or `minimum` only when the caller has
  established that it is one (e.g. training accuracy near 100% and a vanishing gradient)."""
  return "minimum" if at_minimum else "trained parameters"


def loss_curve_1d(alphas: np.ndarray, losses: Mapping[str, np.ndarray], *,
                  xlabel: str = "step along the direction α", ylabel: str | None = None,
                  loss_name: str = "cross_entropy", at_minimum: bool = False, path: str | Path | None = None):
  """1-D loss landscape: loss(θ + α d) against α, one line per label (e.g. train and test); the centre
  α = 0 a dotted line named `centre_label(at_minimum)`. ylabel: default `style.loss_label(loss_name)`."""
  ylabel = style.loss_label(loss_name) if ylabel is None else ylabel
  fig, ax = style.figure()
  for i, (label, values) in enumerate(losses.items()):
    ax.plot(alphas, values, color=style.color(i), linestyle=style.linestyle(i), label=label)
  ax.axvline(0.0, color="0.5", linewidth=0.8, linestyle=":", label=centre_label(at_minimum))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  _log_if_wide(ax, "y", 100.0)
  ax.legend(loc="best")
  return _finish(fig, path)


def _levels(losses: np.ndarray, num: int = 25) -> tuple[np.ndarray, bool]:
  finite = losses[np.isfinite(losses)]
  lo, hi = float(finite.min()), float(finite.max())
  if lo > 0 and hi / lo > 20:
    return np.geomspace(lo, hi, num), True
  return np.linspace(lo, hi + 1e-12, num), False


def loss_contour_2d(xs: np.ndarray, ys: np.ndarray, losses: np.ndarray, *,
                    xlabel: str = "direction 1, α", ylabel: str = "direction 2, β",
                    loss_name: str = "cross_entropy", at_minimum: bool = False,
                    path: str | Path | None = None):
  """2-D loss landscape as filled contours: losses (len(ys), len(xs)) at θ + α d1 + β d2; the centre
  (0, 0) is starred as `centre_label(at_minimum)` ("trained parameters" unless at_minimum). Contour
  levels are log-spaced when the loss spans more than 20x; the colour bar in `style.loss_unit(loss_name)`."""
  import matplotlib.colors

  losses = np.asarray(losses, np.float64)
  levels, logscale = _levels(losses)
  fig, ax = style.figure(width=4.6, height=3.8)
  norm = matplotlib.colors.LogNorm(levels[0], levels[-1]) if logscale else None
  filled = ax.contourf(xs, ys, np.clip(losses, levels[0], levels[-1]), levels=levels, norm=norm,
                       cmap="viridis")
  ax.contour(xs, ys, losses, levels=levels[::3], colors="white", linewidths=0.5, alpha=0.6, norm=norm)
  ax.plot([0], [0], marker="*", color=style.OKABE_ITO["vermillion"], markersize=10, linestyle="none",
          label=centre_label(at_minimum))
  cbar = fig.colorbar(filled, ax=ax, shrink=0.85, aspect=25)
  ticks = levels[::6] if len(levels) > 6 else levels
  cbar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
  cbar.ax.minorticks_off()
  cbar.set_label(style.loss_label(loss_name) + (", log scale" if logscale else ""))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_aspect("equal", adjustable="box")
  ax.grid(False)
  ax.legend(loc="upper right")
  return _finish(fig, path)


def loss_contours(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *, ncols: int = 2,
                  xlabel: str = "α", ylabel: str = "β", loss_name: str = "cross_entropy",
                  at_minimum: bool = False, path: str | Path | None = None):
  """Several 2-D landscapes, one panel per label, all with the same contour levels and colour bar:
  panels[label] = (xs, ys, losses of shape (len(ys), len(xs))); the centre (0, 0) is starred and named
  `centre_label(at_minimum)` in a legend below the panels.
  Levels are log-spaced when the losses span more than 20x (Li et al. 2018 draw fixed levels too)."""
  import matplotlib.colors

  labels = list(panels)
  ncols = max(1, min(ncols, len(labels)))
  nrows = -(-len(labels) // ncols)
  levels, logscale = _levels(np.concatenate([np.asarray(v[2], np.float64).ravel() for v in panels.values()]))
  norm = matplotlib.colors.LogNorm(levels[0], levels[-1]) if logscale else None
  fig, axes = style.figure(ncols, nrows, width=3.2 * ncols + 0.9, height=3.0 * nrows + 0.2, squeeze=False)
  filled = None
  for k, ax in enumerate(axes.ravel()):
    if k >= len(labels):
      ax.set_visible(False)
      continue
    xs, ys, losses = panels[labels[k]]
    losses = np.asarray(losses, np.float64)
    filled = ax.contourf(xs, ys, np.clip(losses, levels[0], levels[-1]), levels=levels, norm=norm,
                         cmap="viridis")
    ax.contour(xs, ys, losses, levels=levels[::3], colors="white", linewidths=0.5, alpha=0.6, norm=norm)
    ax.plot([0], [0], marker="*", color=style.OKABE_ITO["vermillion"], markersize=9, linestyle="none",
            label=centre_label(at_minimum) if k == 0 else None)
    ax.set_title(labels[k], fontsize=9)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(False)
    if k % ncols == 0:
      ax.set_ylabel(ylabel)
    if k // ncols == nrows - 1 or k + ncols >= len(labels):
      ax.set_xlabel(xlabel)
  cbar = fig.colorbar(filled, ax=axes, shrink=0.85, aspect=30)
  fig.legend(*axes.ravel()[0].get_legend_handles_labels(), loc="outside lower center")
  ticks = levels[::6] if len(levels) > 6 else levels
  cbar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
  cbar.ax.minorticks_off()
  cbar.set_label(style.loss_label(loss_name) + (", log scale" if logscale else ""))
  return _finish(fig, path)


def loss_surface_3d(xs: np.ndarray, ys: np.ndarray, losses: np.ndarray, *,
                    xlabel: str = "α", ylabel: str = "β", loss_name: str = "cross_entropy",
                    path: str | Path | None = None):
  """2-D loss landscape as a 3-D surface (losses (len(ys), len(xs))), z in `style.loss_unit(loss_name)`."""
  import matplotlib.pyplot as plt

  with style.context():
    fig = plt.figure(figsize=(5.0, 4.0), layout="constrained")
    ax = fig.add_subplot(projection="3d")
  xx, yy = np.meshgrid(xs, ys)
  ax.plot_surface(xx, yy, np.asarray(losses, np.float64), cmap="viridis", linewidth=0, antialiased=True,
                  rcount=min(len(ys), 60), ccount=min(len(xs), 60))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_zlabel(style.loss_label(loss_name))
  from matplotlib.ticker import MaxNLocator

  for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
    axis.set_major_locator(MaxNLocator(5))
  ax.tick_params(labelsize=8)
  ax.view_init(elev=32, azim=-60)
  return _finish(fig, path)


def interpolation_curves(alphas: np.ndarray, curves: Mapping[str, np.ndarray], *, metric: str = "loss",
                         xlabel: str = "interpolation coefficient α (0: θ_A, 1: θ_B)",
                         loss_name: str = "cross_entropy", path: str | Path | None = None):
  """A metric along the path θ(α) between two solutions (e.g. linear interpolation), one line per
  label (train, test; or one per pair). Accuracy is shown in percent, loss in `style.loss_unit`."""
  fig, ax = style.figure()
  k = 100.0 if metric == "accuracy" else 1.0
  for i, (label, values) in enumerate(curves.items()):
    ax.plot(alphas, k * np.asarray(values), color=style.color(i), linestyle=style.linestyle(i), label=label,
            marker="o" if len(alphas) <= 25 else None, markersize=3)
  ax.set_xlabel(xlabel)
  ax.set_ylabel({"loss": style.loss_label(loss_name), "accuracy": "accuracy (%)"}.get(metric, metric))
  ax.legend(loc="best")
  return _finish(fig, path)


def measure_vs_gap(measure: np.ndarray, gap: np.ndarray, *, measure_name: str,
                   gap_name: str | None = None, groups: Sequence[str] | None = None,
                   loss_name: str = "cross_entropy", path: str | Path | None = None):
  """Scatter of a measure (one point per run) against the generalization gap, Kendall's tau in the
  title: over all runs, and when the runs come from several conditions (`groups`) the title says it is
  pooled across them (a between-condition difference can make it, or hide one within conditions). Only
  groups with a point are in the legend. The measure axis is logarithmic when positive and spanning
  more than 30x. gap_name: default the loss gap in `style.loss_unit(loss_name)`."""
  gap_name = style.metric_label("gap/loss", loss_name) if gap_name is None else gap_name
  measure, gap = np.asarray(measure, np.float64), np.asarray(gap, np.float64)
  tau, p, n = stats.kendall_tau(measure, gap)
  fig, ax = style.figure(width=4.6, height=3.5)
  drawn = np.isfinite(measure) & np.isfinite(gap)
  pooled = 0
  if groups is not None:
    groups = list(groups)
    pooled = len({g for g, ok in zip(groups, drawn) if ok})
    keep = [g for g, ok in zip(groups, drawn) if ok]
    measure, gap, groups = measure[drawn], gap[drawn], keep
  if groups is None:
    ax.plot(measure, gap, linestyle="none", marker="o", color=style.color(0), alpha=0.85)
  else:
    for i, g in enumerate(dict.fromkeys(groups)):
      sel = np.array([x == g for x in groups])
      ax.plot(measure[sel], gap[sel], linestyle="none", marker="osD^v<>p"[i % 8], color=style.color(i),
              label=str(g), alpha=0.85)
    if len(set(groups)) <= 3:
      ax.legend(loc="best")
    else:  # outside: a legend of many groups inside the axes covers points
      ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
      w, h = fig.get_size_inches()
      fig.set_size_inches(w + 0.075 * max(len(str(g)) for g in groups), h)
  ok = np.isfinite(measure)
  if ok.any() and measure[ok].min() > 0 and measure[ok].max() / measure[ok].min() > 30:
    ax.set_xscale("log")
  ax.set_xlabel(measure_name)
  ax.set_ylabel(gap_name)
  over = f", pooled over {pooled} conditions" if pooled > 1 else ""
  ax.set_title(f"Kendall τ = {tau:.2f} (n = {n}{over}, p = {p:.2g})" if np.isfinite(tau) else f"n = {n}",
               fontsize=10, loc="left")
  return _finish(fig, path)


# caption words for `_dots` panels drawn on logs (heavy-tailed positive values; see `_dots`)
LOG_PANELS = ("A panel on a log axis holds positive values spanning more than 10x over all its seeds: its "
              "markers are geometric means and its whiskers the same intervals computed on the logs.")


def _dots(ax, groups: Mapping, intervals: Mapping | None, error: str, level: float,
          scale: float = 1.0, colors: Mapping[str, int] | None = None) -> None:
  """Draws one condition per x position 0, 1, ... in the order of `groups` (label -> seed values):
  every seed a small jittered grey point left of the position, the mean a coloured marker right of it,
  whiskers from `intervals[label]` = (lo, hi) when given, else `_interval(error)`. The value axis is
  fitted to what is drawn (matplotlib's data limits; never extended to 0). Positive values whose seeds
  span more than 10x (a heavy tail: a mean and t-interval would be set by one seed and run below 0) are
  drawn on a log axis with the geometric mean and `error` computed on the logs (`LOG_PANELS` says so).
  colors: label -> colour index (default: the position), so that a label keeps its colour in panels that
  leave some conditions out."""
  rng = np.random.default_rng(0)
  intervals = intervals or {}
  drawn = []
  every = [scale * np.asarray(pd.to_numeric(pd.Series(list(v)), errors="coerce"), np.float64)
           for v in groups.values()]
  every = np.concatenate(every) if every else np.zeros(0)
  every = every[np.isfinite(every)]
  logs = (not intervals and len(every) > 1 and every.min() > 0 and every.max() / every.min() > 10
          and error != "minmax")
  for i, (label, values) in enumerate(groups.items()):
    x = scale * np.asarray(pd.to_numeric(pd.Series(list(values)), errors="coerce"), np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
      continue
    ax.plot(i - 0.12 + rng.uniform(-0.06, 0.06, len(x)), x, linestyle="none", marker="o", markersize=3,
            color="0.35", alpha=0.75, markeredgewidth=0)
    color = style.color((colors or {}).get(label, i))
    mean = float(np.exp(np.log(x).mean())) if logs else float(x.mean())
    if label in intervals and intervals[label] is not None:
      lo, hi = (scale * float(v) for v in intervals[label])
    elif logs:
      lo, hi = (float(np.exp(v[0])) for v in _interval(np.log(x)[:, None], error, level))
    else:
      lo, hi = (float(v[0]) for v in _interval(x[:, None], error, level))
    if np.isfinite(lo) and np.isfinite(hi):
      ax.errorbar(i + 0.12, mean, yerr=[[max(mean - lo, 0.0)], [max(hi - mean, 0.0)]], color=color,
                  capsize=4, linewidth=1.4, linestyle="none")
      drawn += [lo, hi]
    ax.plot(i + 0.12, mean, linestyle="none", marker="D", markersize=6, color=color,
            markeredgecolor="black", markeredgewidth=0.5)
    drawn += [*x, mean]
  labels = [str(k) for k in groups]
  long = max(map(len, labels), default=0) > 10  # slanted; steeper when many would overlap
  ax.set_xticks(range(len(labels)), labels, rotation=(60 if len(labels) > 5 else 30) if long else 0,
                ha="right" if long else "center", rotation_mode="anchor" if long else "default")
  ax.set_xlim(-0.6, len(labels) - 0.4)
  ax.grid(axis="x", visible=False)
  v = np.asarray(drawn, np.float64)
  v = v[np.isfinite(v)]
  if logs or (len(v) and v.min() > 0 and v.max() / v.min() > 50):
    ax.set_yscale("log")
  elif scale == 100 and len(v) and v.max() <= 100 and ax.get_ylim()[1] > 100:
    # percentages (accuracy, accuracy points) never run past 100: matplotlib pads equal values by +-4%
    bottom = min(ax.get_ylim()[0], v.min() - 1)
    ax.set_ylim(bottom, 100 + 0.03 * (100 - bottom))


def dot_whisker(groups: Mapping[str, Sequence[float]], *,
                intervals: Mapping[str, tuple[float, float]] | None = None, error: str = "t",
                level: float = 0.95, ylabel: str = "", xlabel: str = "", scale: float = 1.0,
                path: str | Path | None = None):
  """Dot-and-whisker plot of one quantity: per condition (label -> the values of its seeds; one entry is
  one condition, nothing else is pooled) the mean as a marker, whiskers from `intervals[label]` = (lo, hi)
  (the caller's interval, in the units of the values) or, when not given, `error` over the seeds
  (`t`, `std`, `minmax`; `interval_text` words it), and every seed as a small jittered point. Conditions
  appear left to right in the order of `groups`; the value axis is fitted to the data, not started at 0.
  scale multiplies values and intervals (100 for accuracies in percent)."""
  if error not in BANDS:
    raise UserError(choices_message("error", error, BANDS))
  fig, ax = style.figure(width=max(3.2, min(0.9 * len(groups) + 1.6, 11.0)), height=3.2)
  _dots(ax, groups, intervals, error, level, scale)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  return _finish(fig, path)


def ablation_bars(table: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str], *,
                  order: Sequence | None = None, error: str = "std",
                  intervals: Mapping[str, Mapping] | None = None, level: float = 0.95,
                  loss_name: str = "cross_entropy", constant: Sequence[str] = ("loss.name",),
                  path: str | Path | None = None):
  """One dot-and-whisker panel per metric (`_dots`; the name is historical: no bars). A condition is a
  distinct value of `by` (a column, or several: tuples of their values), in `order` or order of first
  appearance; its rows are its seeds. Whiskers: intervals[metric][condition] = (lo, hi) in the metric's
  own units when given, else `error` over the seeds (`std`: one sample standard deviation, `ci` or `t`:
  the `level` t-interval of the mean, `minmax`); `interval_text` words it for the caption.
  constant: columns that must not vary within a condition (default: the loss, so MSE and cross-entropy
  runs are never pooled as if seeds); a violation raises UserError naming the column."""
  error = "t" if error == "ci" else error
  if error not in BANDS:
    raise UserError(choices_message("error", error, (*BANDS, "ci")))
  cols = [by] if isinstance(by, str) else list(by)
  key = (table[cols[0]] if len(cols) == 1
         else pd.Series(list(zip(*(table[c] for c in cols))), index=table.index))
  values = list(order) if order is not None else list(dict.fromkeys(key.tolist()))
  for c in constant:
    if c in table.columns and c not in cols:
      for v in values:
        seen = table.loc[key == v, c].dropna().astype(str).unique()
        if len(seen) > 1:
          raise UserError(f"condition {v!r} of {', '.join(cols)} mixes {c} = {', '.join(seen)}; group by {c} "
                          "too, or select one")
  fig, axes = style.figure(ncols=len(metrics), width=min(2.7 * len(metrics) + 0.6, 11.0), height=3.0)
  axes = np.atleast_1d(axes)
  names = [v if len(cols) == 1 else ", ".join(map(str, v)) for v in values]
  for ax, metric in zip(axes, metrics):
    groups = {name: table.loc[key == v, metric].tolist() for name, v in zip(names, values)}
    # a condition without this metric (e.g. runs that do not measure it) takes no slot in its panel
    groups = {k: x for k, x in groups.items()
              if np.isfinite(pd.to_numeric(pd.Series(x, dtype=object), errors="coerce")).any()} or groups
    given = (intervals or {}).get(metric)
    given = {(v if len(cols) == 1 else ", ".join(map(str, v))): given[v] for v in values if v in given} \
        if given else None
    _dots(ax, groups, given, error, level, style.scale(metric), colors={k: i for i, k in enumerate(names)})
    ax.set_xlabel(", ".join(c.rsplit(".", 1)[-1] for c in cols))
    ax.set_ylabel(style.metric_label(metric, loss_name))
  return _finish(fig, path)


def per_class_accuracy(class_names: Sequence[str], accuracies: Mapping[str, np.ndarray], *,
                       path: str | Path | None = None):
  """Accuracy per class as dots (no bars from 0): accuracies: label -> (num_classes,) or
  (num_seeds, num_classes) in [0, 1]. Per class, each label's mean is a marker (side by side in the
  order given), whiskers span the min–max over seeds when there are several (a mean ± std would run past
  100% for classes near it), seeds are small points; the value axis is fitted to the data."""
  n = len(class_names)
  m = len(accuracies)
  fig, ax = style.figure(width=max(5.5, min(0.55 * n * max(m, 1) + 1.5, 11.0)), height=3.3)
  width = 0.8 / max(m, 1)
  for i, (label, acc) in enumerate(accuracies.items()):
    acc = 100.0 * np.atleast_2d(np.asarray(acc, np.float64))
    x = np.arange(n) + (i - (m - 1) / 2) * width
    mean = acc.mean(axis=0)
    if acc.shape[0] > 1:
      ax.plot(np.broadcast_to(x - 0.3 * width, acc.shape).ravel(), acc.ravel(), linestyle="none", marker="o",
              markersize=2, color=style.color(i), alpha=0.5, markeredgewidth=0)
    spread = np.stack([mean - acc.min(axis=0), acc.max(axis=0) - mean]) if acc.shape[0] > 1 else None
    ax.errorbar(x, mean, yerr=spread, color=style.color(i),
                linestyle="none", marker="D", markersize=4.5, capsize=2, elinewidth=0.9, label=label)
  ax.set_xticks(range(n), list(class_names), rotation=30 if max(map(len, class_names)) > 5 else 0,
                ha="right" if max(map(len, class_names)) > 5 else "center")
  ax.set_xlim(-0.6, n - 0.4)
  ax.set_xlabel("class")
  ax.set_ylabel("accuracy (%)")
  ax.grid(axis="x", visible=False)
  if m > 1:  # above the axes: inside, it would cover the dots; as many columns as fit the width
    per_column = 0.075 * max(len(str(k)) for k in accuracies) + 0.5  # inches per legend entry
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.01),
              ncols=max(1, min(m, 4, int(fig.get_size_inches()[0] / per_column))))
  return _finish(fig, path)


def compression_curves(levels: np.ndarray, accuracies: Mapping[str, np.ndarray],
                       baselines: Mapping[str, float], *,
                       xlabel: str = "compression level (fraction of weights removed)",
                       path: str | Path | None = None):
  """Accuracy drop (baseline - compressed, in points) against the compression level; accuracies:
  label -> (num_levels,) or (num_seeds, num_levels) in [0, 1], baselines: label -> uncompressed
  accuracy in [0, 1]. Bands span one std over seeds."""
  fig, ax = style.figure()
  for i, (label, acc) in enumerate(accuracies.items()):
    drop = 100.0 * (baselines[label] - np.atleast_2d(np.asarray(acc, np.float64)))
    mean = drop.mean(axis=0)
    ax.plot(levels, mean, color=style.color(i), linestyle=style.linestyle(i), marker="o", markersize=3,
            label=label)
    if drop.shape[0] > 1:
      sd = drop.std(axis=0, ddof=1)
      ax.fill_between(levels, mean - sd, mean + sd, color=style.color(i), alpha=0.15, linewidth=0)
  ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle=":")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("accuracy drop (points)")
  ax.legend(loc="best")
  return _finish(fig, path)


def scatter_panels(panels: Sequence[Mapping], *, groups: Sequence[str] | None = None,
                   path: str | Path | None = None):
  """Side-by-side scatter plots of the same points (e.g. one per run) against different x quantities.

  panels: each {"x": (n,), "y": (n,), "xlabel", "ylabel", optional "logx"/"logy" (bool) and
  "reference": (xs, ys, label), a dashed line such as y = x or a stability bound, or "references": several,
  dashed, dotted, dash-dotted in order}. groups: (n,) labels
  giving each point its colour and marker, with one legend for all panels.
  """
  legend = groups is not None or any(p.get("reference") is not None or p.get("references") for p in panels)
  fig, axes = style.figure(ncols=len(panels), width=min(3.5 * len(panels) + (2.0 if legend else 0.4), 11.0),
                           height=3.2)
  axes = np.atleast_1d(axes)
  names = list(dict.fromkeys(groups)) if groups is not None else [None]
  for ax, panel in zip(axes, panels):
    x, y = np.asarray(panel["x"], np.float64), np.asarray(panel["y"], np.float64)
    for i, g in enumerate(names):
      sel = np.ones(len(x), bool) if g is None else np.array([str(v) == str(g) for v in groups])
      ax.plot(x[sel], y[sel], linestyle="none", marker="osD^v<>p"[i % 8], color=style.color(i), alpha=0.85,
              label=None if g is None else str(g))
    refs = list(panel.get("references") or []) + ([panel["reference"]] if panel.get("reference") else [])
    for j, ref in enumerate(refs):
      ax.plot(ref[0], ref[1], color="0.3", linestyle=("--", ":", "-.")[j % 3], linewidth=1.1, label=ref[2])
    if panel.get("logx"):
      ax.set_xscale("log")
      _value_ticks(ax.xaxis, x)
    if panel.get("logy"):
      ax.set_yscale("log")
      _value_ticks(ax.yaxis, y)
    ax.set_xlabel(panel["xlabel"])
    ax.set_ylabel(panel["ylabel"])
  handles, labels = [], []
  for ax in axes:  # the groups once, then each panel's reference line
    for h, lab in zip(*ax.get_legend_handles_labels()):
      if lab not in labels:
        handles.append(h)
        labels.append(lab)
  if handles:
    fig.legend(handles, labels, loc="outside right center")
  return _finish(fig, path)


def _value_ticks(axis, values, most: int = 8) -> None:
  """A log axis labelled in plain numbers: an x axis at the data's own values when there are few
  distinct ones (a grid of step sizes), otherwise at 1, 2 and 5 times powers of 10."""
  from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

  v = np.unique(np.asarray(values, np.float64)[np.isfinite(values)])
  axis.set_minor_formatter(NullFormatter())
  if 1 < len(v) <= most and axis.axis_name == "x":
    axis.set_ticks(v, labels=[f"{t:.3g}" for t in v])
    axis.set_ticks([], minor=True)
    if len(v) > 4 and axis.axis_name == "x":
      axis.set_tick_params(rotation=30)
  else:
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:.3g}"))


def ranked_values(values: Mapping[str, np.ndarray], *, ylabel: str = "Hessian eigenvalue",
                  xlabel: str = "rank (1 = largest)", path: str | Path | None = None):
  """Values in decreasing order against their rank, one line per label (e.g. the top-k Hessian
  eigenvalues of each run, to see where they fall into the bulk); log y when all are positive and span
  more than 30x."""
  fig, ax = style.figure()
  for i, (label, v) in enumerate(values.items()):
    v = np.sort(np.asarray(v, np.float64))[::-1]
    ax.plot(np.arange(1, len(v) + 1), v, color=style.color(i), linestyle=style.linestyle(i), marker="o",
            markersize=3.5, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  _log_if_wide(ax, "y")
  from matplotlib.ticker import MaxNLocator

  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  _legend(fig, ax, list(values))
  return _finish(fig, path)


def step_size_sweep(points: Mapping[str, Sequence[tuple[float, float, bool]]], *, trains_at: float,
                    chance: float | None = None, ylabel: str = "training accuracy (%)",
                    xlabel: str = "learning rate η", path: str | Path | None = None):
  """Accuracy against the step size per condition (a step-size sweep, e.g. BatchNorm against none).
  points: label -> (lr, accuracy in [0, 1] or nan, diverged) per run (seeds included). Per condition (one
  colour): every run as a point (diverged runs as one cross per step size on the lower edge, labelled with
  their count), the mean over the runs of
  each step size as a line; `trains_at` dashed (the accuracy above which a run counts as training) and
  `chance` dotted. The step-size axis is logarithmic."""
  fig, ax = style.figure(width=5.2, height=3.4)
  lrs = sorted({lr for pts in points.values() for lr, _, _ in pts})
  offsets = np.linspace(-0.04, 0.04, max(len(points), 1))
  bottom = 0.0
  for i, (label, pts) in enumerate(points.items()):
    jitter = 10 ** offsets[i]  # conditions side by side at a step size, not on top of each other
    finite = [(lr, 100 * acc) for lr, acc, div in pts if not div and np.isfinite(acc)]
    ax.plot([lr * jitter for lr, _ in finite], [a for _, a in finite], linestyle="none", marker="o",
            markersize=4, color=style.color(i), alpha=0.7)
    div = [lr for lr, acc, d in pts if d or not np.isfinite(acc)]
    for lr in sorted(set(div)):  # one cross per step size, with the count of runs it stands for
      ax.plot([lr * jitter], [bottom], linestyle="none", marker="x", markersize=6, color=style.color(i),
              clip_on=False)
      ax.annotate(f"{div.count(lr)} diverged", (lr * jitter, bottom), xytext=(5, 3),
                  textcoords="offset points", fontsize=7, color=style.color(i))
    means = [(lr, np.mean([a for x, a in finite if x == lr])) for lr in lrs
             if any(x == lr for x, _ in finite)]
    ax.plot([lr * jitter for lr, _ in means], [m for _, m in means], color=style.color(i),
            linestyle=style.linestyle(i), label=label,  # one step size: no line, its mean as a diamond
            marker="D" if len(means) == 1 else None, markersize=5)
  ax.axhline(100 * trains_at, color="0.3", linestyle="--", linewidth=0.8)
  ax.annotate(f"trains: > {100 * trains_at:g}%", (0.99, 100 * trains_at), xycoords=("axes fraction", "data"),
              xytext=(0, 3), textcoords="offset points", fontsize=8, color="0.3", ha="right")
  if chance is not None:
    ax.axhline(100 * chance, color="0.5", linestyle=":", linewidth=0.8)
    ax.annotate("chance", (0.99, 100 * chance), xycoords=("axes fraction", "data"), xytext=(0, 3),
                textcoords="offset points", fontsize=8, color="0.5", ha="right")
  ax.set_xscale("log")
  ax.set_xticks(lrs)
  ax.set_xticklabels([f"{lr:g}" for lr in lrs])
  ax.minorticks_off()
  ax.set_ylim(bottom - 3, 103)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
  return _finish(fig, path)
