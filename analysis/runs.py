"""Reading run and sweep directories (DESIGN.md's contract) into Python objects and pandas tables.

`load(path)` accepts a run directory (it has `config.json`), a sweep directory (`sweep.json` or
`index.jsonl` listing trials, each a run directory named like `003-lr=0.1-seed=1`) or any folder
holding run directories (found by their `config.json`). Nothing here raises on a damaged run: a
missing or unreadable file, a half-written last metrics line or a corrupt line in the middle, a run
that did not finish, each becomes a `Problem` that the report lists; what is readable is still used.

Tables:
- `runs_table(study)`: one row per run; `run`, `path`, `status`, `seed`, one column per override
  (dotted config keys such as `model.knobs.norm`), the final metrics (`test/accuracy`, `gap/loss`,
  ...; from `summary.json`, else from the last evaluation in `metrics.jsonl`), the last in-training
  `curv/`, `sharp/`, `smooth/`, `compress/` and `land/` values (`EVALUATOR_PREFIXES`), and the latest
  post-hoc curvature measurement under `curvature/` (`curv/lambda_max`, `curv/trace`, `curv/trace_se`)
  where training logged none.
- `history(study)`: the long table of every scalar metric ever logged: `run`, `step`, `epoch`,
  `metric`, `value`, plus the override columns.
"""

import dataclasses
import datetime
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from research.core.errors import UserError

INDEX_FILES = ("sweep.json", "index.jsonl")
# Metric prefixes of the evaluators run inside training; their last values become runs-table columns.
EVALUATOR_PREFIXES = ("curv/", "sharp/", "smooth/", "compress/", "land/")
# Config keys that never describe the experiment (how it was displayed or stored).
# Metric prefixes of measurements made inside training (evaluators): their last value is a column.
# Folders of a run or sweep directory that hold no run directories.
SKIPPED_DIRS = ("checkpoints", "curvature", "landscape", "interpolation", "report", "measures", "compression")
IGNORED_KEYS = ("progress", "tensorboard", "keep_checkpoints", "checkpoint_every")
# Config sections that say how a run was measured or logged, not what was trained.
MEASUREMENT_SECTIONS = ("curvature.", "eval.", "log_every")


BATCHNORM_FAMILIES = ("resnet", "vgg", "preact_resnet", "wide_resnet")  # default norm: BatchNorm

@dataclasses.dataclass(frozen=True)
class Problem:
  """Something missing or unreadable: the run, the file (relative to the run) and what is wrong."""
  run: str
  file: str
  what: str

  def __str__(self) -> str:
    return f"{self.run}: {self.file}: {self.what}"


UNFINISHED = ("pending", "running", "interrupted", "failed")  # no final numbers (research.sweeps.index)


