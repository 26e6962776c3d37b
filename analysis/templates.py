"""Report templates: the sections of a report for each kind of study, chosen by `config.study`.

Every report has the same skeleton (`build`): title and question, Setup (generated from the configs
and meta.json), Results (the template's figures and tables), Findings (sentences whose numbers are
computed here from the runs, each with its seed count and a 95% bootstrap interval), Comparison with
the published result, Limitations, Reproduce (exact commands) and Missing or unreadable.

Templates (`TEMPLATES`): `generic` (any run or sweep), `bn_ablation` (norm = batch / none / layer over
seeds: accuracy, gap, lambda_max, trace, spectral density; Santurkar et al. 2018, Ghorbani et al. 2019)
and `edge_of_stability` (lambda_max over training against 2/eta per step size; Cohen et al. 2021). A
template whose inputs are missing falls back to the generic one and says why. To add a study: write
`question`, `applies(ctx) -> reason or None`, `results(ctx) -> (sections, findings)` and
`comparison(ctx, findings) -> blocks`, and register a `Template` in `TEMPLATES`.
"""

import dataclasses
import importlib.util
import json
import math
import re
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots, runs, stats, style, tables
from analysis.report import Code, Figure, Finding, Report, Section, TableBlock

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
    "mnist": tuple(str(k) for k in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
SUMMARY_METRICS = ("test/accuracy", "test/loss", "eval_train/accuracy", "gap/accuracy", "gap/loss",
                   "curv/lambda_max", "curv/trace")


@dataclasses.dataclass
class Context:
  """What a template works from: the loaded study, its runs table, the output folder."""
  study: runs.Study
  table: pd.DataFrame
  out: Path
  problems: list
  label_keys: list[str] | None = None  # a template's own condition keys (default: study.label_keys)

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


@dataclasses.dataclass
class Template:
  name: str
  question: str
  applies: Callable[[Context], str | None]
  results: Callable[[Context], tuple[list, list[Finding]]]
  comparison: Callable[[Context, list[Finding]], list]
  limitations: Callable[[Context], list[str]] = lambda ctx: []


# ---------------------------------------------------------------------------------------------------
# Formatting of numbers in sentences.

def pct(x: float) -> str:
  return f"{100 * x:.2f}%"


def num(x: float) -> str:
  if not math.isfinite(x):
    return "n/a"
  return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def ci_text(lo: float, hi: float, fmt: Callable[[float], str], suffix: str = "") -> str:
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "no interval with fewer than 2 seeds"
  return f"95% CI {fmt(lo)}–{fmt(hi)}{suffix}"


def seeds_text(n: int) -> str:
  return f"{n} seed" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------------------------------
# Common sections.

def _distinct(values) -> list:
  out = []
  for v in values:
    v = tuple(v) if isinstance(v, list) else v
    if v not in out:
      out.append(v)
  return out


def _show(values: list, fmt=str) -> str:
  vals = _distinct(values)
  if not vals:
    return "n/a"
  if len(vals) == 1:
    return fmt(vals[0])
  return "varies: " + ", ".join(fmt(v) for v in vals)


def setup_section(ctx: Context) -> Section:
  """Data, model, optimizer, schedule, steps, seeds, hardware, library versions, git hash."""
  rs = [r for r in ctx.study.runs if r.config]
  c = lambda key: [r.flat_config.get(key) for r in rs if key in r.flat_config]
  summ = lambda key: [r.summary.get(key) for r in rs if r.summary and key in r.summary]
  meta = lambda key: [r.meta.get(key) for r in rs if r.meta and key in r.meta]
  items = []
  opts = {}
  for r in rs:
    for k, v in r.flat_config.items():
      if k.startswith("data.options."):
        opts.setdefault(k.removeprefix("data.options."), []).append(v)
  opt_text = ", ".join(f"{k}={_show(v)}" for k, v in opts.items()) or "defaults"
  items.append(f"**Data**: `{_show(c('data.name'))}` ({opt_text}); training examples: "
               f"{_show(summ('num_train'))}; augmentation: crop padding "
               f"{_show(c('data.augment.crop_padding'))}, flip {_show(c('data.augment.flip'))}.")
  knobs = {}
  for r in rs:
    for k, v in r.flat_config.items():
      if k.startswith("model.knobs."):
        knobs.setdefault(k.removeprefix("model.knobs."), []).append(v)
  knob_text = ", ".join(f"{k}={_show(v)}" for k, v in knobs.items()) or "default knobs"
  params = _show([int(p) for p in summ("num_params")], lambda v: f"{v:,}")
  items.append(f"**Model**: `{_show(c('model.name'))}` ({knob_text}); {params} parameters; mixed precision "
               f"{_show(c('model.mixed_precision'))}.")
  items.append(f"**Loss**: {_show(c('loss.name'))}, label smoothing {_show(c('loss.label_smoothing'))}.")
  opt = (f"**Optimizer**: {_show(c('optimizer.name'))}, learning rate {_show(c('schedule.lr'))}, "
         f"momentum / b1 {_show(c('optimizer.momentum'))} / {_show(c('optimizer.b1'))}, weight decay "
         f"{_show(c('optimizer.weight_decay'))}, gradient clipping {_show(c('optimizer.grad_clip_norm'))}")
  rho = _distinct(c("optimizer.sam.rho"))
  opt += f"; SAM rho {_show(rho)}." if any(v for v in rho) else "; no SAM."
  items.append(opt)
  items.append(f"**Schedule**: {_show(c('schedule.name'))}, warmup {_show(c('schedule.warmup_steps'))} "
               "steps.")
  splits = _show(c("eval.splits"), lambda v: ", ".join(v) if isinstance(v, tuple) else v)
  items.append(f"**Training**: {_show(summ('total_steps'))} steps ({_show(summ('epochs'), num)} epochs) at "
               f"batch size {_show(summ('batch_size') or c('training.batch_size'))}; full batch "
               f"{_show(c('training.full_batch'))}; evaluation every {_show(c('eval.every_steps'))} steps "
               f"(0: per epoch) on {splits}.")
  seeds = sorted({r.seed for r in rs if r.seed is not None})
  per = [len(v) for v in ctx.groups().values()]
  nruns = len(ctx.study.runs)
  items.append(f"**Seeds**: {', '.join(map(str, seeds)) or 'n/a'} ({nruns} run{'s' if nruns > 1 else ''}; "
               f"{_show(per)} per condition).")
  if ctx.study.group_keys:
    conds = "; ".join(f"`{k}` in {{{', '.join(map(str, _distinct(ctx.table[k].tolist())))}}}"
                      for k in ctx.study.group_keys if k in ctx.table.columns)
    items.append(f"**Conditions**: {conds}.")
  hw = [f"{m.get('backend', '?')} ({m.get('device_kind', '?')}, {len(m.get('devices') or [])} device(s)) on "
        f"{m.get('host', '?')}" for m in (r.meta for r in rs) if m]
  wall = [r.summary["wall_time_s"] for r in rs if r.summary and runs._is_number(r.summary.get("wall_time_s"))]
  wall_text = num(float(np.mean(wall))) if wall else "n/a"
  items.append(f"**Hardware**: {_show(hw)}; wall time per run {wall_text} s"
               + (f" (total {num(float(np.sum(wall)))} s)." if len(wall) > 1 else "."))
  versions = {}
  for v in meta("versions"):
    for k, x in (v or {}).items():
      versions.setdefault(k, []).append(x)
  vtext = ", ".join(f"{k} {_show(x)}" for k, x in versions.items()) or "n/a"
  items.append(f"**Libraries**: Python {_show(meta('python'))}; {vtext}.")
  items.append(f"**Code**: git {_show(meta('git'), lambda v: f'`{v}`')}.")
  return Section("Setup", [items])


def _cli_value(v) -> str:
  """A config value as one shell word that absl/ml_collections parse back to it."""
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, list | tuple):
    text = repr(tuple(v))
    return f'"{text}"' if not any(c in text for c in '"$`\\') else shlex.quote(text)
  if isinstance(v, str):
    return shlex.quote(v)
  return repr(v)


