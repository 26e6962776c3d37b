"""The sections every report has, whatever its study: Setup (from the configs, meta.json and
summary.json), Reproduce (from the commands the run directories record), Limitations common to all
studies, and Missing or unreadable.

Every field read here is optional: an absent field, or one of another type than expected, is shown as
`n/a` and listed by `Fields.problems()` (one entry per file and field, naming the runs). Reproduce
shows recorded command lines only (`meta.json`'s `launch`, the sweep index's `command`, posthoc.jsonl,
a curvature record's `launch`); it never rebuilds a command by loading a config file, and a run that
records none is listed as such.
"""

import math
import shlex

import numpy as np

from analysis import runs
from analysis.document import Code, Section, distinct, num, show
from analysis.results import Context

_KINDS = {"number": "a number", "int": "an integer", "str": "a string", "list": "a list", "dict": "an object",
          "bool": "true or false", "any": "a value"}


def _is_kind(value, kind: str) -> bool:
  if kind == "number":
    return runs._is_number(value)
  if kind == "int":
    return isinstance(value, int) and not isinstance(value, bool)
  types = {"str": str, "list": list | tuple, "dict": dict, "bool": bool, "any": object}
  return isinstance(value, types[kind])


class Fields:
  """Typed reads of the runs' optional fields; what is absent or mistyped is collected as problems."""

  def __init__(self):
    self._notes: dict[tuple[str, str], list[str]] = {}

  def note(self, name: str, file: str, what: str) -> None:
    """`name` (a run, or the sweep) has a problem `what` in `file`."""
    names = self._notes.setdefault((file, what), [])
    if name not in names:
      names.append(name)

  def get(self, run: runs.Run, file: str, key: str, kind: str = "any"):
    """`key` of the run's `file` (config.json by dotted key, meta.json, summary.json) if it has the
    `kind`, else None (noted; nothing is noted when the file itself is missing: that is listed)."""
    source = {"config.json": run.flat_config if run.config else None, "meta.json": run.meta,
              "summary.json": run.summary}[file]
    if source is None:
      return None
    if key not in source or source[key] is None:
      self.note(run.name, file, f"`{key}` missing")
      return None
    value = source[key]
    if not _is_kind(value, kind):
      self.note(run.name, file, f"`{key}` unreadable ({type(value).__name__} {str(value)[:30]!r}, expected "
                           f"{_KINDS[kind]})")
      return None
    return float(value) if kind == "number" else value

  def values(self, rs: list[runs.Run], file: str, key: str, kind: str = "any") -> list:
    return [v for r in rs if (v := self.get(r, file, key, kind)) is not None]

  def problems(self) -> list[runs.Problem]:
    out = []
    for (file, what), names in self._notes.items():
      who = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
      out.append(runs.Problem(who, file, what))
    return out


WITH_MOMENTUM = ("momentum", "nesterov", "lars")  # the optimizers that read `optimizer.momentum`
WITH_B1 = ("adam", "adamw", "lamb", "lion")  # and those that read `optimizer.b1`


def _fmt_int(v) -> str:
  return f"{int(v):,}" if math.isfinite(v) else "n/a"


