"""The sweep's progress display (research.sweeps.progress): its formatting and ETA arithmetic on fake
clocks and run directories written by hand, plain lines in a log and a line rewritten in place on a
terminal (erased before every other line), and the runner's use of it with a fake trainer (no JAX)."""

import io
import json
import re
import sys
from pathlib import Path

import pytest

from research import sweeps
from research.sweeps import progress as progress_lib
from research.sweeps import runner

CONFIG = """
from research.training import default_config


def get_config(arg=None):
  c = default_config()
  c.training.num_epochs = 0
  c.training.num_steps = 10
  return c


def get_sweep(arg=None):
  return {sweep!r}
"""

FAKE_TRAINER = """
import json, sys, time
from pathlib import Path
run = Path(sys.argv[sys.argv.index("--workdir") + 1])
with open(run / "metrics.jsonl", "a") as f:
  for step in (5, 10):
    f.write(json.dumps({"step": step}) + "\\n")
    f.flush()
    time.sleep(0.2)
(run / "meta.json").write_text(json.dumps({"status": "done", "total_steps": 10}))
"""


class Clock:
  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


class Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def screen(text: str) -> list[str]:
  """The rows a terminal shows for `text` (carriage return: back to the row's start, overwriting)."""
  rows, row, col = [], [], 0
  for ch in text:
    if ch == "\r":
      col = 0
    elif ch == "\n":
      rows.append("".join(row).rstrip())
      row, col = [], 0
    else:
      row[col:col + 1] = [ch]
      col += 1
  return rows + ["".join(row).rstrip()]


def write_metrics(run: Path, *steps: int, partial: str = "") -> None:
  run.mkdir(parents=True, exist_ok=True)
  with open(run / "metrics.jsonl", "a") as f:
    f.writelines(json.dumps({"step": s, "train/loss": 0.5}) + "\n" for s in steps)
    f.write(partial)


def test_format_duration_and_line():
  assert [progress_lib.format_duration(s) for s in (0, 59.4, 59.6, 245, 3600, 7380, 90000)] == [
      "0s", "59s", "1m00s", "4m05s", "1h00m", "2h03m", "25h00m"]
  example = {"ended": 3, "trials": 10, "running": 2, "steps_done": 12400, "steps_total": 50000, "unknown": 0,
             "elapsed": 245, "eta": 750}
  line = lambda **kw: progress_lib.format_line(**(example | kw))
  assert line() == "sweep: trials 3/10 (2 running), steps 12400/50000, elapsed 4m05s, ETA 12m30s"
  assert line(unknown=2, eta=None) == ("sweep: trials 3/10 (2 running), steps 12400/50000+?, elapsed 4m05s, "
                                       "ETA --")
  assert line(steps_done=0, steps_total=0, unknown=7) == ("sweep: trials 3/10 (2 running), steps 0/?, "
                                                          "elapsed 4m05s, ETA 12m30s")


def test_finish_time_packs_the_remaining_seconds_onto_the_slots():
  # Two slots busy for 50 and 10 s more; three queued trials of 20 s go to the slot free first:
  # 10 -> 30 -> 50 on the second slot, the third to either at 50: done at 70 s.
  assert progress_lib.finish_time([50, 10], [20, 20, 20], 2) == 70
  assert progress_lib.finish_time([50, 10], [20, 20, 20], 3) == 50  # the third slot takes one at 0
  assert progress_lib.finish_time([5], [10, 10], 1) == 25
  assert progress_lib.finish_time([], [10, 10, 10], 4) == 10
  assert progress_lib.finish_time([], [], 2) == 0