def _load_config_file(path: Path, variant: str | None) -> dict | None:
  try:
    spec = importlib.util.spec_from_file_location(f"_report_cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return runs.flatten(json.loads(module.get_config(variant).to_json_best_effort()))
  except Exception:  # a config file that does not load or lacks the variant is not a candidate
    return None


def _option_defaults() -> dict:
  """{"data.options.<field>": default} of `research.data.LoadOptions`."""
  from research.data.dataset import LoadOptions

  return {f"data.options.{f.name}": f.default for f in dataclasses.fields(LoadOptions)}


def base_command(run: runs.Run) -> str:
  """`python -m experiments.train --config FILE[:variant] --workdir RUN --config.k=v ...`: the config
  file and variant closest to the run's resolved config, plus every key where they differ (a data
  option the file sets but the run does not is reset to its default)."""
  candidates = []
  files = []
  if run.study and (ROOT / "experiments" / "configs" / f"{run.study}.py").exists():
    files.append(ROOT / "experiments" / "configs" / f"{run.study}.py")
  files.append(ROOT / "experiments" / "configs" / "default.py")
  defaults = _option_defaults()
  mine = {k: v for k, v in run.flat_config.items() if not isinstance(v, dict)}
  for f in files:
    for variant in (None, "quick", "full"):
      flat = _load_config_file(f, variant)
      if flat is None:
        continue
      flat = {k: v for k, v in flat.items() if not isinstance(v, dict)}
      diff = {k: v for k, v in mine.items() if flat.get(k) != v}
      extra = [k for k in flat if k not in mine]
      unfixable = [k for k in extra if k not in defaults]
      diff |= {k: defaults[k] for k in extra if k in defaults}
      candidates.append((len(unfixable), len(diff), str(f), variant, diff, unfixable))
  if not candidates:
    return f"# no config file found to rebuild {run.name}"
  _, _, f, variant, diff, unfixable = min(candidates, key=lambda t: t[:2])
  spec = str(Path(f).relative_to(ROOT)) + (f":{variant}" if variant else "")
  args = "".join(f" \\\n    --config.{k}={_cli_value(v)}" for k, v in diff.items())
  cmd = f"python -m experiments.train --config {spec} --workdir {shlex.quote(str(run.path))}{args}"
  if unfixable:
    cmd = f"# approximate: {spec} also sets {', '.join(unfixable)}, which this run does not\n" + cmd
  return cmd


def _curvature_command(run: runs.Run, rec: dict) -> str | None:
  op = rec.get("operator") or {}
  res = rec.get("results") or {}
  what = [w for w, key in (("lambda_max", "top"), ("top_k", "bottom"), ("trace", "trace_hutchinson"),
                           ("density", "density"), ("noise_scale", "noise_scale"), ("gradient", "gradient"))
          if key in res]
  if not what or "step" not in op:
    return None
  if "top_k" in what:
    what.remove("lambda_max")
  args = [f"--workdir {shlex.quote(str(run.path))}", f"--checkpoint {op['step']}", f"--what {','.join(what)}"]
  for flag, key in (("--split", "split"), ("--num_examples", "num_examples"), ("--operator", "operator"),
                    ("--bn_mode", "bn_mode"), ("--seed", "seed"), ("--chunk_size", "chunk_size")):
    if key in op:
      args.append(f"{flag} {op[key]}")
  probes = ((res.get("trace_hutchinson") or {}).get("info") or {}).get("num_probes")
  if probes:
    args.append(f"--num_probes {probes}")
  k = (res.get("top") or {}).get("k")
  if k and k > 1:
    args.append(f"--k {k}")
  tol = (res.get("top") or {}).get("tol")
  if tol:
    args.append(f"--tol {tol:g}")
  dens = res.get("density") or {}
  for flag, key in (("--density_probes", "num_probes"), ("--num_steps", "num_steps")):
    if dens.get(key):
      args.append(f"{flag} {dens[key]}")
  return "python -m analysis.curvature " + " ".join(args)


def reproduce_section(ctx: Context) -> Section:
  lines = []
  index = ctx.study.index or {}
  if index.get("config"):
    common = " ".join(f"--config.{k}={_cli_value(v)}"
                      for k, v in (index.get("common_overrides") or {}).items())
    lines.append("# the sweep (all trials; resumes finished ones)")
    lines.append(f"python -m experiments.sweep --config {index['config']} --workdir "
                 f"{shlex.quote(str(ctx.study.root))} {common}".rstrip())
  else:
    lines.append("# each run")
    for r in ctx.study.runs[:12]:
      lines.append(base_command(r))
    if len(ctx.study.runs) > 12:
      lines.append(f"# ... and {len(ctx.study.runs) - 12} more runs the same way")
  curv = [(r, c) for r in ctx.study.runs for c in r.curvature
          if c.get("source") != "tracking"]  # tracked during training: the sweep command reproduces it
  cmds = [cmd for r, c in curv if (cmd := _curvature_command(r, c))]
  if cmds:
    lines.append("# curvature measured after training")
    lines += cmds[:12] + ([f"# ... and {len(cmds) - 12} more"] if len(cmds) > 12 else [])
  lines.append("# this report")
  lines.append(f"python -m analysis.report {shlex.quote(str(ctx.study.root))} "
               f"--out {shlex.quote(str(ctx.out))}")
  return Section("Reproduce", ["Commands run from the repository root (with its `.venv/bin/python` as "
                               "`python`):", Code("\n".join(lines))])


def missing_section(problems: list) -> Section:
  if not problems:
    return Section("Missing or unreadable", ["Nothing: every expected file was present and readable."])
  return Section("Missing or unreadable", [
      f"{len(problems)} problem(s); the report uses what could be read.",
      [f"`{p.run}`: `{p.file}`: {p.what}" for p in problems]])


def common_limitations(ctx: Context) -> list[str]:
  out = []
  per = [len(v) for v in ctx.groups().values()]
  if per and min(per) < 5:
    span = f"{min(per)}" if min(per) == max(per) else f"{min(per)}–{max(per)}"
    out.append(f"{span} seed(s) per condition: bootstrap intervals over so few seeds are "
               "narrow by construction (they cannot exceed the spread of the seeds) and understate the "
               "uncertainty; treat them as descriptive.")
  steps = [r.summary.get("total_steps") for r in ctx.study.runs if r.summary]
  if steps and max(steps) < 2000:
    out.append(f"Short training ({max(steps)} steps at most): numbers describe early training, not "
               "converged models.")
  notdone = [r.name for r in ctx.study.runs if r.status not in ("done", "early_stopped")]
  if notdone:
    out.append(f"{len(notdone)} run(s) did not finish (status other than done): {', '.join(notdone[:6])}.")
  curv = [c for r in ctx.study.runs for c in r.curvature]
  if curv:
    n = _distinct([(c.get("operator") or {}).get("num_examples") for c in curv])
    modes = _distinct([(c.get("operator") or {}).get("bn_mode") for c in curv])
    when = ("during training" if all(c.get("source") == "tracking" for c in curv)
            else "after training" if not any(c.get("source") == "tracking" for c in curv)
            else "during and after training")
    out.append(f"The Hessian was measured {when} on a fixed probe set of {', '.join(map(str, n))} "
               f"training examples (BatchNorm mode {', '.join(map(str, modes))}).")
  return out


# ---------------------------------------------------------------------------------------------------
# Pieces of study templates (analysis/studies/).

def mean_ci_text(values, fmt: Callable[[float], str] = num) -> str:
  """`12.3 (2 seeds, 95% CI 11.0–13.6)` of the finite values; `n/a` when there is none."""
  d = stats.describe(values)
  if not d["n"]:
    return "n/a"
  return f"{fmt(d['mean'])} ({seeds_text(d['n'])}, {ci_text(d['ci_low'], d['ci_high'], fmt)})"


def verdict(lo: float, hi: float, *, expected: str, null: float = 0.0) -> str:
  """Whether an interval (lo, hi) of a difference (null 0) or ratio (null 1) agrees with an expected
  direction (`above` or `below` the null): a phrase to follow "this ...". Not an interval: cannot be
  judged."""
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "cannot be judged (fewer than 2 seeds per condition)"
  above, below = lo > null, hi < null
  if (above and expected == "above") or (below and expected == "below"):
    return "is consistent with it"
  if above or below:
    return "contradicts it (the interval excludes the published direction)"
  return f"is inconclusive (the interval contains {null:g})"


def group_runs(ctx: Context, label_of: Callable[[runs.Run], str]) -> dict[str, list[runs.Run]]:
  """label -> runs, labels from `label_of(run)` in order of first appearance."""
  out: dict[str, list[runs.Run]] = {}
  for r in ctx.study.runs:
    out.setdefault(label_of(r), []).append(r)
  return out


def add_condition_key(ctx: Context, key: str, label_of: Callable[[runs.Run], str]) -> None:
  """Names each run's condition by `label_of(run)` under a new key (first in the runs table and the
  labels), for studies whose conditions are combinations of config keys (e.g. optimizer = GD when
  `training.full_batch`)."""
  for r in ctx.study.runs:
    r.overrides[key] = label_of(r)
  ctx.table.insert(1, key, [label_of(r) for r in ctx.study.runs])
  ctx.label_keys = [key]


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


def _spectrum(rs: list[runs.Run]):
  """(nodes, weights, run) of the latest Hessian SLQ of the first run that has one."""
  for r in rs:
    recs = [c for c in r.curvature if c.get("arrays") and "density" in (c.get("results") or {})]
    recs.sort(key=lambda c: (c.get("operator") or {}).get("step", -1))
    for c in reversed(recs):
      try:
        with np.load(c["arrays"]) as z:
          return z["slq_nodes"], z["slq_weights"], r, c
      except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        rel = f"curvature/{Path(c['arrays']).name}"
        r.problems.append(runs.Problem(r.name, rel, f"unreadable ({type(e).__name__})"))
  return None


def standard_results(ctx: Context, *, bar_metrics=("test/accuracy", "gap/accuracy", "curv/lambda_max"),
                     bar_key: str | None = None, thresholds: bool = True, curves_x: str = "step",
                     curve_splits: tuple = ("train", "test")) -> list:
  """Summary table, training curves, lambda_max over training, spectra, ablation bars, per-class
  accuracy and measure-vs-gap scatter, each when its data exist. thresholds=False: lambda_max curves
  without stability thresholds (studies that do not compare with them)."""
  blocks = []
  groups = ctx.groups()
  metrics = [m for m in SUMMARY_METRICS if m in ctx.table.columns and ctx.table[m].notna().any()]
  if metrics:
    t = tables.mean_std_table(ctx.table, ctx.keys, metrics, caption=(
        "Mean ± sample standard deviation over seeds (the value alone for one seed); accuracies in percent, "
        "losses in nats; gaps: train minus test accuracy, test minus train loss (train = the fixed "
        "eval_train subset); the best mean "
        "of each accuracy, loss and gap column in bold. λ_max and trace: the training-loss Hessian at the "
        "end."))
    blocks.append(TableBlock("summary", t))
  names = {"train": "minibatch training (solid)", "eval_train": "training subset (dotted)",
           "valid": "validation (dash-dotted)", "test": "test (dashed)"}
  shown = " and ".join(names.get(sp, sp) for sp in curve_splits)
  fig = ctx.figure("training_curves", lambda p: plots.training_curves(
      groups, splits=curve_splits, x=curves_x, path=p),
      f"Training curves: {shown} loss and accuracy against the {curves_x}, mean over seeds with the min–max "
      "band over seeds. Loss in nats, accuracy in percent.")
  if fig:
    blocks.append(fig)
  curves = {label: _mean_history(rs) for label, rs in groups.items()}
  curves = {k: v for k, v in curves.items() if len(v[0]) > 1}
  if curves and not thresholds:
    fig = ctx.figure("lambda_max", lambda p: plots.lambda_max_curves(curves, path=p),
                     "Top Hessian eigenvalue λ_max over training (mean over seeds; Adam-type runs that "
                     "tracked it: the preconditioned sharpness).")
    if fig:
      blocks.append(fig)
  elif curves:
    thr = {label: threshold_of(groups[label][0]) for label in curves}
    name = _distinct([n for _, n in thr.values()])
    label = name[0] if len(name) == 1 else "threshold"
    values = [t for t, _ in thr.values() if t is not None and np.isfinite(t) and t > 0]
    normalized = len(values) == len(thr) and max(values) > 10 * min(values)  # e.g. 2/eta next to 38/eta
    caption = ("λ_max over training divided by each condition's stability threshold (mean over seeds; "
               f"{', '.join(n for n in name if n)}; thresholds in the legend; Adam-type runs: the "
               "preconditioned sharpness), the dashed line at 1." if normalized else
               "Top Hessian eigenvalue λ_max over training (mean over seeds), with each condition's "
               f"stability threshold ({', '.join(n for n in name if n) or 'none for this optimizer'}) "
               "dashed in its colour.")
    fig = ctx.figure("lambda_max", lambda p: plots.lambda_max_curves(
        curves, {k: t for k, (t, _) in thr.items()}, threshold_label=label, normalized=normalized,
        path=p), caption)
    if fig:
      blocks.append(fig)
  spectra = {}
  for label, rs in groups.items():
    s = _spectrum(rs)
    if s is not None:
      spectra[label] = s
  if spectra:
    first = next(iter(spectra.values()))[3].get("operator") or {}
    fig = ctx.figure("spectral_density", lambda p: plots.spectral_density(
        {k: (v[0], v[1]) for k, v in spectra.items()}, path=p),
        f"Hessian spectral density by stochastic Lanczos quadrature (one seed per condition, step "
        f"{first.get('step')}, {first.get('num_examples')} training examples, BatchNorm mode "
        f"{first.get('bn_mode')}), Gaussian kernel of 1/200 of the range; triangles: outlier Ritz values "
        "above the bulk.")
    if fig:
      blocks.append(fig)
  key = bar_key or (ctx.keys[0] if len(ctx.keys) == 1 else None)
  bars = [m for m in bar_metrics if m in ctx.table.columns and ctx.table[m].notna().any()]
  if key and len(groups) > 1 and bars:
    fig = ctx.figure("ablation", lambda p: plots.ablation_bars(ctx.table, key, bars, path=p),
                     f"By `{key}`: bars are means over seeds, error bars one sample standard deviation, dots "
                     "the individual seeds.")
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
                     "Final test accuracy per class (mean over seeds; error bars one standard deviation).")
    if fig:
      blocks.append(fig)
  measures = [m for m in ctx.table.columns
              if (m.startswith("sharp/") or m in ("curv/lambda_max", "curv/trace"))
              and ctx.table[m].notna().sum() >= 3]
  if "gap/loss" in ctx.table.columns and measures and len(ctx.study.runs) >= 3:
    grp = [ctx.label(r) for r in ctx.study.runs]
    for m in measures[:4]:
      vals = ctx.table[m].to_numpy(np.float64)
      fig = ctx.figure(f"gap_vs_{m.replace('/', '_')}", lambda p, m=m, vals=vals: plots.measure_vs_gap(
          vals, ctx.table["gap/loss"].to_numpy(np.float64), measure_name=style.metric_label(m),
          groups=grp if len(set(grp)) > 1 else None, path=p),
          f"{style.plain(style.metric_label(m)).capitalize()} against the generalization gap (test minus "
          "train loss), one point per run; Kendall's τ over the runs in the title.")
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
    diff, lo, hi = stats.difference_ci(accs[best], accs[second])
    out.append(Finding(
        f"The highest mean test accuracy was {best}, {pct(m1)}, {100 * diff:.2f} points above {second} "
        f"({seeds_text(len(accs[best]))} vs {seeds_text(len(accs[second]))}, "
        f"{ci_text(100 * lo, 100 * hi, lambda x: f'{x:.2f}', ' points')}).",
        {"best": best, "best mean": m1, "second": second, "difference": diff, "ci": (lo, hi)}))
  for m in ("curv/lambda_max",):
    if m in ctx.table.columns and "gap/loss" in ctx.table.columns and ctx.table[m].notna().sum() >= 3:
      tau, p, n = stats.kendall_tau(ctx.table[m], ctx.table["gap/loss"])
      out.append(Finding(f"Across {n} runs, Kendall's τ between λ_max and the loss gap is {tau:.2f} "
                         f"(p = {p:.2g}).", {"tau": tau, "p": p, "n": n}))
  return out