def setup_section(ctx: Context, fields: Fields) -> Section:
  """Data, model, optimizer, schedule, steps, seeds, hardware, library versions, git hash."""
  rs = [r for r in ctx.study.runs if r.config]
  c = lambda key, kind="any": fields.values(rs, "config.json", key, kind)
  summ = lambda key, kind="number": fields.values(rs, "summary.json", key, kind)
  meta = lambda key, kind="any": fields.values(rs, "meta.json", key, kind)
  items = []

  def section_values(prefix: str) -> str:
    found: dict[str, list] = {}
    for r in rs:
      for k, v in r.flat_config.items():
        if k.startswith(prefix):
          found.setdefault(k.removeprefix(prefix), []).append(v)
    return ", ".join(f"{k}={show(v)}" for k, v in found.items())

  options = section_values("data.options.") or "defaults"
  knobs = section_values("model.knobs.") or "default knobs"
  items.append(f"**Data**: `{show(c('data.name', 'str'))}` ({options}); "
               f"training examples: {show(summ('num_train'), _fmt_int)}; augmentation: crop padding "
               f"{show(c('data.augment.crop_padding'))}, flip {show(c('data.augment.flip'))}.")
  items.append(f"**Model**: `{show(c('model.name', 'str'))}` ({knobs}); "
               f"{show(summ('num_params'), _fmt_int)} parameters; mixed precision "
               f"{show(c('model.mixed_precision'))}.")
  items.append(f"**Loss**: {show(c('loss.name'))}, label smoothing {show(c('loss.label_smoothing'))}.")
  of_kind = lambda names: [r for r in rs if r.flat_config.get("optimizer.name") in names]
  moment = [f"momentum {show(fields.values(of, 'config.json', 'optimizer.momentum'))}"
            for of in [of_kind(WITH_MOMENTUM)] if of]
  moment += [f"b1 {show(fields.values(of, 'config.json', 'optimizer.b1'))}"
             for of in [of_kind(WITH_B1)] if of]
  opt = (f"**Optimizer**: {show(c('optimizer.name'))}, learning rate {show(c('schedule.lr'))}, "
         + "".join(f"{m}, " for m in moment)
         + f"weight decay {show(c('optimizer.weight_decay'))}, gradient clipping "
         f"{show(c('optimizer.grad_clip_norm'))}")
  rho = distinct(v for r in rs if (v := r.flat_config.get("optimizer.sam.rho")) is not None)
  opt += f"; SAM rho {show(rho)}." if any(v for v in rho) else "; no SAM."
  items.append(opt)
  items.append(f"**Schedule**: {show(c('schedule.name'))}, warmup {show(c('schedule.warmup_steps'))} steps.")
  splits = show(c("eval.splits"), lambda v: ", ".join(map(str, v)) if isinstance(v, tuple) else str(v))
  batch = summ("batch_size") or c("training.batch_size")
  steps, epochs = show(summ("total_steps"), num), show(summ("epochs"), num)
  items.append(f"**Training**: {steps} steps ({epochs} epochs) at "
               f"batch size {show(batch, _fmt_int)}; full batch {show(c('training.full_batch'))}; "
               f"evaluation {show([r.eval_interval for r in rs])} on {splits}.")
  seeds = sorted({str(r.seed) for r in rs if r.seed is not None})
  per = [len(v) for v in ctx.groups().values()]
  nruns = len(ctx.study.runs)
  items.append(f"**Seeds**: {', '.join(seeds) or 'n/a'} ({nruns} run{'s' if nruns > 1 else ''}; "
               f"{show(per)} per condition).")
  if ctx.study.group_keys:
    conds = "; ".join(f"`{k}` in {{{', '.join(map(str, distinct(ctx.table[k].tolist())))}}}"
                      for k in ctx.study.group_keys if k in ctx.table.columns)
    items.append(f"**Conditions**: {conds}.")
  hw = []
  for r in rs:
    backend, kind, devices, host = (fields.get(r, "meta.json", k, t) for k, t in (
        ("backend", "str"), ("device_kind", "str"), ("devices", "list"), ("host", "str")))
    if r.meta is not None:
      hw.append(f"{backend or '?'} ({kind or '?'}, {len(devices or [])} device(s)) on {host or '?'}")
  wall = summ("wall_time_s")
  wall_text = num(float(np.mean(wall))) if wall else "n/a"
  items.append(f"**Hardware**: {show(hw)}; wall time per run {wall_text} s"
               + (f" (total {num(float(np.sum(wall)))} s)." if len(wall) > 1 else "."))
  convs: dict[str, int] = {}  # the convolutions of each run (counted), the oneDNN verdicts summed over runs
  hits = checks = refused = 0
  for b in meta("backend_setup", "dict"):
    v = b.get("onednn_verdicts") if isinstance(b.get("onednn_verdicts"), dict) else {}
    kind = (f"convolutions {b.get('convolutions', '?')}"
            + (" (first layer as shifted products)" if b.get("first_layer_taps") else ""))
    convs[kind] = convs.get(kind, 0) + 1
    hits += int(v.get("hits", 0) or 0)
    checks += int(v.get("checks", 0) or 0)
    refused += len(v.get("refused")) if isinstance(v.get("refused"), list) else 0
  if convs:
    n = sum(convs.values())
    kinds = "; ".join(f"{k} in {m} of {n} run{'s' if n > 1 else ''}" if len(convs) > 1 or m < n else
                      f"{k} in {'every' if n > 1 else 'the'} run" for k, m in convs.items())
    verdicts = (f"oneDNN's per-shape verdicts, summed over the runs: {hits} cached, {checks} checked, "
                f"{refused} refused" if hits + checks + refused else
                "no convolution ran through oneDNN (no per-shape verdict: a network without convolutions, "
                "or XLA's own)")
    items.append(f"**Speed-ups** (`research.backend`, meta.json `backend_setup`): {kinds}; {verdicts}.")
  else:
    items.append("**Speed-ups** (`research.backend`, meta.json `backend_setup`): n/a.")
  versions: dict[str, list] = {}
  for v in meta("versions", "dict"):
    for k, x in v.items():
      versions.setdefault(k, []).append(x)
  vtext = ", ".join(f"{k} {show(x)}" for k, x in versions.items()) or "n/a"
  items.append(f"**Libraries**: Python {show(meta('python'))}; {vtext}.")
  items.append(f"**Code**: git {show(meta('git'), lambda v: f'`{v}`')}.")
  return Section("Setup", [items])