def test_last_step_reads_the_last_complete_line_of_the_tail(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert progress_lib.last_step(path) is None  # no file
  path.write_text("")
  assert progress_lib.last_step(path) is None
  path.write_text("not json\n")
  assert progress_lib.last_step(path) is None
  path.write_text('{"step": 1, "train/loss": 0.5}\n{"step": 99, "train/lo')  # a half-written line last
  assert progress_lib.last_step(path, block=8) == 1
  path.write_text('{"step": 1}\n{"step": 50}\n{"step": 99')
  assert progress_lib.last_step(path) == 50
  with open(path, "a") as f:  # the half line completed, then a line much longer than the block
    f.write(', "x": 1}\n' + json.dumps({"step": 100, "curv/spectrum": list(range(200))}) + "\n")
  assert progress_lib.last_step(path, block=16) == 100
  assert progress_lib.last_step(path) == 100


def test_log_lines_every_30s_and_a_rate_from_this_invocation_only(tmp_path):
  """Trial 0 finished before this invocation, trial 1 resumes at step 40 (its earlier 40 steps are not in
  the rate), trial 2's total is recorded in its meta.json once it starts; two slots."""
  clock, lines = Clock(), []
  runs = [tmp_path / f"00{i}" for i in range(3)]
  write_metrics(runs[0], 50, 100)
  write_metrics(runs[1], 20, 40)
  runs[2].mkdir()
  progress = progress_lib.SweepProgress(lines.append, slots=2, clock=clock)
  progress.add(0, runs[0], 100, ended=True)
  progress.add(1, runs[1], 100)
  progress.add(2, runs[2], None)
  progress.started(1)
  progress.started(2)
  progress.tick()
  clock.t = 29.9
  progress.tick()
  assert lines == []
  write_metrics(runs[1], 60)
  write_metrics(runs[2], 20)
  (runs[2] / "meta.json").write_text(json.dumps({"status": "running", "total_steps": 200}))
  clock.t = 30
  progress.tick()
  # 20 + 20 steps in 30 + 30 slot-seconds: 1.5 s a step; 40 and 180 steps left on their slots.
  assert lines == ["sweep: trials 1/3 (2 running), steps 180/400, elapsed 30s, ETA 4m30s"]
  clock.t = 40
  write_metrics(runs[1], 100)
  progress.stopped(1, final=True)
  progress.print("[1/2] 001: done, exit 0, 40.0s")
  clock.t = 59
  progress.tick()
  write_metrics(runs[2], 60)
  clock.t = 60
  progress.tick()
  # 60 + 60 steps in 40 + 60 slot-seconds; 140 steps left of trial 2: 140 * 100 / 120 = 116.7 s.
  assert lines[1:] == ["[1/2] 001: done, exit 0, 40.0s",
                       "sweep: trials 2/3 (1 running), steps 260/400, elapsed 1m00s, ETA 1m57s"]
  progress.close()
  assert not any("\r" in line for line in lines)


def test_unknown_totals_count_as_the_mean_and_trial_counts_are_the_fallback(tmp_path):
  clock = Clock()
  runs = [tmp_path / f"00{i}" for i in range(2)]
  progress = progress_lib.SweepProgress(lambda line: None, slots=1, clock=clock)
  progress.add(0, runs[0], 100)
  progress.add(1, runs[1], None)
  progress.started(0)
  clock.t = 10
  write_metrics(runs[0], 50)
  progress.refresh()
  # 0.2 s a step; 50 steps left of trial 0, then trial 1 as long as the mean known total (100).
  assert progress.line(clock()) == "sweep: trials 0/2 (1 running), steps 50/100+?, elapsed 10s, ETA 30s"

  clock.t = 0
  progress = progress_lib.SweepProgress(lambda line: None, slots=1, clock=clock)
  runs = [tmp_path / "a", tmp_path / "b"]  # a trainer that writes no metrics: trial counts only
  progress.add(0, runs[0], None)
  progress.add(1, runs[1], None)
  progress.started(0)
  clock.t = 5
  progress.refresh()
  assert progress.line(clock()) == "sweep: trials 0/2 (1 running), steps 0/?, elapsed 5s, ETA --"
  clock.t = 20
  progress.stopped(0, final=True)
  progress.started(1)
  clock.t = 25
  assert progress.line(clock()) == "sweep: trials 1/2 (1 running), steps 0/?, elapsed 25s, ETA 15s"


def test_end_of_run_measurements_count_once_a_trial_has_ended(tmp_path):
  """Trial 0 trains 100 steps in 10 s, then measures for 20 s more; trial 1, at its last step after 10 s,
  has (by trial 0) 20 s of measurements left, not 0."""
  clock = Clock()
  runs = [tmp_path / f"00{i}" for i in range(2)]
  progress = progress_lib.SweepProgress(lambda line: None, slots=1, clock=clock)
  progress.add(0, runs[0], 100)
  progress.add(1, runs[1], 100)
  progress.started(0)
  clock.t = 10
  write_metrics(runs[0], 100)
  progress.refresh()
  assert progress.line(clock()).endswith("steps 100/200, elapsed 10s, ETA 10s")  # by steps only: 0.1 s
  clock.t = 30
  progress.stopped(0, final=True)
  progress.started(1)
  clock.t = 40
  write_metrics(runs[1], 100)
  progress.refresh()
  # by steps: 200 steps in 40 slot-seconds, none left; all in: 0.3 s a step, 100 x 0.3 - 10 = 20 s.
  assert progress.line(clock()) == "sweep: trials 1/2 (1 running), steps 200/200, elapsed 40s, ETA 20s"


def test_terminal_line_is_rewritten_in_place_and_erased_before_other_lines(tmp_path):
  clock, term = Clock(), Terminal()
  out = lambda line: term.write(line + "\n")  # as print would, on the same terminal
  run = tmp_path / "000"
  progress = progress_lib.SweepProgress(out, slots=1, terminal=term, clock=clock, width=200)
  progress.add(0, run, 10)
  progress.started(0)
  progress.tick()
  first = "sweep: trials 0/1 (1 running), steps 0/10, elapsed 0s, ETA --"
  assert term.getvalue() == "\r" + first
  clock.t = 0.5
  progress.tick()  # not due yet
  clock.t = 1
  write_metrics(run, 5)
  progress.tick()
  second = "sweep: trials 0/1 (1 running), steps 5/10, elapsed 1s, ETA 1s"
  assert term.getvalue() == "\r" + first + "\r" + second.ljust(len(first))
  progress.width = 31  # a narrower terminal: cut so that it never wraps, padded over the longer line
  clock.t = 2
  progress.tick()
  assert screen(term.getvalue()) == ["sweep: trials 0/1 (1 running),"]
  clock.t = 2.5
  write_metrics(run, 10)
  progress.stopped(0, final=True)
  progress.print("[1/1] 000: done, exit 0, 2.5s")
  assert term.getvalue().endswith("\r" + " " * 30 + "\r[1/1] 000: done, exit 0, 2.5s\n")
  progress.width = 200
  progress.tick()  # back at once after a printed line
  progress.close()
  out("summary table")
  assert screen(term.getvalue()) == ["[1/1] 000: done, exit 0, 2.5s", "summary table", ""]


def test_planned_steps_from_the_config_and_overrides(tmp_path):
  config = tmp_path / "c.py"
  config.write_text(CONFIG.format(sweep=[{"seed": 0}, {"training.num_steps": 5},
                                         {"training.num_steps": 0, "training.num_epochs": 2}]))
  index = runner.load_definition(str(config))
  assert runner.planned_steps(index) == [10, 5, None]
  index["config_path"] = str(tmp_path / "gone.py")
  assert runner.planned_steps(index) == [None, None, None]


def run_fake_sweep(tmp_path: Path, **kw) -> dict:
  config = tmp_path / "c.py"
  config.write_text(CONFIG.format(sweep=sweeps.seeds(2)))
  fake = tmp_path / "fake_train.py"
  fake.write_text(FAKE_TRAINER)
  return sweeps.run_sweep(str(config), tmp_path / "s", parallel=2, train_command=[sys.executable, str(fake)],
                          **kw)


FINISH = re.compile(r"^\[[12]/2\] 00[01]-seed=[01]: done, exit 0, \d+\.\ds$")


def test_sweep_on_a_terminal(tmp_path, monkeypatch):
  term = Terminal()
  monkeypatch.setattr(sys, "stdout", term)
  monkeypatch.setenv("COLUMNS", "200")  # the line is cut to the terminal's width
  index = run_fake_sweep(tmp_path)
  assert [t["status"] for t in index["trials"]] == ["done", "done"]
  text = term.getvalue()
  assert re.match(r"\rsweep: trials 0/2 \(2 running\), steps \d+/20, elapsed \d+s, ETA ", text)
  rows = screen(text)
  assert not any("sweep:" in row for row in rows)  # every progress line was erased before a line
  assert sum(bool(FINISH.match(row)) for row in rows) == 2 and rows[2].startswith("idx  name")


@pytest.mark.parametrize("captured", [True, False])
def test_sweep_in_a_log_prints_no_carriage_return(tmp_path, capsys, captured):
  lines = []
  run_fake_sweep(tmp_path, out=lines.append if captured else None)
  text = "\n".join(lines) if captured else capsys.readouterr().out
  assert "\r" not in text and sum(bool(FINISH.match(row)) for row in text.splitlines()) == 2