def _generic_results(ctx):
  return [Section("Results", standard_results(ctx))], generic_findings(ctx)


def _generic_comparison(ctx, findings):
  return ["This is a generic report: the runs do not name a study with a published result to compare "
          "against (`config.study` is empty, unknown or mixed), so no comparison is made."]


def _always(ctx):
  return None


GENERIC = Template("generic", "What did these runs reach (accuracy, generalization gap, curvature), and "
                   "how do the conditions compare over seeds?", _always, _generic_results,
                   _generic_comparison)


# ---------------------------------------------------------------------------------------------------
# bn_ablation.

NORM_KEY = "model.knobs.norm"


def _bn_applies(ctx: Context) -> str | None:
  norms = _distinct(r.flat_config.get(NORM_KEY, "none") for r in ctx.study.runs)
  if len(norms) < 2:
    return f"`{NORM_KEY}` takes one value ({', '.join(map(str, norms))}) across the runs"
  if "batch" not in norms:
    return f"no run uses `{NORM_KEY}=batch`, the reference of the ablation"
  return None


def _bn_groups(ctx: Context) -> dict[str, list[runs.Run]]:
  out = {}
  for r in ctx.study.runs:
    out.setdefault(r.flat_config.get(NORM_KEY, "none"), []).append(r)
  return out


