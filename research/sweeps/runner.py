"""`run_sweep(config, workdir, ...)`: every trial of a config file's `get_sweep(arg)` in its own run
directory, as `python -m experiments.train` subprocesses (so a config error, a crash or a divergence stays
in its trial), N at a time on this machine or as Slurm jobs through submitit.

Re-running on the same directory continues the sweep: finished trials (meta.json status done,
early_stopped or diverged) are skipped; any other trial is started again, and training resumes from its
checkpoints (an interrupted trial continues; a failed one is retried from its last checkpoint). Within
one invocation a failed trial is retried up to `retries` times, except a bad-input failure (exit status
2), which would fail again. A sweep holds `DIR/.sweep.lock` (fcntl.flock) while it runs, so a second
sweep on the same directory refuses to start; each trial's training process holds its own
`.trial.lock`, so a trial still running (e.g. orphaned) is never started twice. On Linux a trial process
is killed when its sweep process dies (prctl PR_SET_PDEATHSIG), so killing a sweep stops its trials.

Post step: when the config file defines `post_sweep(sweep_dir: Path, arg: str | None)`, it runs as its
own job (`python -m experiments.post_sweep`, through the same launcher as the trials: a subprocess
locally, a Slurm job under `--launcher slurm`, so that no JAX work runs in the sweep process or on a
login node), while the sweep holds its lock, once every trial of the sweep has finished (status done,
early_stopped or diverged; trials skipped because they had finished earlier count), after this
invocation's trials, e.g. to compare trained runs with each other (the batch_size study interpolates
between small- and large-batch solutions). It writes only outside the trials' run directories (e.g.
`<sweep_dir>/interpolation/`) and may be re-run: a later invocation of the sweep calls it again. Its
outcome goes to `sweep.json` as `post_sweep` (status done | failed, error line, seconds, job id), its
output and any traceback to `<sweep_dir>/post_sweep.log`; a failure never changes a trial's status, but the
sweep command then exits 1. It is not called by a dry run, nor while some trial has not finished.
"""

import ctypes
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from research.core import criteria as criteria_lib
from research.core import rundir
from research.core.errors import DIVERGED_EXIT_CODE, UserError
from research.sweeps import index as index_lib
from research.sweeps import progress as progress_lib
from research.sweeps import slurm as slurm_lib
from research.training.config import FREE_FORM, config_keys, unknown_key_message

BAD_INPUT_EXIT_CODE = 2  # experiments.train: one `error:` line; retrying would fail the same way
TRAIN_COMMAND = (sys.executable, "-m", "experiments.train")
POST_SWEEP_COMMAND = (sys.executable, "-m", "experiments.post_sweep")
LAUNCHERS = ("local", "slurm")


POST_SWEEP_LOG = "post_sweep.log"


def config_module(config: str):
  """(module, path, variant) of `path/to/config.py[:variant]`."""
  path, _, variant = config.partition(":")
  variant = variant or None
  file = Path(path)
  if not file.is_file():
    raise UserError(f"config file {path!r} not found")
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    raise UserError(f"{path}: {type(e).__name__}: {e}".splitlines()[0]) from None
  return module, path, variant


def _optional_call(module, name: str, variant: str | None, path: str, *, default):
  """`module.name(variant)` when the config file defines it, else `default`; its error as one line."""
  if not callable(getattr(module, name, None)):
    return default
  try:
    return getattr(module, name)(variant)
  except UserError:
    raise
  except Exception as e:
    raise UserError(f"{path}:{variant or ''}: {name}: {type(e).__name__}: {e}".splitlines()[0]) from None


