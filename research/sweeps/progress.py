"""The sweep's progress display: trials ended and training steps done over the selected trials, elapsed
time and an estimate of the time left (`SweepProgress`, used by `runner._run_trials` under either
launcher):

  sweep: trials 3/10 (2 running), steps 12400/50000, elapsed 4m05s, ETA 12m30s

On a terminal it is one line rewritten in place about once a second (a carriage return, padded over the
line it replaces, cut to the terminal's width so that it never wraps) and erased before any other line
is printed; otherwise (a log file, CI) it is a plain line through the sweep's `out` at most every 30 s.

Steps are read from the trials' run directories: the steps done are the `step` of the last complete line
of `metrics.jsonl` (written every `log_every` steps and at evaluations; only the file's tail is read, and
only when its size has changed); a trial's total is its config's `training.num_steps`
(`runner.planned_steps`), else `total_steps` in its `meta.json` (written by the trainer before its first
step, left by a killed run), else unknown (`50000+?`). A trial that has ended counts the steps it
ran as its total.

ETA: one slot (one trial running) takes s = slot-seconds / steps seconds a step, both counted over the
trials this invocation started (a resumed trial counts from the step it started at, so its earlier steps
do not inflate the rate); each trial left needs (total - done) x s more seconds (an unknown total counts as
the mean of the known ones); these are packed onto the `parallel` slots (`finish_time`), and the ETA is
when the last slot is done. Steps differ in cost (curvature measurements, evaluations, compilation at a
trial's start), so it is an average, not a prediction. Once a trial has ended in this invocation, its
seconds per step all in (its measurements after the last step included) give a second estimate of each
trial's remaining time, total x rate - seconds so far, and the larger of the two counts: a trial whose
steps are done but whose end-of-run measurements run is not shown as finishing at once. Without a step
measured or a total known it falls
back to trial counts (the mean slot-seconds of the trials ended in this invocation); before either it
shows `ETA --`.

Not tqdm (the trainer's progress bar): its rate is that of one stream of updates and in a file it still
writes carriage returns; here the count is a sum over parallel processes read from their files, the
estimate needs the slots, and a log gets plain lines.
"""

import dataclasses
import heapq
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from research.core import rundir

TERMINAL_INTERVAL_S = 1.0
LOG_INTERVAL_S = 30.0


def last_step(path: Path, block: int = 4096) -> int | None:
  """The `step` of the last complete line of a `metrics.jsonl`, reading only the file's tail (`block`
  bytes, more while the last line is longer); None without a complete line or a readable step."""
  try:
    with open(path, "rb") as f:
      end = f.seek(0, 2)
      size = block
      while True:
        start = max(end - size, 0)
        f.seek(start)
        tail = f.read(end - start)
        tail = tail[:tail.rfind(b"\n") + 1]  # a half-written last line is left out
        if tail:
          before = tail.rfind(b"\n", 0, len(tail) - 1)
          if before >= 0 or start == 0:
            line = tail[before + 1:]
            break
        elif start == 0:
          return None
        size *= 4
  except OSError:
    return None
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


def recorded_total(run: Path) -> int | None:
  """`total_steps` of a run directory's `meta.json` (written once training has started), or None."""
  total = (rundir.read_json(Path(run) / "meta.json") or {}).get("total_steps")
  return total if isinstance(total, int) else None


def format_duration(seconds: float) -> str:
  """`45s`, `4m05s`, `2h03m` (whole seconds, rounded)."""
  s = round(seconds)
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_line(*, ended: int, trials: int, running: int, steps_done: int, steps_total: int, unknown: int,
                elapsed: float, eta: float | None) -> str:
  """The progress line; `unknown`: trials whose total is not known (`steps 1200/5000+?`, or `/?`)."""
  total = str(steps_total) if not unknown else (f"{steps_total}+?" if steps_total else "?")
  return (f"sweep: trials {ended}/{trials} ({running} running), steps {steps_done}/{total}, "
          f"elapsed {format_duration(elapsed)}, ETA {'--' if eta is None else format_duration(eta)}")


def finish_time(running: Sequence[float], queued: Sequence[float], slots: int) -> float:
  """Seconds until the last of `slots` slots is done: the running trials' remaining seconds hold a slot
  each, the queued trials' go in order to the slot free first (list scheduling)."""
  free = list(running) + [0.0] * (max(slots, 1) - len(running))
  heapq.heapify(free)
  for seconds in queued:
    heapq.heappush(free, heapq.heappop(free) + seconds)
  return max(free, default=0.0)


@dataclasses.dataclass
class _Trial:
  run: Path
  total: int | None  # steps it trains for, None until known
  state: str = "queued"  # queued | running | ended
  step: int = 0  # the last step read from its metrics.jsonl
  size: int = -1  # metrics.jsonl's size when `step` was read
  base: int | None = None  # its step when this invocation first started it
  since: float | None = None  # when its running attempt started
  busy_s: float = 0.0  # seconds of its earlier attempts in this invocation
  ended_here: bool = False