@dataclasses.dataclass
class Run:
  """One run directory, read. `config` is nested (as in config.json); `flat_config` has dotted keys."""
  path: Path
  name: str
  config: dict
  flat_config: dict
  meta: dict | None
  summary: dict | None
  metrics: list[dict]
  curvature: list[dict]  # records of curvature/*.json, each with "file" (its path) and "arrays" (.npz path)
  problems: list[Problem]
  overrides: dict = dataclasses.field(default_factory=dict)
  posthoc: list[dict] = dataclasses.field(default_factory=list)  # posthoc.jsonl: checkpoints measured later

  @property
  def status(self) -> str:
    if self.meta and isinstance(self.meta.get("status"), str):
      return self.meta["status"]
    if self.summary and isinstance(self.summary.get("status"), str):
      return self.summary["status"]
    return "unknown"

  @property
  def seed(self):
    return self.flat_config.get("seed")

  @property
  def has_batchnorm(self) -> bool:
    """Whether the network has BatchNorm: its `model.knobs.norm`, else its family's default (the ResNets
    and VGGs of research/models have BatchNorm unless told otherwise, the other families do not)."""
    norm = self.flat_config.get("model.knobs.norm")
    if norm is not None:
      return norm == "batch"
    return str(self.flat_config.get("model.name", "")).startswith(BATCHNORM_FAMILIES)

  @property
  def study(self) -> str:
    """`config.study`, a name used only as a key into the report templates ("" unless a string)."""
    value = self.flat_config.get("study")
    return value if isinstance(value, str) else ""

  @property
  def eval_interval(self) -> str:
    """How often the run was evaluated, as its config says: 'every 100 steps', 'every 5 epochs' or
    'at the end' (`eval.every_steps` wins over `eval.every_epochs`, as in training)."""
    steps, epochs = self.flat_config.get("eval.every_steps"), self.flat_config.get("eval.every_epochs")
    return f"every {steps} steps" if steps else f"every {epochs} epochs" if epochs else "at the end"

  def final_metrics(self) -> dict:
    """Scalar final metrics: summary.json's `final` and `gaps`, else the last evaluation record."""
    if self.summary and isinstance(self.summary.get("final"), dict) and self.summary["final"]:
      gaps = self.summary.get("gaps")
      out = dict(self.summary["final"]) | (gaps if isinstance(gaps, dict) else {})
    else:
      evals = [r for r in self.metrics if any(k.endswith("/accuracy") and not k.startswith("train/")
                                              for k in r)]
      out = dict(evals[-1]) if evals else {}
    return {k: v for k, v in out.items() if _is_number(v) and k not in ("step", "epoch")}

  def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric over training, in step order (non-finite values kept as nan)."""
    pts = [(r["step"], _to_float(r[metric])) for r in self.metrics if metric in r and _is_number(r[metric])]
    if not pts:
      return np.zeros(0), np.zeros(0)
    steps, values = zip(*sorted(pts))
    return np.asarray(steps, np.float64), np.asarray(values, np.float64)


@dataclasses.dataclass
class Study:
  """What `load` found under a directory: its runs, the sweep index (if any) and all problems."""
  root: Path
  runs: list[Run]
  index: dict | None
  problems: list[Problem]
  override_keys: list[str]

  @property
  def study(self) -> str:
    """The common `config.study` of the runs ("" when unset or mixed), else the index's."""
    names = {r.study for r in self.runs}
    if len(names) == 1 and next(iter(names)):
      return next(iter(names))
    if len(names) <= 1 and self.index and isinstance(self.index.get("study"), str):
      return self.index["study"]
    return ""

  @property
  def group_keys(self) -> list[str]:
    """The override keys that define a condition (every override except the seed)."""
    return [k for k in self.override_keys if k not in ("seed", "data.options.seed")]

  @property
  def label_keys(self) -> list[str]:
    """The group keys that name a condition in labels and tables: without keys that take one value
    over all runs, and without measurement settings (`MEASUREMENT_SECTIONS`, e.g. a curvature schedule
    zipped with the batch size) whose value follows from the other keys. Groups are the same."""
    rows = [{k: json.dumps(r.overrides.get(k, r.flat_config.get(k)), sort_keys=True, default=str)
             for k in self.group_keys} for r in self.runs]
    keys = list(self.group_keys)
    if len(rows) > 1:
      keys = [k for k in keys if len({row[k] for row in rows}) > 1]
    for k in [k for k in keys if k.startswith(MEASUREMENT_SECTIONS)]:
      rest = [j for j in keys if j != k]
      mapping = {}
      if rest and all(mapping.setdefault(tuple(row[j] for j in rest), row[k]) == row[k] for row in rows):
        keys = rest
    return keys


def _is_number(v) -> bool:
  if isinstance(v, bool):
    return False
  if isinstance(v, int | float):
    return True
  return isinstance(v, str) and v in ("nan", "inf", "-inf")


def _to_float(v) -> float:
  return float(v)  # also "nan", "inf", "-inf", as rundir writes non-finite values


def flatten(config: dict, prefix: str = "") -> dict:
  """Nested dict -> {dotted key: value}; lists become tuples (hashable, as configs hold them)."""
  out = {}
  for k, v in config.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out |= flatten(v, key + ".")
    else:
      out[key] = tuple(v) if isinstance(v, list) else v
  return out


def _read_json(path: Path, run: str, problems: list[Problem], root: Path, required: bool = True):
  rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
  try:
    value = json.loads(path.read_text())
  except FileNotFoundError:
    if required:
      problems.append(Problem(run, rel, "missing"))
    return None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    problems.append(Problem(run, rel, f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:80]})"))
    return None
  if not isinstance(value, dict):
    problems.append(Problem(run, rel, f"unreadable (a JSON {type(value).__name__}, not an object)"))
    return None
  return value