def load_definition(config: str, common: dict | None = None) -> dict:
  """A fresh index (all trials pending) from `path/to/config.py[:variant]`: calls `get_sweep(variant)`
  and `get_config(variant)` of the file, checks that every override names a config key."""
  module, path, variant = config_module(config)
  file = Path(path)
  if not callable(getattr(module, "get_sweep", None)):
    raise UserError(f"{path} defines no get_sweep(arg) returning the list of overrides of the trials "
                    "(see research.sweeps)")
  try:
    overrides = module.get_sweep(variant)
    base = module.get_config(variant)
  except UserError:
    raise
  except Exception as e:
    raise UserError(f"{path}:{variant or ''}: {type(e).__name__}: {e}".splitlines()[0]) from None
  if not isinstance(overrides, list | tuple) or not overrides:
    raise UserError(f"{path}: get_sweep({variant!r}) must return a non-empty list of dicts, got "
                    f"{type(overrides).__name__}")
  common = dict(common or {})
  reference = config_keys()
  for i, o in enumerate(overrides):
    if not isinstance(o, dict):
      raise UserError(f"{path}: trial {i} of get_sweep({variant!r}) is not a dict: {o!r}")
    shared = o.keys() & common.keys()
    if shared:
      raise UserError(f"--config.{sorted(shared)[0]} is also set by trial {i} of the sweep; "
                      "drop one of them")
  for key in {k for o in overrides for k in o} | common.keys():
    if key not in reference and not any(key.startswith(p + ".") for p in FREE_FORM):
      raise UserError(unknown_key_message(key, reference))
  specs = _optional_call(module, "get_criteria", variant, path, default=[])
  criteria = [c.to_dict() for c in criteria_lib.parse(specs)]
  changes = _optional_call(module, "get_changes_after_runs", variant, path, default=[])
  if not isinstance(changes, list | tuple) or not all(isinstance(c, str) and c for c in changes):
    raise UserError(f"{path}: get_changes_after_runs({variant!r}) must return a list of sentences (str), "
                    f"got {changes!r}"[:200])
  return index_lib.new_index(config=config, config_path=str(file.resolve()), variant=variant,
                             study=str(base.get("study", "")), common=common,
                             overrides=[dict(o) for o in overrides], criteria=criteria,
                             changes_after_runs=list(changes))


def _cli_value(value) -> str:
  """How `--config.k=v` spells a value (ml_collections parses it by the key's type)."""
  if isinstance(value, str):
    return value
  if isinstance(value, list):
    return repr(tuple(value))
  return repr(value)


def train_argv(index: dict, trial: dict, run: Path, train_command: Sequence[str] = TRAIN_COMMAND
               ) -> list[str]:
  """The command line of one trial: `python -m experiments.train --config F[:V] --workdir RUN
  --config.k=v ...` (common overrides, then the trial's)."""
  spec = index["config_path"] + (f":{index['variant']}" if index["variant"] else "")
  overrides = index["common_overrides"] | trial["overrides"]
  return [*train_command, "--config", spec, "--workdir", str(run),
          *[f"--config.{k}={_cli_value(v)}" for k, v in overrides.items()]]


def planned_steps(index: dict) -> list[int | None]:
  """Each trial's `training.num_steps` (the config file's `get_config`, then the common and the trial's
  overrides) for the progress display; None where it trains for `num_epochs` (its total depends on the
  dataset's size, known once it starts) or the config file cannot be read."""
  spec = index["config_path"] + (f":{index['variant']}" if index["variant"] else "")
  try:
    module, _, variant = config_module(spec)
    base = module.get_config(variant).training.num_steps
  except Exception:  # only a display is at stake; the trials report the error
    return [None] * len(index["trials"])
  totals = []
  for t in index["trials"]:
    steps = (index["common_overrides"] | t["overrides"]).get("training.num_steps", base)
    totals.append(steps if isinstance(steps, int) and steps > 0 else None)
  return totals


class SweepLock:
  """Holds `DIR/.sweep.lock` with fcntl.flock; a second holder gets a one-line UserError."""

  def __init__(self, workdir: Path):
    self.path = Path(workdir) / index_lib.LOCK_FILE
    self.fd = None

  def __enter__(self):
    self.fd = index_lib.try_lock(self.path)
    if self.fd is None:
      holder = self.path.read_text().strip() or "unknown process"
      raise UserError(f"{self.path.parent} is in use by another sweep ({holder}); wait for it to finish "
                      "or use another --workdir")
    os.ftruncate(self.fd, 0)
    os.write(self.fd, f"pid {os.getpid()} on {os.uname().nodename} since {rundir.now()}\n".encode())
    return self

  def __exit__(self, *exc):
    os.close(self.fd)  # releases the lock; the file stays (removing it would race with a new holder)
    self.fd = None