def _verdict(lo: float, hi: float, expected_above: bool) -> str:
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "cannot be judged (fewer than 2 seeds per condition)"
  if (lo > 1 and expected_above) or (hi < 1 and not expected_above):
    return "is consistent with it"
  if (hi < 1 and expected_above) or (lo > 1 and not expected_above):
    return "contradicts it"
  return "is inconclusive (the interval contains 1)"


def _bn_results(ctx: Context):
  for r in ctx.study.runs:
    r.overrides.setdefault(NORM_KEY, r.flat_config.get(NORM_KEY, "none"))
  if NORM_KEY not in ctx.study.override_keys:
    ctx.study.override_keys.insert(0, NORM_KEY)
    ctx.table[NORM_KEY] = [r.flat_config.get(NORM_KEY, "none") for r in ctx.study.runs]
  bars = ("test/accuracy", "gap/accuracy", "curv/lambda_max", "curv/trace")
  blocks = standard_results(ctx, bar_metrics=bars, bar_key=NORM_KEY)
  groups = _bn_groups(ctx)
  base = groups["batch"]
  findings = []
  for norm, rs in groups.items():
    if norm == "batch":
      continue
    what = "Removing BatchNorm" if norm == "none" else f"Replacing BatchNorm by norm={norm}"
    for metric, name in (("curv/lambda_max", "λ_max"), ("curv/trace", "the Hessian trace")):
      a, b = ctx.values(rs, metric), ctx.values(base, metric)
      if not (len(a) and len(b)):
        continue
      r, lo, hi = stats.ratio_ci(a, b)
      verb = "raised" if r > 1 else "lowered"
      findings.append(Finding(
          f"{what} {verb} {name} {r:.2f}x ({num(a.mean())} vs {num(b.mean())}; {seeds_text(len(a))} vs "
          f"{seeds_text(len(b))}, {ci_text(lo, hi, lambda x: f'{x:.2f}', 'x')}).",
          {"norm": norm, "metric": metric, "ratio": r, "ci": (lo, hi), "mean": float(a.mean()),
           "mean batch": float(b.mean()), "n": len(a), "n batch": len(b)}))
    for metric, name in (("test/accuracy", "test accuracy"), ("gap/accuracy", "the accuracy gap")):
      a, b = ctx.values(rs, metric), ctx.values(base, metric)
      if not (len(a) and len(b)):
        continue
      d, lo, hi = stats.difference_ci(a, b)
      show = pct if metric == "test/accuracy" else (lambda x: f"{100 * x:.2f} points")
      findings.append(Finding(
          f"{what} changed {name} by {100 * d:+.2f} points ({show(a.mean())} vs {show(b.mean())}; "
          f"{seeds_text(len(a))} vs {seeds_text(len(b))}, "
          f"{ci_text(100 * lo, 100 * hi, lambda x: f'{x:+.2f}', ' points')}).",
          {"norm": norm, "metric": metric, "difference": d, "ci": (lo, hi), "mean": float(a.mean()),
           "mean batch": float(b.mean()), "n": len(a), "n batch": len(b)}))
    a, b = ctx.values(rs, "curv/num_outliers"), ctx.values(base, "curv/num_outliers")
    if len(a) and len(b):
      findings.append(Finding(
          f"Outlier eigenvalues above the bulk (SLQ): {num(a.mean())} with norm={norm} vs {num(b.mean())} "
          f"with BatchNorm (means over {seeds_text(len(a))} and {seeds_text(len(b))}).",
          {"norm": norm, "metric": "curv/num_outliers", "mean": float(a.mean()),
           "mean batch": float(b.mean())}))
  return [Section("Results", blocks)], findings