def read_metrics(path: Path, run: str, problems: list[Problem]) -> list[dict]:
  """The readable records of a metrics.jsonl. A half-written last line (no newline or bad JSON) and
  corrupt lines in the middle are skipped and recorded as problems."""
  try:
    text = path.read_text(errors="replace")
  except FileNotFoundError:
    problems.append(Problem(run, path.name, "missing"))
    return []
  except OSError as e:
    problems.append(Problem(run, path.name, f"unreadable ({e})"))
    return []
  records, bad = [], []
  lines = text.splitlines(keepends=True)
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        raise ValueError("no integer 'step'")
    except ValueError:
      if i == len(lines) - 1:
        problems.append(Problem(run, path.name, f"last line (line {i + 1}) is half-written; skipped"))
      else:
        bad.append(i + 1)
      continue
    records.append(record)
  if bad:
    shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
    problems.append(Problem(run, path.name, f"{len(bad)} corrupt line(s) skipped (line {shown})"))
  return records


def _check_numbers(records: list[dict], run: str, file: str, problems: list[Problem]) -> None:
  """Notes each metric that holds a string where a number belongs (the readers skip such values)."""
  bad: dict[str, tuple] = {}
  for r in records:
    for k, v in r.items():
      if isinstance(v, str) and k != "step" and not _is_number(v):
        bad.setdefault(k, (r.get("step"), v))
  for k, (step, v) in bad.items():
    problems.append(Problem(run, file, f"`{k}` unreadable (the string {v[:30]!r} at step {step}, not a "
                                       "number); ignored"))


def load_run(path: str | Path, *, name: str | None = None, root: str | Path | None = None) -> Run:
  """Reads one run directory; never raises for missing or damaged files (see `Run.problems`)."""
  path = Path(path)
  root = Path(root) if root is not None else path
  name = name or (path.name if path != root else path.resolve().name)
  problems: list[Problem] = []
  config = _read_json(path / "config.json", name, problems, path) or {}
  meta = _read_json(path / "meta.json", name, problems, path)
  summary = _read_json(path / "summary.json", name, problems, path)
  metrics = read_metrics(path / "metrics.jsonl", name, problems)
  curvature = []
  curv_dir = path / "curvature"
  if curv_dir.is_dir():
    for f in sorted(curv_dir.glob("*.json")):
      record = _read_json(f, name, problems, path)
      if record is None:
        continue
      npz = f.with_suffix(".npz")
      curvature.append(record | {"file": str(f), "arrays": str(npz) if npz.exists() else None})
  posthoc = read_metrics(path / "posthoc.jsonl", name, problems) if (path / "posthoc.jsonl").exists() else []
  _check_numbers(metrics, name, "metrics.jsonl", problems)
  final = (summary or {}).get("final")
  if final is not None and not isinstance(final, dict):
    what = f"`final` unreadable (a {type(final).__name__}, not an object)"
    problems.append(Problem(name, "summary.json", what))
  elif final:
    _check_numbers([final | {"step": "final"}], name, "summary.json", problems)
  run = Run(path, name, config, flatten(config), meta, summary, metrics, curvature, problems,
            posthoc=posthoc)
  status = run.status
  if status not in ("done", "early_stopped", "unknown"):
    detail = (meta or {}).get("error") or ""
    what = f"run status is {status!r}" + (f" ({detail})" if detail else "")
    problems.append(Problem(name, "meta.json", what))
  return run


def find_run_dirs(root: Path, max_depth: int = 3) -> list[Path]:
  """Directories under root (root included) that hold a config.json, not inside checkpoints/."""
  found = []

  def walk(d: Path, depth: int):
    if (d / "config.json").exists():
      found.append(d)
      return
    if depth == max_depth:
      return
    try:
      children = sorted(p for p in d.iterdir() if p.is_dir() and p.name not in SKIPPED_DIRS)
    except OSError:
      return
    for c in children:
      walk(c, depth + 1)

  walk(Path(root), 0)
  return found


def _read_index(root: Path, problems: list[Problem]) -> dict | None:
  """sweep.json (an object with `trials`) or index.jsonl (one trial object per line)."""
  name = root.resolve().name
  if (root / "sweep.json").exists():
    index = _read_json(root / "sweep.json", name, problems, root)
    if index is not None and not isinstance(index.get("trials"), list):
      problems.append(Problem(name, "sweep.json", "has no list of trials; ignored"))
      return None
    return index
  if (root / "index.jsonl").exists():
    trials = []
    for record in read_metrics_like(root / "index.jsonl", name, problems):
      trials.append(record)
    return {"trials": trials}
  return None