_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int, libc) -> Callable[[], None]:
  def preexec():
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the sweep died before prctl took effect
      os._exit(1)
  return preexec


class LocalLauncher:
  """Trials as subprocesses of this process; each inherits its trial lock's descriptor."""

  def __init__(self):
    self._preexec = None
    if sys.platform.startswith("linux"):
      self._preexec = _die_with(os.getpid(), ctypes.CDLL(None, use_errno=True))

  def start(self, argv: list[str], cwd: Path, log, lock_fd: int) -> subprocess.Popen:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, pass_fds=(lock_fd,), preexec_fn=self._preexec)

  def poll(self, handle: subprocess.Popen) -> int | None:
    return handle.poll()

  def ident(self, handle: subprocess.Popen) -> int:
    return handle.pid

  def stop(self, handle: subprocess.Popen) -> int | None:
    handle.terminate()
    try:
      return handle.wait(timeout=10)
    except subprocess.TimeoutExpired:
      handle.kill()
      return handle.wait()


def _error_line(log_path: Path, exit_code: int) -> str | None:
  """The last `error:` or `...Error` line of the last attempt in the trial's log (else its last line)."""
  if exit_code < 0:
    try:
      return f"killed by signal {signal.Signals(-exit_code).name}"
    except ValueError:
      return f"exit status {exit_code}"
  try:
    text = log_path.read_text(errors="replace")
  except FileNotFoundError:
    return None
  last_attempt = text.split("\n=== attempt ")[-1].split("\n", 1)[-1] if "=== attempt" in text else text
  lines = [line.strip() for line in last_attempt.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:") or "Error" in line.split(":")[0]]
  return (errors or lines or [None])[-1]


def _status(run: Path, exit_code: int) -> str:
  meta = rundir.read_json(run / "meta.json") or {}
  if exit_code == 0 and meta.get("status") in ("done", "early_stopped"):
    return meta["status"]
  if exit_code == DIVERGED_EXIT_CODE:
    return "diverged"
  return "failed"


def _parse_only(only: Sequence[int] | None, n: int) -> list[int]:
  if only is None:
    return list(range(n))
  bad = [i for i in only if not 0 <= i < n]
  if bad:
    raise UserError(f"--only: no trial {bad[0]}; valid indices: 0..{n - 1}")
  return sorted(set(only))


def run_sweep(config: str, workdir: str | Path, *, parallel: int = 1, launcher: str = "local",
              only: Sequence[int] | None = None, retries: int = 1, dry_run: bool = False,
              common: dict | None = None, slurm: dict | None = None,
              train_command: Sequence[str] = TRAIN_COMMAND, out: Callable[[str], None] | None = None,
              command: Sequence[str] | None = None) -> dict:
  """Runs (or continues) the sweep of `config` (`file.py[:variant]`) in `workdir`; returns the index.

  Args:
    parallel: trials running at once (local processes, or Slurm jobs in flight).
    launcher: `local` or `slurm` (submitit; `slurm` holds `update_parameters` keywords, e.g.
      {"slurm_partition": "gpu", "timeout_min": 120, "gpus_per_node": 1}).
    only: trial indices to run (the others are left as they are).
    retries: extra attempts within this invocation for a trial that failed (not for bad input).
    dry_run: print the trials, their status and command lines; write nothing.
    common: overrides applied to every trial (may not repeat a key the sweep sets).
    train_command: the trainer (default `python -m experiments.train`), run from the current directory.
    out: where the sweep's lines go (default: printed); progress lines go there too, at most every
      30 s, unless `out` is the default and stdout is a terminal: then progress is one line rewritten in
      place (`research.sweeps.progress`).
    command: the sweep's own command line as typed, kept in the index as `command` (with `cwd`) for
      reports to show how to reproduce the sweep.
  """
  terminal = sys.stdout if out is None and sys.stdout.isatty() else None
  out = out or (lambda line: print(line, flush=True))
  if launcher not in LAUNCHERS:
    raise UserError(f"unknown launcher {launcher!r}; valid choices: {', '.join(LAUNCHERS)}")
  if parallel < 1 or retries < 0:
    raise UserError(f"--parallel must be >= 1 and --retries >= 0, got {parallel} and {retries}")
  workdir = Path(workdir)
  index = load_definition(config, common)
  selected = _parse_only(only, len(index["trials"]))
  cwd = Path.cwd()
  if dry_run:
    old = rundir.read_json(workdir / index_lib.INDEX_FILE)
    if old is not None and index_lib.same_definition(old, index) is None:
      index = old
      index_lib.refresh(workdir, index)
    for i in selected:
      t = index["trials"][i]
      out(f"{t['name']}  [{t['status']}]  " + " ".join(train_argv(index, t, workdir / t["name"],
                                                                  train_command)))
    return index
  if launcher == "slurm":
    backend = slurm_lib.SlurmLauncher(workdir / "slurm", dict(slurm or {}))
  else:
    backend = LocalLauncher()
  workdir.mkdir(parents=True, exist_ok=True)
  with SweepLock(workdir) as lock:
    old = rundir.read_json(workdir / index_lib.INDEX_FILE)
    if old is not None:
      diff = index_lib.same_definition(old, index)
      if diff is not None:
        raise UserError(f"{workdir} holds another sweep ({diff}); use another --workdir or the same "
                        "definition to continue it")
      index = old
    if command is not None:
      index["command"] = {"argv": list(command), "cwd": str(cwd)}
    index_lib.refresh(workdir, index)
    index_lib.write(workdir, index)
    _run_trials(index, workdir, selected, backend, parallel=parallel, retries=retries, cwd=cwd,
                train_command=train_command, out=out, terminal=terminal)
    out(index_lib.summary_table(workdir, index))
    if callable(getattr(config_module(config)[0], "post_sweep", None)):
      run_post_sweep(index, workdir, backend, lock_fd=lock.fd, cwd=cwd, out=out)
  return index


def post_sweep_argv(index: dict, workdir: Path) -> list[str]:
  spec = index["config_path"] + (f":{index['variant']}" if index["variant"] else "")
  return [*POST_SWEEP_COMMAND, "--config", spec, "--workdir", str(workdir)]


def call_post_sweep(config: str, workdir: str | Path) -> None:
  """What the post step's job runs: `post_sweep(workdir, variant)` of the config file `file[:variant]`."""
  module, _, variant = config_module(config)
  post = getattr(module, "post_sweep", None)
  if not callable(post):
    raise UserError(f"{config.partition(':')[0]} defines no post_sweep(sweep_dir, arg)")
  post(Path(workdir), variant)


def run_post_sweep(index: dict, workdir: Path, backend, *, lock_fd: int, cwd: Path,
                   out: Callable[[str], None]) -> None:
  """Runs the post step as a job of `backend` if every trial has finished, waits for it, and records
  the outcome in the index as `post_sweep` (see the module docstring); never raises for the post
  step's own errors."""
  unfinished = [t["name"] for t in index["trials"] if t["status"] not in index_lib.FINISHED]
  if unfinished:
    index["post_sweep"] = {"status": "pending", "error": None, "waiting_for": unfinished[:5]}
    out(f"post_sweep: not run, {len(unfinished)} trial(s) not finished ({', '.join(unfinished[:3])})")
    index_lib.write(workdir, index)
    return
  start = time.time()
  log_path = workdir / POST_SWEEP_LOG
  argv = post_sweep_argv(index, workdir)
  with open(log_path, "a") as log:
    log.write(f"=== post_sweep at {rundir.now()}: {' '.join(argv)}\n")
    log.flush()
    handle = backend.start(argv, cwd, log, lock_fd)
    job = backend.ident(handle)
    out(f"post_sweep: running (job {job})")
    try:
      while (code := backend.poll(handle)) is None:
        time.sleep(0.1)
    except KeyboardInterrupt:
      backend.stop(handle)
      raise
  record = ({"status": "done", "error": None} if code == 0
            else {"status": "failed", "error": _error_line(log_path, code)})
  record |= {"exit_code": code, "job": job, "seconds": round(time.time() - start, 3), "ended": rundir.now()}
  index["post_sweep"] = record
  index_lib.write(workdir, index)
  if record["status"] == "done":
    out(f"post_sweep: done in {record['seconds']:.1f}s")
  else:
    out(f"post_sweep: failed ({record['error']}); traceback in {log_path}")


def _run_trials(index: dict, workdir: Path, selected: list[int], backend, *, parallel: int, retries: int,
                cwd: Path, train_command: Sequence[str], out: Callable[[str], None],
                terminal: TextIO | None = None) -> None:
  """Runs the selected trials, `parallel` at a time, with a progress display (on `terminal` if given,
  else lines through `out`, see `research.sweeps.progress`); every other line goes through `out`."""
  trials = index["trials"]
  progress = progress_lib.SweepProgress(out, slots=parallel, terminal=terminal)
  out = progress.print  # erases the progress line first
  totals = planned_steps(index)
  queue = deque()
  for i in selected:
    t = trials[i]
    if t["status"] in index_lib.FINISHED:
      out(f"skip {t['name']}: {t['status']}")
      progress.add(i, workdir / t["name"], totals[i], ended=True)
    elif index_lib.trial_busy(workdir / t["name"]):
      out(f"skip {t['name']}: its training process is still running (pid {t['pid']})")
      t["status"] = "running"
    else:
      queue.append(i)
      progress.add(i, workdir / t["name"], totals[i])
  total, finished_here = len(queue), 0
  running = {}  # trial index -> (handle, lock fd, log file, start time)
  tries = {i: 0 for i in queue}
  save = lambda: index_lib.write(workdir, index)

  def start(i: int) -> None:
    t = trials[i]
    run = workdir / t["name"]
    run.mkdir(parents=True, exist_ok=True)
    fd = index_lib.try_lock(run / index_lib.TRIAL_LOCK_FILE)
    if fd is None:  # started meanwhile by a process outside this sweep
      out(f"skip {t['name']}: its training process is still running")
      progress.discard(i)
      return
    argv = train_argv(index, t, run, train_command)
    log = open(run / index_lib.LOG_FILE, "a")
    log.write(f"=== attempt {t['attempts'] + 1} at {rundir.now()}: {' '.join(argv)}\n")
    log.flush()
    try:
      handle = backend.start(argv, cwd, log, fd)
    except BaseException:
      log.close()
      os.close(fd)
      raise
    tries[i] += 1
    t.update(status="running", attempts=t["attempts"] + 1, pid=backend.ident(handle), started=rundir.now(),
             ended=None, exit_code=None, error=None)
    running[i] = (handle, fd, log, time.time())
    progress.started(i)
    save()

  def finish(i: int, exit_code: int | None, status: str | None = None) -> None:
    nonlocal finished_here
    _, fd, log, t0 = running.pop(i)
    log.close()
    os.close(fd)
    t = trials[i]
    run = workdir / t["name"]
    if status is None:
      status = _status(run, exit_code)
    t.update(status=status, exit_code=exit_code, pid=None, ended=rundir.now(),
             wall_time_s=round(t["wall_time_s"] + time.time() - t0, 3),
             error=None if status in index_lib.FINISHED else _error_line(run / index_lib.LOG_FILE,
                                                                         exit_code or 0))
    retry = (status == "failed" and exit_code != BAD_INPUT_EXIT_CODE and tries[i] <= retries)
    if retry:
      queue.append(i)
    else:
      finished_here += 1
    progress.stopped(i, final=not retry)
    note = f" ({t['error']})" if t["error"] else ""
    out(f"[{finished_here}/{total}] {t['name']}: {status}, exit {exit_code}, "
        f"{time.time() - t0:.1f}s{note}" + (" -> retrying" if retry else ""))
    save()

  def interrupt(signum, frame):
    raise KeyboardInterrupt

  in_main = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, interrupt) if in_main else None
  try:
    while queue or running:
      while queue and len(running) < parallel:
        start(queue.popleft())
      progress.tick()
      time.sleep(0.1)
      for i in list(running):
        code = backend.poll(running[i][0])
        if code is not None:
          finish(i, code)
  except KeyboardInterrupt:
    out(f"interrupted: stopping {len(running)} running trial(s); re-run the sweep to resume them")
    for i in list(running):
      finish(i, backend.stop(running[i][0]), status="interrupted")
    raise
  finally:
    progress.close()
    if in_main:
      signal.signal(signal.SIGTERM, previous)
