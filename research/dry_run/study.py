"""A study's sweep on abstract shapes: `plan_study("experiments/configs/<study>.py:paper") -> StudyPlan`,
and the table of studies (`table`).

Every trial of the config file's `get_sweep(variant)` gets its overrides applied to `get_config(variant)`
as `python -m experiments.sweep` would pass them (`--config.key=value`) and is planned
(`research.dry_run.trial`); trials whose configs are equal up to `trial.VALUE_KEYS` share one plan. A
trial that fails becomes one line naming the study, the variant and the trial (`StudyPlan.failures`).
"""

import dataclasses
import textwrap
import time
import traceback

import ml_collections

from research.core.errors import UserError
from research.dry_run.costs import Throughput
from research.dry_run.trial import Planner, TrialPlan, structure
from research.sweeps import runner


@dataclasses.dataclass
class TrialResult:
  index: int
  name: str
  overrides: dict
  plan: TrialPlan | None
  error: str | None = None


@dataclasses.dataclass
class StudyPlan:
  """The trials of one study variant, planned; `failures` holds one line per trial that failed."""
  study: str
  variant: str | None
  config: str  # the file[:variant] as given
  trials: list[TrialResult]
  distinct: int  # plans made (trials equal up to VALUE_KEYS share one)
  seconds: float
  post_sweep: bool  # the file defines post_sweep (its cost is not counted)

  @property
  def label(self) -> str:
    return f"{self.study}:{self.variant}" if self.variant else self.study

  @property
  def failures(self) -> list[str]:
    return [f"{self.label} trial {t.name}: {t.error}" for t in self.trials if t.error]

  @property
  def plans(self) -> list[TrialPlan]:
    return [t.plan for t in self.trials if t.plan is not None]

  @property
  def flops(self) -> float:
    return float(sum(p.flops for p in self.plans))


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with `{dotted key: value}` set as `--config.key=value` sets it (lists as tuples;
  free-form keys such as `model.knobs.*` may be new)."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *sections, name = key.split(".")
    sub = config
    for part in sections:
      sub = sub[part]
    sub[name] = tuple(value) if isinstance(value, list) else value
  return config


def _one_line(e: BaseException) -> str:
  if isinstance(e, UserError):
    return str(e).strip().splitlines()[0] if str(e).strip() else "UserError"
  text = " ".join(str(e).split())[:300]
  where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
  at = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
  return f"{type(e).__name__}: {text}{at}"


def plan_study(config: str, planner: Planner | None = None) -> StudyPlan:
  """Plans every trial of `path/to/study.py[:variant]`'s sweep; raises UserError when the file, its
  get_config or get_sweep fail (a trial's failure is recorded in the result instead)."""
  start = time.time()
  planner = planner or Planner()
  index = runner.load_definition(config)  # get_sweep, get_config and the override keys checked
  module, _, variant = runner.config_module(config)
  base = module.get_config(variant)
  study = str(base.get("study", "")) or config.rsplit("/", 1)[-1].split(".py")[0]
  done: dict[str, TrialPlan | str] = {}
  results = []
  for trial in index["trials"]:
    plan, error = None, None
    try:
      trial_config = apply_overrides(base, trial["overrides"])
      key = structure(trial_config)
      if key not in done:
        try:
          done[key] = planner.trial(trial_config)
        except Exception as e:  # one line per trial, whatever failed
          done[key] = _one_line(e)
      plan, error = (done[key], None) if isinstance(done[key], TrialPlan) else (None, done[key])
    except Exception as e:
      error = _one_line(e)
    results.append(TrialResult(trial["index"], trial["name"], trial["overrides"], plan, error))
  return StudyPlan(study, variant, config, results, len(done), time.time() - start,
                   callable(getattr(module, "post_sweep", None)))


def studies_with(paths, variant: str | None) -> tuple[list[str], list[str]]:
  """(`path:variant` of every study file among `paths` that has the variant, the files that have not):
  a file has it when its `VARIANTS` lists it or, without `VARIANTS`, when `get_config(variant)` accepts
  it."""
  found, without = [], []
  for path in sorted(str(p) for p in paths):
    module, _, _ = runner.config_module(path)
    names = getattr(module, "VARIANTS", None)
    if names is not None:
      has = variant in names
    else:
      try:
        module.get_config(variant)
        has = True
      except ValueError:
        has = False
    (found if has else without).append(f"{path}:{variant}" if variant and has else path)
  return found, without