def _bn_comparison(ctx: Context, findings: list[Finding]) -> list:
  out = ["Santurkar et al. (2018, NeurIPS, \"How does batch normalization help optimization?\") argue that "
         "BatchNorm makes the loss landscape smoother (smaller gradient Lipschitz constant, i.e. lower "
         "sharpness along the trajectory), and Ghorbani et al. (2019, ICML) find that without BatchNorm the "
         "Hessian has large isolated outlier eigenvalues that BatchNorm removes. Both predict a higher "
         "λ_max without BatchNorm."]
  items = []
  for f in findings:
    v = f.values
    if v.get("metric") == "curv/lambda_max" and v.get("norm") == "none":
      lo, hi = v["ci"]
      ci = ci_text(lo, hi, lambda x: f"{x:.2f}", "x")
      items.append(f"λ_max without / with BatchNorm = {v['ratio']:.2f}x ({ci}): this "
                   f"{_verdict(lo, hi, True)}.")
    if v.get("metric") == "curv/num_outliers" and v.get("norm") == "none":
      more = v["mean"] > v["mean batch"]
      items.append(f"Outliers: {num(v['mean'])} without vs {num(v['mean batch'])} with BatchNorm; "
                   f"{'' if more else 'not '}the direction Ghorbani et al. report (counts are SLQ lower "
                   "bounds).")
  if not items:
    items.append("No curvature measurement of a run without normalization: the comparison cannot be made.")
  return out + [items] + ["Caveat: with BatchNorm in `eval` mode the measured Hessian is that of the "
                          "network with frozen running statistics, not the batch-statistics loss that "
                          "training descends."]