def read_metrics_like(path: Path, run: str, problems: list[Problem]) -> list[dict]:
  """JSON objects of a .jsonl file, skipping (and recording) unreadable lines."""
  out = []
  for i, line in enumerate(path.read_text(errors="replace").splitlines()):
    if not line.strip():
      continue
    try:
      value = json.loads(line)
    except ValueError:
      problems.append(Problem(run, path.name, f"line {i + 1} unreadable; skipped"))
      continue
    if isinstance(value, dict):
      out.append(value)
  return out


def differing_keys(configs: list[dict]) -> list[str]:
  """Dotted keys whose values differ across flat configs (the overrides when no index says)."""
  keys = []
  for c in configs:
    keys += [k for k in c if k not in keys]
  return [k for k in keys if k not in IGNORED_KEYS
          and len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]


def load(path: str | Path) -> Study:
  """A run, a sweep or a folder of runs (see the module docstring). Raises only if `path` is not a
  directory; an empty folder gives a Study without runs (and a problem saying so)."""
  root = Path(path)
  if not root.is_dir():
    raise UserError(f"{root} is not a directory (give a run directory or a sweep directory)")
  problems: list[Problem] = []
  index = None if (root / "config.json").exists() else _read_index(root, problems)
  runs: list[Run] = []
  seen = set()
  if index is not None:
    for trial in index["trials"]:
      tname = trial.get("name") or trial.get("dir")
      if not isinstance(tname, str):
        continue
      d = root / tname
      if not (d / "config.json").exists():
        status = trial.get("status", "unknown")
        problems.append(Problem(tname, "config.json", f"missing (trial status in the index: {status})"))
        continue
      run = load_run(d, name=tname, root=root)
      run.overrides = dict(trial.get("overrides") or {})
      runs.append(run)
      seen.add(d.resolve())
  for d in find_run_dirs(root):
    if d.resolve() in seen:
      continue
    name = str(d.relative_to(root)) if d != root else root.resolve().name
    runs.append(load_run(d, name=name, root=root))
  if not runs:
    problems.append(Problem(root.resolve().name, "config.json", "no run directory found"))
  for run in runs:
    problems.extend(run.problems)
  override_keys = []
  if index is not None:
    for run in runs:
      override_keys += [k for k in run.overrides if k not in override_keys]
    common = index.get("common_overrides") or {}
    override_keys = [k for k in override_keys
                     if len({json.dumps(r.overrides.get(k), sort_keys=True) for r in runs}) > 1
                     or (k not in common and len(runs) == 1)]
  # Runs found outside the index (or no index at all): overrides are the keys that differ.
  derived = differing_keys([r.flat_config for r in runs if r.config]) if len(runs) > 1 else []
  for k in derived:
    if k not in override_keys:
      override_keys.append(k)
  for run in runs:
    for k in override_keys:
      if k not in run.overrides and k in run.flat_config:
        run.overrides[k] = run.flat_config[k]
  return Study(root, runs, index, problems, override_keys)


def _curvature_columns(run: Run) -> dict:
  """Latest post-hoc curvature measurement (prefer the Hessian on the training split)."""
  def rank(rec):
    op = rec.get("operator") or {}
    return (op.get("step", -1) if isinstance(op.get("step"), int) else -1,
            op.get("operator") == "hessian", op.get("split") == "train")

  out = {}
  usable = [r for r in run.curvature if isinstance(r.get("results"), dict)]
  if not usable:
    return out
  rec = max(usable, key=rank)
  res = rec["results"]
  spectrum = res.get("spectrum") or {}
  if _is_number(spectrum.get("lambda_max")):
    out["curv/lambda_max"] = _to_float(spectrum["lambda_max"])
  trace = res.get("trace_hutchinson") or {}
  if _is_number(trace.get("estimate")):
    out["curv/trace"] = _to_float(trace["estimate"])
    if _is_number(trace.get("std_error")):
      out["curv/trace_se"] = _to_float(trace["std_error"])
  out["curv/step"] = (rec.get("operator") or {}).get("step")
  return out