def _argv(record, fields: Fields, name: str, file: str, what: str) -> list[str] | None:
  """A recorded command line: `record["argv"]`, a list of strings, else None (noted)."""
  argv = record.get("argv") if isinstance(record, dict) else None
  if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
    return argv
  fields.note(name, file, f"{what} unreadable (no list of strings `argv`)")
  return None


def _launch_lines(run: runs.Run, fields: Fields) -> list[str]:
  """The command that trained `run`, as `meta.json`'s `launch` records it."""
  if run.meta is None:
    return [f"# {run.name}: not recorded (meta.json missing or unreadable)"]
  if "launch" not in run.meta:
    fields.note(run.name, "meta.json", "`launch` missing: the command that trained the run is not recorded")
    return [f"# {run.name}: the training command is not recorded"]
  launch = run.meta["launch"]
  launch = launch if isinstance(launch, dict) else {}
  argv = _argv(launch, fields, run.name, "meta.json", "`launch`")
  if argv is None:
    return [f"# {run.name}: the training command is unreadable"]
  cwd = launch.get("cwd")
  return ([f"# launched in {cwd}"] if isinstance(cwd, str) else []) + [shlex.join(argv)]


def _override_word(key: str, value) -> str:
  text = value if isinstance(value, str) else repr(tuple(value) if isinstance(value, list) else value)
  return f"--config.{key}={text}"


def _measure_lines(run: runs.Run, fields: Fields) -> list[str]:
  """Commands of the measurements made after training: posthoc.jsonl (`experiments.measure --sections`)
  and curvature records that carry their own `launch` (`experiments.measure --operator`)."""
  out = []
  for rec in run.posthoc:
    sections, overrides = rec.get("sections"), rec.get("overrides")
    if not (isinstance(sections, list) and all(isinstance(s, str) for s in sections)
            and isinstance(overrides, dict)):
      fields.note(run.name, "posthoc.jsonl", f"the record of step {rec['step']} has no readable `sections` "
                                             "and `overrides`; its command is not shown")
      continue
    argv = ["python", "-m", "experiments.measure", "--workdir", str(run.path), "--sections",
            ",".join(sections), "--checkpoint", str(rec["step"])]
    argv += [_override_word(k, v) for k, v in overrides.items()]
    out.append(shlex.join(argv))
  for rec in run.curvature:
    if rec.get("source") in ("tracking", "posthoc"):  # training's own, or posthoc.jsonl's
      continue
    file = f"curvature/{rec.get('file', '?').rsplit('/', 1)[-1]}"
    if "launch" not in rec:
      fields.note(run.name, file, "the command that measured it is not recorded")
      continue
    argv = _argv(rec["launch"], fields, run.name, file, "`launch`")
    if argv is not None:
      out.append(shlex.join(argv))
  return out