def _bn_limitations(ctx: Context) -> list[str]:
  return ["Ablating the normalization also changes the parameter count and the effective learning rate "
          "(BatchNorm makes preceding weights scale-invariant), so equal step sizes are not equal steps."]


BN_ABLATION = Template(
    "bn_ablation", "Does BatchNorm make the loss landscape smoother? Networks with BatchNorm, with LayerNorm "
    "and without normalization, compared over seeds on accuracy, generalization gap, and the training-loss "
    "Hessian's top eigenvalue, trace and spectral density.", _bn_applies, _bn_results, _bn_comparison,
    _bn_limitations)


# ---------------------------------------------------------------------------------------------------
# edge_of_stability.

def _lr_key(ctx: Context) -> str | None:
  lrs = [k for k in ctx.keys if k.rsplit(".", 1)[-1] in ("lr", "learning_rate")]
  return lrs[0] if lrs else None


def _eos_applies(ctx: Context) -> str | None:
  if not any(len(lambda_max_history(r)[0]) > 1 for r in ctx.study.runs):
    return "no run has λ_max measured at two or more steps (`curv/lambda_max` in metrics.jsonl)"
  return None


def _eos_results(ctx: Context):
  key = _lr_key(ctx)
  groups = ctx.groups()
  blocks = standard_results(ctx, bar_key=key)
  findings = []
  rows = []
  for label, rs in groups.items():
    ratios_end, ratios_max, hover = [], [], []
    t, tname = threshold_of(rs[0])
    if t is None:
      continue
    for r in rs:
      s, v = lambda_max_history(r)
      if len(s) < 2:
        continue
      ratio = v / t
      ratios_end.append(ratio[-1])
      ratios_max.append(np.nanmax(ratio))
      crossed = np.flatnonzero(ratio >= 0.9)
      if len(crossed) and crossed[0] < len(ratio) - 1:
        hover.append(float(np.median(ratio[crossed[0]:])))
    if not ratios_end:
      continue
    d = stats.describe(ratios_end)
    reached = sum(m >= 0.9 for m in ratios_max)
    text = (f"{label}: λ_max ended at {d['mean']:.2f} of {tname} = {num(t)} ({seeds_text(d['n'])}, "
            f"{ci_text(d['ci_low'], d['ci_high'], lambda x: f'{x:.2f}')}); it reached 90% of the threshold "
            f"in {reached} of {len(ratios_max)} run(s)")
    if hover:
      text += f", and after first reaching it hovered at a median {np.mean(hover):.2f} of the threshold"
    findings.append(Finding(text + ".", {
        "condition": label, "threshold": t, "end ratio mean": d["mean"],
        "end ratio ci": (d["ci_low"], d["ci_high"]), "n": d["n"], "reached": reached,
        "hover": float(np.mean(hover)) if hover else None}))
    rows.append({"condition": label, "threshold": t, "λ_max / threshold (end)": d["mean"],
                 "max λ_max / threshold": float(np.mean(ratios_max)), "seeds": d["n"]})
  if rows:
    blocks.insert(1, TableBlock("stability", tables.frame_table(pd.DataFrame(rows), caption=(
        "λ_max relative to the stability threshold of each condition's optimizer and step size (means over "
        "seeds)."))))
  return [Section("Results", blocks)], findings + generic_findings(ctx)