def run_row(run: Run, override_keys: list[str]) -> dict:
  """One row of `runs_table`."""
  row = {"run": run.name, "path": str(run.path), "status": run.status, "seed": run.seed}
  for k in override_keys:
    v = run.overrides.get(k, run.flat_config.get(k))
    row[k] = tuple(v) if isinstance(v, list) else v
  row |= {k: _to_float(v) for k, v in run.final_metrics().items()}
  last = {}
  for r in run.metrics:
    for k, v in r.items():
      if k.startswith(EVALUATOR_PREFIXES) and _is_number(v):
        last[k] = _to_float(v)
  row |= last
  final_step = max((r["step"] for r in run.metrics if _is_number(r.get("step"))), default=None)
  for r in run.posthoc:  # measured afterwards on the final checkpoint: fills what training did not log
    if r.get("step") == final_step:
      for k, v in r.items():
        if k.startswith(EVALUATOR_PREFIXES) and _is_number(v):
          row.setdefault(k, _to_float(v))
  for k, v in _curvature_columns(run).items():
    row.setdefault(k, v)
  if run.summary:
    for k in ("step", "wall_time_s", "num_params", "steps_per_s"):
      if _is_number(run.summary.get(k)):
        row[f"summary/{k}"] = _to_float(run.summary[k])
  return row


def runs_table(study: Study) -> pd.DataFrame:
  """One row per run (see the module docstring for the columns)."""
  rows = [run_row(r, study.override_keys) for r in study.runs]
  return pd.DataFrame(rows)


def history(study: Study, metrics: list[str] | None = None) -> pd.DataFrame:
  """Long table of scalar metrics over training: run, step, epoch, metric, value, override columns."""
  rows = []
  for run in study.runs:
    ov = {k: run.overrides.get(k, run.flat_config.get(k)) for k in study.override_keys}
    for r in run.metrics:
      for k, v in r.items():
        if k in ("step", "epoch") or not _is_number(v) or (metrics is not None and k not in metrics):
          continue
        rows.append({"run": run.name, "step": r["step"], "epoch": r.get("epoch", math.nan),
                     "metric": k, "value": _to_float(v)} | ov)
  return pd.DataFrame(rows, columns=["run", "step", "epoch", "metric", "value", *study.override_keys])


def condition_label(overrides: dict, keys: list[str]) -> str:
  """`norm=batch, lr=0.1`: short names (last dotted part) of the condition keys and their values."""
  parts = []
  short = [k.rsplit(".", 1)[-1] for k in keys]
  for k, name in zip(keys, short):
    v = overrides.get(k)
    v = f"{v:.3g}" if isinstance(v, float) else v
    name = ".".join(k.split(".")[-2:]) if short.count(name) > 1 else name  # loss.name vs optimizer.name
    parts.append(f"{name}={v}")
  return ", ".join(parts) if parts else "all runs"


def provenance(study: Study) -> dict:
  """What a results index states next to a study's verdicts: runs, seeds per condition (min and max),
  the sweep's wall time (first trial start to last trial end, seconds; None when not recorded) and the
  code versions (`git` of the runs' meta.json)."""
  per_condition: dict[str, int] = {}
  for r in study.runs:
    key = json.dumps({k: r.overrides.get(k) for k in study.group_keys}, sort_keys=True, default=str)
    per_condition[key] = per_condition.get(key, 0) + 1
  trials = (study.index or {}).get("trials") or []
  starts = [t.get("started") for t in trials if isinstance(t, dict) and isinstance(t.get("started"), str)]
  ends = [t.get("ended") for t in trials if isinstance(t, dict) and isinstance(t.get("ended"), str)]
  wall = None
  if starts and ends:
    try:
      wall = (datetime.datetime.fromisoformat(max(ends)) - datetime.datetime.fromisoformat(min(starts)))
      wall = round(wall.total_seconds(), 1)
    except ValueError:
      wall = None
  versions = sorted({str(r.meta.get("git")) for r in study.runs if r.meta and r.meta.get("git")})
  counts = list(per_condition.values())
  return {"runs": len(study.runs), "seeds_min": min(counts, default=0), "seeds_max": max(counts, default=0),
          "wall_time_s": wall, "code_versions": versions}