def reproduce_section(ctx: Context, fields: Fields) -> Section:
  """The recorded commands: the sweep's (or each run's), the measurements after training, this report."""
  lines = []
  index = ctx.study.index or {}
  command = index.get("command")
  sweep = ctx.study.root.resolve().name
  sweep_argv = None
  if command is not None:
    sweep_argv = _argv(command, fields, sweep, "sweep.json", "`command`")
  if sweep_argv is not None:
    lines.append("# the sweep (all trials; resumes finished ones)")
    if isinstance(command.get("cwd"), str):
      lines.append(f"# launched in {command['cwd']}")
    lines.append(shlex.join(sweep_argv))
  else:
    if ctx.study.index is not None:
      fields.note(sweep, "sweep.json", "`command` missing: the sweep command is not recorded (each trial's "
                                       "is shown)")
    lines.append("# each run")
    for r in ctx.study.runs[:12]:
      lines += _launch_lines(r, fields)
    if len(ctx.study.runs) > 12:
      lines.append(f"# ... and {len(ctx.study.runs) - 12} more runs the same way")
      for r in ctx.study.runs[12:]:
        _launch_lines(r, fields)  # notes what is missing
  cmds = [cmd for r in ctx.study.runs for cmd in _measure_lines(r, fields)]
  if cmds:
    lines.append("# measured after training")
    lines += cmds[:12] + ([f"# ... and {len(cmds) - 12} more"] if len(cmds) > 12 else [])
  lines.append("# this report")
  lines.append(shlex.join(["python", "-m", "analysis.report", str(ctx.study.root), "--out", str(ctx.out)]))
  return Section("Reproduce", ["Commands as recorded by the run directories, run from the directory they "
                              "were launched in (the repository root, with its `.venv/bin/python` as "
                              "`python`):", Code("\n".join(lines))])


def missing_section(problems: list) -> Section:
  if not problems:
    return Section("Missing or unreadable", ["Nothing: every expected file was present and readable."])
  return Section("Missing or unreadable", [
      f"{len(problems)} problem(s); the report uses what could be read.",
      [f"`{p.run}`: `{p.file}`: {p.what}" for p in problems]])


def common_limitations(ctx: Context, fields: Fields) -> list[str]:
  out = []
  per = [len(v) for v in ctx.groups().values()]
  if per and min(per) < 5:
    span = f"{min(per)}" if min(per) == max(per) else f"{min(per)}–{max(per)}"
    out.append(f"{span} seed(s) per condition: where an interval over seeds is given (t for means, Welch for "
               "differences and ratios), it assumes normally distributed seed-to-seed variation and is wide "
               "with so few seeds; a comparison whose interval contains no effect is reported as "
               "inconclusive, not as no difference.")
  steps = fields.values(ctx.study.runs, "summary.json", "total_steps", "number")
  fit = [a for r in ctx.study.runs
         if isinstance(a := r.final_metrics().get("eval_train/accuracy"), (int, float))]
  if steps and max(steps) < 2000 and not (fit and len(fit) == len(ctx.study.runs) and min(fit) >= 0.99):
    reached = (f"; training-subset accuracy at the end {100 * min(fit):.1f}–{100 * max(fit):.1f}%" if fit
               else "")
    out.append(f"Short training ({num(max(steps))} steps at most{reached}): numbers may describe early "
               "training rather than converged models.")
  notdone = [r.name for r in ctx.study.runs if r.status not in ("done", "early_stopped")]
  if notdone:
    out.append(f"{len(notdone)} run(s) did not finish (status other than done): {', '.join(notdone[:6])}.")
  ops = [c["operator"] for r in ctx.study.runs for c in r.curvature if isinstance(c.get("operator"), dict)]
  if ops:
    sources = [c.get("source") for r in ctx.study.runs for c in r.curvature]
    n = distinct([op.get("num_examples") for op in ops])
    modes = distinct([op.get("bn_mode") for op in ops])
    measured = [r for r in ctx.study.runs if r.curvature]
    # tracked in metrics.jsonl every `curvature.every_steps` (only the end writes a record file)
    tracked = [r for r in measured if (r.flat_config.get("curvature.every_steps") or 0) > 0
               or len(r.curvature) > 1]
    when = ("after training" if not any(s == "tracking" for s in sources)
            else "during and after training" if not all(s == "tracking" for s in sources)
            else "at the end of training" if not tracked
            else "during training" if len(tracked) == len(measured)
            else f"during training in {len(tracked)} of the {len(measured)} runs that measured it, at the "
                 "end in the others")
    bn = any(r.has_batchnorm for r in ctx.study.runs)  # without BatchNorm there is no mode to state
    out.append(f"The Hessian was measured {when}, on a fixed probe set of {', '.join(map(str, n))} "
               f"training examples" + (f" (BatchNorm mode {', '.join(map(str, modes))})." if bn else "."))
  return out