def _eos_comparison(ctx: Context, findings: list[Finding]) -> list:
  full = _distinct(r.flat_config.get("training.full_batch") for r in ctx.study.runs)
  out = ["Cohen et al. (2021, ICLR, \"Gradient descent on neural networks typically occurs at the edge of "
         "stability\") find that under full-batch gradient descent λ_max rises during training (progressive "
         "sharpening) until it reaches 2/η and then hovers just above it while the loss keeps falling "
         "non-monotonically. With minibatch SGD λ_max typically settles below 2/η, lower for smaller batches "
         "(Jastrzębski et al. 2020)."]
  items = []
  for f in findings:
    v = f.values
    if "end ratio mean" not in v:
      continue
    hover = v.get("hover")
    if full == [True]:
      ok = hover is not None and 0.8 <= hover <= 1.3
      items.append(f"{v['condition']}: " + ("hovered near the threshold, as Cohen et al. report" if ok else
                   "did not settle at the threshold within this run") + ".")
    else:
      items.append(f"{v['condition']} (minibatch): λ_max ended at {v['end ratio mean']:.2f} of the "
                   "threshold" + (", below it as expected for SGD." if v["end ratio mean"] < 1
                                  else ", at or above it."))
  return out + ([items] if items else ["No condition has a stability threshold (unknown optimizer)."])