class SweepProgress:
  """The progress of a sweep's trials (keyed by the runner's trial indices): on `terminal` (a TTY) one
  line rewritten in place, with `terminal` None plain lines through `out`.

  The runner calls `add` for each selected trial, `started` and `stopped` around each attempt, `tick` in
  its polling loop (the line is shown when due), `print` for its own lines (through `out`, the line
  erased first) and `close` at the end. `clock` (seconds) and `width` (columns; None: the terminal's)
  are for tests.
  """

  def __init__(self, out: Callable[[str], None], *, slots: int, terminal: TextIO | None = None,
               clock: Callable[[], float] = time.monotonic, width: int | None = None):
    self.out, self.slots, self.terminal, self.clock, self.width = out, slots, terminal, clock, width
    self.interval = LOG_INTERVAL_S if terminal is None else TERMINAL_INTERVAL_S
    self.trials: dict[int, _Trial] = {}
    self.t0 = clock()
    self._due = self.t0 + (LOG_INTERVAL_S if terminal is None else 0.0)
    self._shown = 0  # characters of the line on the terminal

  def add(self, key: int, run: Path, total: int | None, *, ended: bool = False) -> None:
    """A selected trial: queued, or `ended` (finished before this invocation); `total` its planned
    steps (None: read from its run directory once recorded)."""
    total = recorded_total(run) if total is None else total
    t = _Trial(Path(run), total, "ended" if ended else "queued")
    self._read(t)
    self.trials[key] = t

  def discard(self, key: int) -> None:
    """Stops following a trial (run by a process outside this sweep)."""
    self.trials.pop(key, None)

  def started(self, key: int) -> None:
    t = self.trials[key]
    self._read(t)
    if t.base is None:
      t.base = t.step
    t.state, t.since = "running", self.clock()

  def stopped(self, key: int, *, final: bool) -> None:
    """An attempt ended; `final`: the trial is not retried in this invocation."""
    t = self.trials[key]
    t.busy_s += self.clock() - t.since
    t.since = None
    self._read(t)
    t.state = "ended" if final else "queued"
    t.ended_here = final

  def tick(self) -> None:
    """Shows the line if due (every second on a terminal, every 30 s otherwise)."""
    now = self.clock()
    if now < self._due:
      return
    self._due = now + self.interval
    self.refresh()
    line = self.line(now)
    if self.terminal is None:
      self.out(line)
      return
    width = self.width or shutil.get_terminal_size().columns
    line = line[:max(width - 1, 1)]
    self.terminal.write("\r" + line.ljust(self._shown))
    self.terminal.flush()
    self._shown = len(line)

  def print(self, text: str) -> None:
    """`out(text)`, on a line of its own; the progress line comes back at the next tick."""
    self._erase()
    self.out(text)
    if self.terminal is not None:
      self._due = self.clock()

  def close(self) -> None:
    self._erase()

  def refresh(self) -> None:
    """Reads the running trials' steps (and their totals until known) from their run directories."""
    for t in self.trials.values():
      if t.state == "running":
        self._read(t)
        if t.total is None:
          t.total = recorded_total(t.run)

  def line(self, now: float) -> str:
    trials = self.trials.values()
    left = [t for t in trials if t.state != "ended"]
    known = [t.total for t in left if t.total is not None]
    return format_line(ended=len(trials) - len(left), trials=len(trials),
                       running=sum(t.state == "running" for t in trials),
                       steps_done=sum(t.step for t in trials),
                       steps_total=sum(t.step for t in trials if t.state == "ended") + sum(known),
                       unknown=len(left) - len(known), elapsed=now - self.t0, eta=self.eta(now))

  def eta(self, now: float) -> float | None:
    """Seconds left (module docstring), or None before anything was measured."""
    busy = lambda t: t.busy_s + (now - t.since if t.since is not None else 0.0)
    here = [t for t in self.trials.values() if t.base is not None]
    steps_here = sum(max(t.step - t.base, 0) for t in here)
    slot_s = sum(busy(t) for t in here)
    totals = [t.total for t in self.trials.values() if t.total is not None]
    ended_here = [t for t in here if t.ended_here]
    if steps_here > 0 and totals:
      mean = sum(totals) / len(totals)
      total = lambda t: mean if t.total is None else t.total
      by_steps = lambda t: max(total(t) - t.step, 0) * slot_s / steps_here
      ended_steps = sum(max(t.step - t.base, 0) for t in ended_here)
      if not ended_steps:
        need = by_steps
      else:  # a trial's end-of-run measurements: its time per step all in, from the trials that ended
        all_in = sum(busy(t) for t in ended_here) / ended_steps
        need = lambda t: max(by_steps(t), (total(t) - (t.step if t.base is None else t.base)) * all_in
                             - (busy(t) if t.base is not None else 0.0))
    elif ended_here:
      per_trial = sum(busy(t) for t in ended_here) / len(ended_here)
      need = lambda t: max(per_trial - busy(t), 0.0)
    else:
      return None
    trials = self.trials.values()
    return finish_time([need(t) for t in trials if t.state == "running"],
                       [need(t) for t in trials if t.state == "queued"], self.slots)

  def _read(self, t: _Trial) -> None:
    path = t.run / "metrics.jsonl"
    try:
      size = path.stat().st_size
    except OSError:
      return
    if size != t.size:
      step = last_step(path) if size else 0
      if step is not None:
        t.step = step
      t.size = size

  def _erase(self) -> None:
    if self._shown:
      self.terminal.write("\r" + " " * self._shown + "\r")
      self.terminal.flush()
      self._shown = 0
