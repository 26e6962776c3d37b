"""What every study template works from and returns, and the Results pieces they share.

A template (`Template`) is named after a study (`config.study`) and maps the loaded runs to its parts of
the report (`Parts`: the Results sections, the findings, the comparison with the published result and
the limitations). It reads the runs through a `Context` of its own (`Context.of(study, out)`: copies of
the runs, so nothing a template does changes what another part of the report sees) and returns; a
template that needs a new condition key gets a new context (`Context.with_key`). Shared pieces: the
summary table, the standard figures (`standard_results`), the generic findings, the lambda_max history
and stability thresholds, and helpers for sentences.
"""

import dataclasses
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots, runs, stats, style, tables, wording
from analysis.document import Figure, Finding, Section, TableBlock, ci_text, distinct, num, pct, seeds_text

CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
    "mnist": tuple(str(k) for k in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
SUMMARY_METRICS = ("test/accuracy", "test/loss", "eval_train/accuracy", "gap/accuracy", "gap/loss",
                   "curv/lambda_max", "curv/trace")


@dataclasses.dataclass(frozen=True)
class Context:
  """What a template works from: the loaded study, its runs table, the output folder, and the list its
  figures add their problems to."""
  study: runs.Study
  table: pd.DataFrame
  out: Path
  problems: list
  label_keys: list[str] | None = None  # a template's own condition keys (default: study.label_keys)

  @classmethod
  def of(cls, study: runs.Study, out: Path) -> "Context":
    """A context over copies of the study's runs (their overrides and problems), with its runs table."""
    copies = [dataclasses.replace(r, overrides=dict(r.overrides), problems=list(r.problems))
              for r in study.runs]
    study = dataclasses.replace(study, runs=copies, override_keys=list(study.override_keys),
                                problems=list(study.problems))
    return cls(study, runs.runs_table(study), Path(out), [])

  def with_key(self, key: str, value_of: Callable[[runs.Run], object], *, label: bool = False) -> "Context":
    """A new context in which each run's condition has `key` = `value_of(run)`: a run's own override
    of `key` is kept, and `key` becomes the first override key (a folder of runs without a sweep index
    may not name it). label=True: `key` alone names the conditions (a study's conditions that are
    combinations of config keys, e.g. optimizer = GD when `training.full_batch`), replacing overrides."""
    values = [value_of(r) for r in self.study.runs]
    rs = [dataclasses.replace(r, overrides=(r.overrides | {key: v}) if label else ({key: v} | r.overrides))
          for r, v in zip(self.study.runs, values)]
    keys = list(self.study.override_keys)
    table = self.table.copy()
    if label:
      if key in table.columns:
        table[key] = values
      else:
        table.insert(1, key, values)
    elif key not in keys:
      keys.insert(0, key)
      table[key] = values
    study = dataclasses.replace(self.study, runs=rs, override_keys=keys)
    return dataclasses.replace(self, study=study, table=table, label_keys=[key] if label else self.label_keys)

  def figure(self, name: str, draw: Callable[[Path], object], caption: str) -> Figure | None:
    """Draws `draw(path)` into figures/<name>.png/.pdf; a failure is recorded, not raised. Characters
    other than letters, digits, `-` and `_` in `name` become `_` (a metric such as
    `sharp/x@alpha=0.1` must not lose its tail to the file suffix)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    path = self.out / "figures" / name
    try:
      draw(path)
    except Exception as e:  # a figure that cannot be drawn must not stop the report
      self.problems.append(runs.Problem("report", f"figures/{name}.png",
                                        f"not drawn ({type(e).__name__}: {str(e).splitlines()[0][:100]})"))
      return None
    return Figure(name, path.with_suffix(".png"), caption)

  @property
  def keys(self) -> list[str]:
    """The keys that name a condition (labels, table rows); `study.group_keys` lists all of them."""
    return self.study.label_keys if self.label_keys is None else self.label_keys

  def groups(self, keys: list[str] | None = None) -> dict[str, list[runs.Run]]:
    """Condition label -> its runs (seeds), in order of first appearance."""
    keys = self.keys if keys is None else keys
    out: dict[str, list[runs.Run]] = {}
    for r in self.study.runs:
      out.setdefault(self.label(r, keys), []).append(r)
    if len(out) == 1 and not keys:
      return {_run_label(self.study): next(iter(out.values()))}
    return out

  def label(self, run: runs.Run, keys: list[str] | None = None) -> str:
    """`norm=batch, lr=0.1`; a template's own single condition key (`label_keys`) by its value alone."""
    keys = self.keys if keys is None else keys
    if self.label_keys is not None and keys == self.label_keys and len(keys) == 1:
      return str(run.overrides.get(keys[0]))
    return runs.condition_label({k: run.overrides.get(k, run.flat_config.get(k)) for k in keys}, keys)

  def values(self, label_runs: list[runs.Run], metric: str) -> np.ndarray:
    names = {r.name for r in label_runs}
    if metric not in self.table.columns:
      return np.zeros(0)
    col = pd.to_numeric(self.table.loc[self.table["run"].isin(names), metric], errors="coerce")
    return col.dropna().to_numpy(np.float64)


def _run_label(study: runs.Study) -> str:
  return study.runs[0].name if len(study.runs) == 1 else "all runs"


@dataclasses.dataclass(frozen=True)
class Parts:
  """What a template returns: its Results sections, findings, comparison blocks, limitations and the
  problems it met (figures not drawn, files unreadable)."""
  results: list[Section]
  findings: list[Finding]
  comparison: list
  limitations: list[str]
  problems: list
  quantities: dict = dataclasses.field(default_factory=dict)  # run name -> {derived quantity: value}


def _same(ctx: Context) -> Context:
  return ctx


@dataclasses.dataclass(frozen=True)
class Template:
  """A study's report: `applies(ctx)` says why it does not apply (None: it does); calling it on a loaded
  study returns its `Parts`. `prepare` gives the context the other steps read (e.g. `ctx.with_key`)."""
  name: str
  title: str
  question: str
  applies: Callable[[Context], str | None]
  results: Callable[[Context], tuple[list, list[Finding]]]
  comparison: Callable[[Context, list[Finding]], list]
  limitations: Callable[[Context], list[str]] = lambda ctx: []
  prepare: Callable[[Context], Context] = _same
  # run name -> {quantity: value}: per-run quantities the study's criteria name beyond the final metrics
  # (e.g. the fraction of steps in the stability window), judged like metrics
  quantities: Callable[[Context], dict[str, dict[str, float]]] = lambda ctx: {}

  def __call__(self, study: runs.Study, out: Path) -> Parts:
    """This template's parts of the report of `study` (read, never changed); figures go to out/figures."""
    ctx = self.prepare(Context.of(study, out))
    sections, findings = self.results(ctx)
    return Parts(sections, findings, self.comparison(ctx, findings), self.limitations(ctx),
                 list(ctx.problems), self.quantities(ctx))


# ---------------------------------------------------------------------------------------------------
# Pieces of study templates (analysis/studies/).

# columns that describe a solver's run (its spread, standard error, time, convergence, residual), not a
# measure of the network: `sharp/epsilon_sharpness_restart_spread`, `curv/trace_se`, `curv/seconds`, ...
SOLVER_DIAGNOSTIC = re.compile(r"(_restart_spread|_se|seconds|_converged(_all)?|_residual)$")


def is_solver_diagnostic(column: str) -> bool:
  return SOLVER_DIAGNOSTIC.search(column) is not None


def mean_ci_text(values, fmt: Callable[[float], str] = num) -> str:
  """`12.3 (2 seeds, 95% CI 11.0–13.6)` of the finite values; `n/a` when there is none."""
  d = stats.describe(values)
  if not d["n"]:
    return "n/a"
  if d["n"] > 1 and d["std"] == 0:
    return f"{fmt(d['mean'])} ({seeds_text(d['n'])}, the same in every seed: no interval)"
  return f"{fmt(d['mean'])} ({seeds_text(d['n'])}, {ci_text(d['ci_low'], d['ci_high'], fmt)})"


def group_runs(ctx: Context, label_of: Callable[[runs.Run], str]) -> dict[str, list[runs.Run]]:
  """label -> runs, labels from `label_of(run)` in order of first appearance."""
  out: dict[str, list[runs.Run]] = {}
  for r in ctx.study.runs:
    out.setdefault(label_of(r), []).append(r)
  return out




def _uneven(groups: Mapping[str, Sequence[runs.Run]]) -> bool:
  """Whether the runs of some group trained for different numbers of steps."""
  return any(len({(r.summary or {}).get("total_steps") for r in rs}) > 1 for rs in groups.values())


def missing_text(what: str, need: str) -> str:
  """A Results paragraph naming a missing input: `Not available: <what> (needs <need>).`"""
  return f"Not available: {what} (needs {need})."


# ---------------------------------------------------------------------------------------------------
# Results shared by the templates.

ADAPTIVE = ("adam", "adamw")


def lambda_max_history(run: runs.Run) -> tuple[np.ndarray, np.ndarray]:
  """(steps, lambda_max): in-training `curv/lambda_max` records, plus post-hoc measurements under
  curvature/ at steps training did not measure. Adam-type runs that tracked the preconditioned
  sharpness give that instead (`curv/precond_lambda_max`, the quantity compared with 38/eta)."""
  if run.flat_config.get("optimizer.name") in ADAPTIVE:
    steps, values = run.curve("curv/precond_lambda_max")
    if len(steps):
      return steps, values
  steps, values = run.curve("curv/lambda_max")
  pts = dict(zip(steps.tolist(), values.tolist()))
  for rec in run.curvature:
    op, spec = rec.get("operator") or {}, (rec.get("results") or {}).get("spectrum") or {}
    if op.get("operator", "hessian") == "hessian" and runs._is_number(spec.get("lambda_max")) \
        and isinstance(op.get("step"), int):
      pts.setdefault(float(op["step"]), float(spec["lambda_max"]))
  if not pts:
    return np.zeros(0), np.zeros(0)
  s = sorted(pts)
  return np.asarray(s, np.float64), np.asarray([pts[k] for k in s], np.float64)


def _mean_history(rs: list[runs.Run]) -> tuple[np.ndarray, np.ndarray]:
  frames = [pd.Series(v, index=s) for s, v in map(lambda_max_history, rs) if len(s)]
  if not frames:
    return np.zeros(0), np.zeros(0)
  t = pd.concat(frames, axis=1)
  return t.index.to_numpy(np.float64), t.mean(axis=1).to_numpy()


def threshold_of(run: runs.Run) -> tuple[float | None, str]:
  fc = run.flat_config
  name = fc.get("optimizer.name", "")
  kw = dict(momentum=fc.get("optimizer.momentum", 0.9), b1=fc.get("optimizer.b1", 0.9))
  return plots.stability_threshold(name, fc.get("schedule.lr", 0.0), **kw), plots.threshold_name(name, **kw)


def spectrum(rs: list[runs.Run], problems: list | None = None):
  """(nodes, weights, run, record) of the latest Hessian SLQ of the first run that has one; an
  unreadable .npz is added to `problems`."""
  for r in rs:
    recs = [c for c in r.curvature if c.get("arrays") and "density" in (c.get("results") or {})]
    recs.sort(key=lambda c: (c.get("operator") or {}).get("step", -1))
    for c in reversed(recs):
      try:
        with np.load(c["arrays"]) as z:
          return z["slq_nodes"], z["slq_weights"], r, c
      except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        rel = f"curvature/{Path(c['arrays']).name}"
        if problems is not None:
          problems.append(runs.Problem(r.name, rel, f"unreadable ({type(e).__name__})"))
  return None


def _loss_name(ctx: Context) -> str:
  """The runs' common loss (`loss.name`; cross_entropy when unset); `mixed` when they differ."""
  names = distinct(r.flat_config.get("loss.name", "cross_entropy") for r in ctx.study.runs)
  return names[0] if len(names) == 1 else "mixed"


def curvature_mode_text(rs: list[runs.Run]) -> str:
  """How the runs' Hessian was taken, for captions: `BatchNorm with batch statistics over ghost batches of
  128 (the loss training descends)`, `BatchNorm with running statistics (eval mode)`, or nothing for
  networks without BatchNorm (both modes are the same function there)."""
  if not any(r.has_batchnorm for r in rs):
    return ""
  modes = distinct(r.flat_config.get("curvature.bn_mode", "eval") for r in rs)
  chunks = distinct(r.flat_config.get("curvature.chunk_size") for r in rs)
  out = []
  for m in modes:
    if m == "batch":
      ghost = f" of {chunks[0]}" if len(chunks) == 1 and chunks[0] else ""
      out.append(f"BatchNorm with batch statistics over fixed ghost batches{ghost} (the loss training "
                 "descends)")
    else:
      out.append("BatchNorm with running statistics (eval mode: not the loss training descends)")
  return "; ".join(out)


def bn_mode_phrase(rs: list[runs.Run]) -> str:
  """`BatchNorm with batch statistics over fixed ghost batches of 128 examples, the loss training descends`
  when every run's Hessian was taken in batch mode, else `BatchNorm mode batch, eval` (short, for captions
  that name the mode); '' when no run's network has BatchNorm (`Run.has_batchnorm`)."""
  if not any(r.has_batchnorm for r in rs):
    return ""
  modes = {r.flat_config.get("curvature.bn_mode", "eval") for r in rs}
  chunks = {r.flat_config.get("curvature.chunk_size") for r in rs}
  if modes == {"batch"}:
    ghost = f" of {chunks.pop()} examples" if len(chunks) == 1 else ""
    return f"BatchNorm with batch statistics over fixed ghost batches{ghost}, the loss training descends"
  return f"BatchNorm mode {', '.join(sorted(map(str, modes)))}"


def seed_histories(rs: list[runs.Run]) -> list[tuple[np.ndarray, np.ndarray]]:
  """One (steps, lambda_max) per run that has at least two measurements."""
  return [h for h in map(lambda_max_history, rs) if len(h[0]) > 1]


def standard_results(ctx: Context, *, bar_metrics=("test/accuracy", "gap/accuracy", "curv/lambda_max"),
                     bar_key: str | None = None, thresholds: bool = True, curves_x: str = "step",
                     curve_splits: tuple = ("train", "test"), over: str = "seeds") -> list:
  """Summary table, training curves, lambda_max over training, spectra, dot-and-whisker panels, per-class
  accuracy and measure-vs-gap scatter, each when its data exist. thresholds=False: lambda_max curves
  without stability thresholds (studies that do not compare with them). over: what a condition's runs
  are, in the captions ("seeds"; "runs" when a template pools grid points into one condition)."""
  blocks = []
  groups = ctx.groups()
  loss = _loss_name(ctx)
  unit = "in the unit of each run's loss" if loss == "mixed" else f"in {style.loss_unit(loss)}"
  failed = [r.name for r in ctx.study.runs if r.status not in ("done", "unknown")]
  metrics = [m for m in SUMMARY_METRICS if m in ctx.table.columns and ctx.table[m].notna().any()]
  if metrics:
    t = tables.mean_std_table(ctx.table, ctx.keys, metrics, caption=(
        f"Mean ± sample standard deviation over {over} (the value alone for one {over[:-1]}); accuracies in "
        "percent, "
        f"losses {unit}; gaps: train minus test accuracy, test minus train loss (train = the fixed "
        "eval_train subset); the best mean of each accuracy and loss column in bold (gaps are not ranked; "
        "none when fewer than two conditions finished). λ_max and trace: the training-loss Hessian at the end"
        + (f" ({mode})" if (mode := curvature_mode_text(ctx.study.runs)) else "") + "."), count_name=over)
    blocks.append(TableBlock("summary", t))
  full = {label: bool(rs[0].flat_config.get("training.full_batch", False)) for label, rs in groups.items()}
  train_name = ("full-batch training" if all(full.values()) else
                "minibatch training" if not any(full.values()) else "training batches (full or minibatch)")
  names = {"train": f"{train_name} (solid)", "eval_train": "training subset (dotted)",
           "valid": "validation (dash-dotted)", "test": "test (dashed)"}
  once = {sp for sp in curve_splits if sp != "train" and all(  # evaluated once: a dot, no line style
      len(r.curve(f"{sp}/accuracy")[0]) <= 1 for rs in groups.values() for r in rs)}
  names |= {sp: f"{names.get(sp, sp).split(' (')[0]} (a dot: evaluated once)" for sp in once}
  shown = " and ".join(names.get(sp, sp) for sp in curve_splits)
  if loss != "mixed":
    fig = ctx.figure("training_curves", lambda p: plots.training_curves(
        groups, splits=curve_splits, x=curves_x, loss_name=loss, full_batch=full, path=p),
        f"Training curves: {shown} loss and accuracy against the {curves_x}, mean over {over} with the "
        f"min–max band over {over}. Loss in {style.loss_unit(loss)}, accuracy in percent."
        + (f" The {over} of a condition differ in length, so each point is the mean over the {over} logged "
           f"at that {curves_x}: a jump can be one of them ending, not training." if _uneven(groups) else "")
        + (f" A condition pools {over} of different settings (the sweep's other axes): the band spans those "
           "settings, not seed-to-seed noise." if over != "seeds" else ""))
    if fig:
      blocks.append(fig)
  seeds = {label: seed_histories(rs) for label, rs in groups.items()}
  seeds = {k: v for k, v in seeds.items() if v}
  points = max((len(h[0]) for v in seeds.values() for h in v), default=0)
  points = (f"{points} measurements" if points > 2 else  # two: a line between them is not a measured path
            f"{points} measurements: the lines join them, training in between was not measured")
  mode = curvature_mode_text(ctx.study.runs)
  mode = f" Hessian: {mode}." if mode else ""
  band = plots.interval_text("minmax", over=over)
  adaptive = [r for rs in groups.values() for r in rs if r.flat_config.get("optimizer.name") in ADAPTIVE]
  precond = bool(adaptive) and all(len(r.curve("curv/precond_lambda_max")[0]) for r in adaptive)
  adaptive_text = (" (Adam-type runs: the preconditioned sharpness)" if precond else
                   " (Adam-type runs: the raw λ_max, which no stability threshold bounds: 38/η applies to "
                   "the preconditioned sharpness, not measured here)" if adaptive else "")
  thr = {label: threshold_of(groups[label][0]) for label in seeds} if seeds and thresholds else {}
  if adaptive and not precond:  # a threshold of the preconditioned sharpness is not drawn against raw λ_max
    thr = {k: (None, "") if groups[k][0].flat_config.get("optimizer.name") in ADAPTIVE else v
           for k, v in thr.items()}
  if seeds and not any(t is not None for t, _ in thr.values()):
    fig = ctx.figure("lambda_max", lambda p: plots.lambda_max_curves(seeds=seeds, band="minmax", path=p),
                     f"Top Hessian eigenvalue λ_max over training ({points}): mean over {over} "
                     f"(markers), band {band}, thin lines the {over}{adaptive_text}.{mode}")
    if fig:
      blocks.append(fig)
  elif seeds:
    name = distinct([n for _, n in thr.values()])
    label = name[0] if len(name) == 1 else "threshold"
    values = [t for t, _ in thr.values() if t is not None and np.isfinite(t) and t > 0]
    normalized = len(values) == len(thr) and max(values) > 10 * min(values)  # e.g. 2/eta next to 38/eta
    caption = (f"λ_max over training ({points}) divided by each condition's stability "
               f"threshold ({', '.join(n for n in name if n)}){adaptive_text}: mean over {over}, band "
               f"{band}, the dashed line at 1." if normalized else
               f"Top Hessian eigenvalue λ_max over training ({points}): mean over {over} "
               f"(markers), band {band}, thin lines the {over}, with each condition's stability threshold "
               f"({', '.join(n for n in name if n) or 'none for this optimizer'}) dashed in its colour (one "
               f"grey line when they coincide){adaptive_text}.")
    fig = ctx.figure("lambda_max", lambda p: plots.lambda_max_curves(
        thresholds={k: t for k, (t, _) in thr.items() if t is not None}, threshold_label=label,
        normalized=normalized, seeds=seeds, band="minmax", path=p), caption + mode)
    if fig:
      blocks.append(fig)
  spectra, top, residuals = {}, {}, {}
  for label, rs in groups.items():
    s = spectrum(rs, ctx.problems)
    if s is not None:
      spectra[label] = (s[0], s[1])
      spec = (s[3].get("results") or {}).get("spectrum") or {}
      if isinstance(spec.get("top_values"), list):
        top[label] = np.asarray(spec["top_values"], np.float64)
        if isinstance(spec.get("top_residual_norms"), list):
          residuals[label] = np.asarray(spec["top_residual_norms"], np.float64)
  if spectra:
    first = next(iter(groups[k] for k in spectra))
    rec = spectrum(first)[3]
    op = rec.get("operator") or {}
    caption = plots.spectral_density_caption(spectra, top=top, residuals=residuals or None)
    mode_words = curvature_mode_text(ctx.study.runs)
    fig = ctx.figure("spectral_density", lambda p: plots.spectral_density(
        spectra, top=top, residuals=residuals or None, path=p),
        f"Hessian spectral density (one seed per condition, step {op.get('step')}, "
        f"{op.get('num_examples')} training examples{'; ' + mode_words if mode_words else ''}). " + caption)
    if fig:
      blocks.append(fig)
  key = bar_key or (ctx.keys[0] if len(ctx.keys) == 1 else None)
  bars = [m for m in bar_metrics if m in ctx.table.columns and ctx.table[m].notna().any()]
  if key and len(groups) > 1 and bars and key in ctx.table.columns:
    order = list(dict.fromkeys(ctx.table[key].tolist()))  # the sweep's order, never sorted
    rows = ctx.table[~ctx.table["run"].isin(failed)]
    empty = [f"{key.rsplit('.', 1)[-1]}={v}: {style.plain(style.metric_label(m))}" for m in bars
             for v in order if v in set(rows[key])
             and not pd.to_numeric(rows.loc[rows[key] == v, m], errors="coerce").notna().any()]
    fig = ctx.figure("ablation", lambda p: plots.ablation_bars(
        rows, key, bars, order=[o for o in order if o in set(rows[key])], error="t",
        loss_name="cross_entropy" if loss == "mixed" else loss, path=p),
        f"By `{key}` (conditions in the sweep's order): diamonds are means over {over}, whiskers the "
        f"{plots.interval_text('t', over=over)}, grey dots the individual {over}; the value axes are fitted "
        f"to the data (not from 0). Every panel is the value at the end of training. {plots.LOG_PANELS}"
        + (f" Runs left out (not finished): {', '.join(failed)}." if failed else "")
        + (f" Not measured, so left out of that panel: {'; '.join(empty)}." if empty else ""))
    if fig:
      blocks.append(fig)
  per_class = {}
  for label, rs in groups.items():
    accs = [r.summary["final"]["test/class_accuracy"] for r in rs if r.summary
            and isinstance((r.summary.get("final") or {}).get("test/class_accuracy"), list)]
    if accs and len({len(a) for a in accs}) == 1:
      per_class[label] = np.asarray(accs)
  if per_class:
    n = len(next(iter(per_class.values()))[0])
    names = CLASS_NAMES.get(ctx.study.runs[0].flat_config.get("data.name"), ())
    names = names if len(names) == n else tuple(str(k) for k in range(n))
    fig = ctx.figure("per_class_accuracy", lambda p: plots.per_class_accuracy(names, per_class, path=p),
                     f"Final test accuracy per class: mean over {over} (diamonds), whiskers the min–max "
                     f"over {over}, small dots the {over}.")
    if fig:
      blocks.append(fig)
  measures = [m for m in ctx.table.columns
              if (m.startswith("sharp/") or m in ("curv/lambda_max", "curv/trace"))
              and not is_solver_diagnostic(m) and ctx.table[m].notna().sum() >= 3]
  if "gap/loss" in ctx.table.columns and measures and len(ctx.study.runs) >= 3:
    grp = [ctx.label(r) for r in ctx.study.runs]
    for m in measures[:4]:
      vals = ctx.table[m].to_numpy(np.float64)
      fig = ctx.figure(f"gap_vs_{m.replace('/', '_')}", lambda p, m=m, vals=vals: plots.measure_vs_gap(
          vals, ctx.table["gap/loss"].to_numpy(np.float64), measure_name=style.metric_label(m),
          groups=grp if len(set(grp)) > 1 else None, path=p),
          f"{style.capitalized(style.plain(style.metric_label(m)))} against the generalization gap (test "
          "minus train loss), one point per run; Kendall's τ over the runs in the title, pooled over the "
          "conditions when there are several (a difference between conditions can make it).")
      if fig:
        blocks.append(fig)
  return blocks


def generic_findings(ctx: Context) -> list[Finding]:
  out = []
  groups = ctx.groups()
  accs = {label: ctx.values(rs, "test/accuracy") for label, rs in groups.items()}
  for label, a in accs.items():
    if not len(a):
      continue
    d = stats.describe(a)
    gap = ctx.values(groups[label], "gap/accuracy")
    text = (f"{label}: test accuracy {pct(d['mean'])} ({seeds_text(d['n'])}"
            + (f", std {100 * d['std']:.2f} points" if d["n"] > 1 else "")
            + f", {ci_text(d['ci_low'], d['ci_high'], pct)})")
    values = {"test/accuracy mean": d["mean"], "test/accuracy ci": (d["ci_low"], d["ci_high"]), "n": d["n"]}
    if len(gap):
      text += f"; generalization gap {100 * gap.mean():.2f} points (train minus test accuracy)"
      values["gap/accuracy mean"] = float(gap.mean())
    out.append(Finding(text + ".", values))
  ranked = sorted(((a.mean(), label) for label, a in accs.items() if len(a)), reverse=True)
  if len(ranked) >= 2:
    (m1, best), (_, second) = ranked[0], ranked[1]
    iv = stats.difference_interval(accs[best], accs[second])
    out.append(Finding(
        f"The highest mean test accuracy was {best}, {pct(m1)}, {100 * iv.estimate:.2f} points above "
        f"{second} ({wording.interval_text(iv, **wording.POINTS)}"
        + (f"; the best of {len(ranked)} conditions, picked after the runs: a description, not a test"
           if len(ranked) > 2 else "") + ").",
        {"best": best, "best mean": m1, "second": second, "difference": iv.estimate, "ci": (iv.lo, iv.hi),
         "interval": iv.as_dict()}))
  for m in ("curv/lambda_max",):
    if m in ctx.table.columns and "gap/loss" in ctx.table.columns and ctx.table[m].notna().sum() >= 3:
      tau, p, n = stats.kendall_tau(ctx.table[m], ctx.table["gap/loss"])
      measured = set(ctx.table.loc[ctx.table[m].notna(), "run"])
      pooled = len({label for label, rs in ctx.groups().items() if any(r.name in measured for r in rs)})
      out.append(Finding(f"Across {n} runs, Kendall's τ between λ_max and the loss gap (test minus training "
                         f"loss) is {tau:.2f} (p = {p:.2g}"
                         + (f"; pooled over {pooled} conditions, so a difference between conditions can "
                            "make it, and outside the verdict table's tests" if pooled > 1 else "") + ").",
                         {"tau": tau, "p": p, "n": n, "conditions": int(pooled)}))
  return out