def _eos_limitations(ctx: Context) -> list[str]:
  out = ["λ_max is measured at discrete steps: oscillations between measurements are not seen."]
  if any(r.flat_config.get("optimizer.name") in ("adam", "adamw") for r in ctx.study.runs):
    out.append("For Adam the 38/η threshold applies to the preconditioned Hessian; the λ_max shown is of the "
               "raw Hessian, so Adam's curves are not directly comparable with their thresholds.")
  return out


EDGE_OF_STABILITY = Template(
    "edge_of_stability", "Does λ_max rise to the stability threshold 2/η (and its momentum and Adam "
    "analogues) and stay there, for each step size?", _eos_applies, _eos_results, _eos_comparison,
    _eos_limitations)


TEMPLATES = {t.name: t for t in (GENERIC, BN_ABLATION, EDGE_OF_STABILITY)}
TITLES = {"bn_ablation": "BatchNorm ablation", "edge_of_stability": "Edge of stability"}


def _register_study_templates() -> None:
  """Adds the templates of `analysis/studies/` (one module per study, each with TEMPLATE and TITLE)."""
  from analysis import studies

  for module in studies.MODULES:
    TEMPLATES[module.TEMPLATE.name] = module.TEMPLATE
    TITLES[module.TEMPLATE.name] = module.TITLE


def build(study: runs.Study, out: Path, template: str | None = None) -> Report:
  """The report of a loaded study (figures are drawn into out/figures)."""
  from research.core.errors import UserError, choices_message

  _register_study_templates()
  if template is not None and template not in TEMPLATES:
    raise UserError(choices_message("template", template, sorted(TEMPLATES)))
  ctx = Context(study, runs.runs_table(study), Path(out), [])
  name = template or study.study or "generic"
  notes = []
  chosen = TEMPLATES.get(name)
  if chosen is None:
    notes.append(f"No report template for study `{name}`; this is the generic report "
                 f"(templates: {', '.join(sorted(TEMPLATES))}).")
    chosen = GENERIC
  elif (reason := chosen.applies(ctx)) is not None:
    notes.append(f"The `{name}` template does not apply ({reason}); this is the generic report.")
    chosen = GENERIC
  if not study.study and len({r.study for r in study.runs}) > 1:
    notes.append("The runs belong to different studies (`config.study`); this is the generic report.")
  if not study.runs:
    results, findings = [Section("Results", ["No run could be read."])], []
  else:
    results, findings = chosen.results(ctx)
  sections = [setup_section(ctx)] if study.runs else []
  sections += results
  sections.append(Section("Findings", [[f.text for f in findings] if findings else
                                       "No finding: no run has a readable test accuracy."]))
  sections.append(Section("Comparison with the published result", chosen.comparison(ctx, findings)
                          if study.runs else ["No runs."]))
  limitations = common_limitations(ctx) + chosen.limitations(ctx) if study.runs else []
  sections.append(Section("Limitations", [limitations] if limitations else ["None recorded."]))
  sections.append(reproduce_section(ctx))
  problems = list(dict.fromkeys(study.problems + [p for r in study.runs for p in r.problems
                                                  if p not in study.problems] + ctx.problems))
  sections.append(missing_section(problems))
  title = (f"{TITLES.get(chosen.name, chosen.name)} study: {study.root.resolve().name}"
           if chosen is not GENERIC else f"Report: {study.root.resolve().name}")
  question = chosen.question + ("" if not notes else " " + " ".join(notes))
  return Report(title, question, chosen.name, sections, findings, problems)