def hours(h: float) -> str:
  """GPU-hours for a table or a docstring: 2 significant digits below 1, then 1 decimal, then none."""
  return f"{h:,.0f}" if h >= 10 else f"{h:.1f}" if h >= 1 else f"{h:.2g}"


def cost_line(s: StudyPlan, throughput: Throughput, command: str = "python -m experiments.dry_run") -> str:
  """The lines a study's docstring carries about its variant's expected cost: a sentence wrapped at 110
  columns, then the command that printed it (generated, never typed)."""
  per = [throughput.gpu_hours(p.flops) for p in s.plans]
  t = throughput
  total = hours(t.gpu_hours(s.flops))
  sentence = (f"Expected cost of `{s.variant}`: {len(s.trials)} trials of {_span(per, hours)} GPU-hours "
              f"each, {total} GPU-hours for the sweep ({s.flops / 1e15:,.0f} PFLOP), an estimate from "
              f"XLA's FLOP counts at {t.utilization:.0%} of the {t.name}'s {t.precision} peak of "
              f"{t.peak_tflops:g} TFLOP/s, printed by")
  return "\n".join([textwrap.fill(sentence, width=110, break_long_words=False, break_on_hyphens=False),
                    f"  {command} --config {s.config}"])


def _span(values, fmt) -> str:
  lo, hi = fmt(min(values)), fmt(max(values))
  return lo if lo == hi else f"{lo}-{hi}"


def _params(n: float) -> str:
  return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


COLUMNS = ("study", "trials", "params", "steps/trial", "PFLOP", "eval %", "GPU-h/trial", "GPU-h")


def rows(studies: list[StudyPlan], throughput: Throughput) -> list[tuple[str, ...]]:
  """One row per study (and a total): trials, parameters, steps per trial, PFLOPs of the whole sweep, the
  share of them spent outside train steps (evaluation and evaluators), GPU-hours per trial and in all."""
  out, total = [], 0.0
  for s in studies:
    plans = s.plans
    if not plans:
      out.append((s.label, str(len(s.trials)), "-", "-", "-", "-", "-", "failed"))
      continue
    flops = s.flops
    total += flops
    other = sum(p.flops - p.flops_of("train steps") for p in plans)
    per_trial = [throughput.gpu_hours(p.flops) for p in plans]
    failed = f" ({len(s.failures)} failed)" if s.failures else ""
    out.append((s.label, f"{len(s.trials)}{failed}", _span([p.num_params for p in plans], _params),
                _span([p.total_steps for p in plans], lambda n: f"{n:,}"), f"{flops / 1e15:,.1f}",
                f"{100 * other / flops:.0f}", _span(per_trial, hours), hours(throughput.gpu_hours(flops))))
  out.append(("total", str(sum(len(s.trials) for s in studies)), "", "", f"{total / 1e15:,.1f}", "", "",
              hours(throughput.gpu_hours(total))))
  return out


def table(studies: list[StudyPlan], throughput: Throughput) -> str:
  """The per-study table as aligned text."""
  body = [COLUMNS, *rows(studies, throughput)]
  widths = [max(len(r[i]) for r in body) for i in range(len(COLUMNS))]
  line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
  return "\n".join([line(body[0]), line(tuple("-" * w for w in widths)), *map(line, body[1:])])


def describe(s: StudyPlan, throughput: Throughput) -> str:
  """Every distinct plan of a study: the trials that share it, what was checked, its costs."""
  lines = [f"{s.label}: {len(s.trials)} trials, {s.distinct} distinct programs traced in {s.seconds:.1f} s"]
  groups: dict[int, list[TrialResult]] = {}
  for t in s.trials:
    groups.setdefault(id(t.plan) if t.plan is not None else -t.index - 1, []).append(t)
  for members in groups.values():
    plan = members[0].plan
    names = ", ".join(t.name for t in members)
    if plan is None:
      lines.append(f"  {names}: FAILED: {members[0].error}")
      continue
    gpu = hours(throughput.gpu_hours(plan.flops))
    lines.append(f"  {names}: {plan.flops / 1e15:,.2f} PFLOP, {gpu} GPU-hours")
    lines += [f"    {c}" for c in plan.checked]
    for c in plan.costs:
      note = f" ({c.note})" if c.note else ""
      lines.append(f"    cost: {c.what}: {c.calls:,.0f} x {c.flops / 1e9:,.3g} GFLOP = "
                   f"{c.total / 1e15:,.3g} PFLOP{note}")
    lines += [f"    note: {n}" for n in plan.notes]
  return "\n".join(lines)
