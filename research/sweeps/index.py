"""The sweep directory: one run directory per trial and `sweep.json`, the index of trials.

```
<sweep dir>/sweep.json            the definition (config file, variant, study, common overrides, the
                                  overrides of every trial, the study's pre-registered `criteria` and
                                  when they were registered) and each trial's index, name, status, exit
                                  code, attempts, wall time, pid while running, last error line
<sweep dir>/.sweep.lock           held (fcntl.flock) by the sweep process running on this directory
<sweep dir>/<name>/               the trial's run directory (DESIGN.md), plus `log.txt` (its stdout and
                                  stderr) and `.trial.lock` (held by the trial's training process)
```
A trial is named by its index and the overrides that vary across the sweep, e.g. `003-lr=0.1-seed=1`
(the last part of a dotted key, or the whole key where two keys would share it). `sweep.json` is
rewritten atomically at every change (temp file + rename); the trial's own `meta.json` is the truth
about a finished trial, and `refresh` reads it.
"""

import fcntl
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from research.core import rundir
from research.core.errors import UserError

INDEX_FILE = "sweep.json"
LOCK_FILE = ".sweep.lock"
TRIAL_LOCK_FILE = ".trial.lock"
LOG_FILE = "log.txt"
FINISHED = ("done", "early_stopped", "diverged")  # a re-run skips these
STATUSES = ("pending", "running", "interrupted", "failed") + FINISHED
_MAX_NAME = 120


def _format_value(value) -> str:
  if isinstance(value, float):
    text = f"{value:.3g}"
  elif isinstance(value, list | tuple):
    text = ",".join(_format_value(v) for v in value)
  else:
    text = str(value)
  return re.sub(r"[^A-Za-z0-9._,+-]", "_", text)


def _short(key: str) -> str:
  """`schedule.lr` -> `lr`; `optimizer.name` -> `optimizer` (the section says more than `name`)."""
  parts = key.split(".")
  return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def trial_names(overrides: Sequence[dict]) -> list[str]:
  """`003-lr=0.1-seed=1`: the index (zero-padded to at least 3 digits), then the keys whose values
  differ across the trials, in first-seen order, shortened to their last part (`optimizer.name` to
  `optimizer`) unless two keys would then share a name."""
  keys = []
  for o in overrides:
    keys += [k for k in o if k not in keys]
  varying = [k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in overrides}) > 1]
  short = {k: _short(k) for k in varying}
  clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
  width = max(3, len(str(len(overrides) - 1)))
  names = []
  for i, o in enumerate(overrides):
    parts = [f"{i:0{width}d}"]
    parts += [f"{k if short[k] in clashes else short[k]}={_format_value(o[k])}" for k in varying if k in o]
    names.append("-".join(parts)[:_MAX_NAME])
  return names


def _canonical(value):
  """JSON round trip (tuples -> lists), so stored and fresh definitions compare equal."""
  return json.loads(json.dumps(value, sort_keys=True))


def new_index(*, config: str, config_path: str, variant: str | None, study: str, common: dict,
              overrides: Sequence[dict], criteria: Sequence[dict] = (),
              changes_after_runs: Sequence[str] = ()) -> dict:
  """A fresh index, every trial pending; `criteria` (checked dicts) are recorded with the time, before
  any trial runs, and never rewritten by a resumed sweep; so are `changes_after_runs`, the config's
  statements of what its design changed after seeing earlier runs (the report prints them by the
  verdicts)."""
  names = trial_names(overrides)
  return {
      "config": config, "config_path": config_path, "variant": variant, "study": study,
      "common_overrides": _canonical(common), "created": rundir.now(), "updated": rundir.now(),
      "criteria": [_canonical(c) for c in criteria],
      "criteria_registered": rundir.now() if criteria else None,
      "changes_after_runs": list(changes_after_runs),
      "trials": [{"index": i, "name": name, "overrides": _canonical(o), "status": "pending",
                  "exit_code": None, "attempts": 0, "wall_time_s": 0.0, "pid": None, "started": None,
                  "ended": None, "error": None}
                 for i, (name, o) in enumerate(zip(names, overrides))],
  }


def same_definition(a: dict, b: dict) -> str | None:
  """None if two indexes define the same sweep, else what differs (for the refusal message)."""
  for key in ("config_path", "variant", "common_overrides"):
    if a.get(key) != b.get(key):
      return f"{key}: {a.get(key)!r} vs {b.get(key)!r}"
  ta, tb = [t["overrides"] for t in a["trials"]], [t["overrides"] for t in b["trials"]]
  if ta != tb:
    first = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
    return f"{len(ta)} vs {len(tb)} trials, first difference at trial {first}"
  return None


def write(workdir: Path, index: dict) -> None:
  index["updated"] = rundir.now()
  rundir.write_json_atomic(Path(workdir) / INDEX_FILE, index)


def load(workdir: str | Path) -> dict:
  """The index of a sweep directory (`sweep.json`), trial statuses refreshed from their `meta.json`."""
  workdir = Path(workdir)
  index = rundir.read_json(workdir / INDEX_FILE)
  if index is None:
    raise UserError(f"{workdir} is not a sweep directory (no readable {INDEX_FILE})")
  refresh(workdir, index)
  return index


def refresh(workdir: Path, index: dict) -> None:
  """A finished trial's status from its run directory's `meta.json` (the truth); a trial whose run
  directory is gone is pending again."""
  for trial in index["trials"]:
    run = Path(workdir) / trial["name"]
    meta = rundir.read_json(run / "meta.json")
    if meta is not None and meta.get("status") in FINISHED:
      trial["status"] = meta["status"]
    elif not run.exists():
      trial.update(status="pending", pid=None)
    elif trial["status"] == "running" and not trial_busy(run):  # its process is gone
      trial.update(status="interrupted", pid=None)


def try_lock(path: Path) -> int | None:
  """An open file descriptor holding an exclusive `flock` on `path` (created), or None if another
  open file holds it. The lock lasts while any process has this descriptor open."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None
  return fd


def trial_busy(run: Path) -> bool:
  """Whether a training process holds the trial's lock (it inherited the descriptor from its sweep)."""
  if not run.is_dir():
    return False
  fd = try_lock(run / TRIAL_LOCK_FILE)
  if fd is None:
    return True
  os.close(fd)
  return False


def trial_dirs(workdir: str | Path, status: str | None = "done") -> list[Path]:
  """Run directories of the trials with `status` (None: all), in index order, for analysis."""
  index = load(workdir)
  return [Path(workdir) / t["name"] for t in index["trials"] if status is None or t["status"] == status]


def summary_table(workdir: Path, index: dict) -> str:
  """One line per trial: index, name, status, exit code, attempts, wall time, steps, test accuracy."""
  rows = [("idx", "name", "status", "exit", "tries", "wall_s", "step", "test/acc")]
  for t in index["trials"]:
    summary = rundir.read_json(Path(workdir) / t["name"] / "summary.json") or {}
    acc = summary.get("final", {}).get("test/accuracy")
    rows.append((str(t["index"]), t["name"], t["status"],
                 "" if t["exit_code"] is None else str(t["exit_code"]), str(t["attempts"]),
                 f"{t['wall_time_s']:.1f}", str(summary.get("step", "")),
                 f"{acc:.4f}" if isinstance(acc, float) and math.isfinite(acc) else ""))
  widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
