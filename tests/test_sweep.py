"""Sweeps: the search-space builders, and the runner end to end on a tiny MLP on synthetic data:
a diverged and a bad-input trial do not stop the others, the index is right, finished trials are
skipped, failed ones retried, a killed sweep resumes its trial from the checkpoint, and a second sweep
on the same directory refuses to start. Training runs as real `experiments.train` subprocesses (five,
plus two sweep processes); the retry test uses a fake trainer script instead, which costs no JAX
start-up.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from research import sweeps
from research.core import rundir
from research.core.errors import UserError
from research.sweeps import index as index_lib
from research.sweeps import runner

ROOT = Path(__file__).resolve().parents[1]

TINY = """
from research.training import default_config


def get_config(arg=None):
  c = default_config()
  c.data.name = "synthetic"
  c.data.options.update(dict(synthetic_train=64, synthetic_test=32, image_shape=(4, 4, 1), num_classes=2,
                             eval_train_size=32))
  c.model.name = "mlp"
  c.model.knobs.update(dict(depth=1, width=8))
  c.optimizer.name = "sgd"
  c.schedule.lr = 0.1
  c.training.batch_size = 16
  c.training.num_epochs = 0
  c.training.num_steps = {steps}
  c.eval.every_epochs = 0
  c.eval.every_steps = {steps}
  c.eval.batch_size = 32
  c.eval.splits = ("eval_train", "test")
  c.checkpoint_every = {checkpoint_every}
  c.log_every = 100
  c.progress = "none"
  c.study = "tiny"
  return c


def get_sweep(arg=None):
  return {sweep!r}
"""


def write_config(tmp_path: Path, sweep: list, steps: int = 10, checkpoint_every: int = 0) -> Path:
  path = tmp_path / "tiny.py"
  path.write_text(TINY.format(sweep=sweep, steps=steps, checkpoint_every=checkpoint_every))
  return path


def sweep_cli(config: Path, workdir: Path, *extra: str, **popen) -> subprocess.Popen:
  args = [sys.executable, "-m", "experiments.sweep", "--config", str(config), "--workdir", str(workdir),
          *extra]
  return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **popen)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def alive(pid: int) -> bool:
  """Whether process `pid` exists and is not a zombie."""
  try:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


# Builders.

def test_grid_zip_seeds_product_concat():
  g = sweeps.grid({"schedule.lr": [0.1, 0.01], "model.knobs.width": [8, 16, 32]})
  assert len(g) == 6 and g[0] == {"schedule.lr": 0.1, "model.knobs.width": 8}
  assert g[1] == {"schedule.lr": 0.1, "model.knobs.width": 16}  # the last key varies fastest
  z = sweeps.zipped({"schedule.lr": [0.1, 0.2], "training.batch_size": [32, 64]})
  assert z == [{"schedule.lr": 0.1, "training.batch_size": 32},
               {"schedule.lr": 0.2, "training.batch_size": 64}]
  with pytest.raises(UserError, match="equal lengths"):
    sweeps.zipped({"a": [1, 2], "b": [1]})
  assert sweeps.seeds(3) == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
  assert sweeps.seeds([5, 7], key="data.options.seed") == [{"data.options.seed": 5}, {"data.options.seed": 7}]
  p = sweeps.product(g, sweeps.seeds(2))
  assert len(p) == 12 and p[0] == g[0] | {"seed": 0} and p[1] == g[0] | {"seed": 1}
  assert len({json.dumps(t, sort_keys=True) for t in p}) == 12
  with pytest.raises(UserError, match="set the same keys: seed"):
    sweeps.product(sweeps.seeds(2), sweeps.seeds(3))
  assert len(sweeps.concat(g, z)) == 8
  (plain,) = sweeps.grid({"x": np.array([1.5])})
  assert plain == {"x": 1.5} and type(plain["x"]) is float  # numpy scalars become Python ones


def test_random_and_halton_search():
  space = {"schedule.lr": sweeps.LogUniform(1e-4, 1.0), "optimizer.momentum": sweeps.Uniform(0.5, 0.99),
           "model.knobs.depth": sweeps.IntUniform(1, 3), "optimizer.name": sweeps.Choice(["sgd", "adam"])}
  a = sweeps.random_search(space, 200, seed=1)
  assert a == sweeps.random_search(space, 200, seed=1) and a != sweeps.random_search(space, 200, seed=2)
  for trials in (a, sweeps.halton(space, 64, seed=3)):
    lr = np.array([t["schedule.lr"] for t in trials])
    assert np.all((lr >= 1e-4) & (lr <= 1.0))
    assert 0.3 < np.mean(lr < 1e-2) < 0.7  # log-uniform: half below the geometric midpoint (linear: 1%)
    mom = np.array([t["optimizer.momentum"] for t in trials])
    assert np.all((mom >= 0.5) & (mom <= 0.99))
    assert {t["model.knobs.depth"] for t in trials} == {1, 2, 3}
    assert {t["optimizer.name"] for t in trials} == {"sgd", "adam"}
  # Halton's first coordinate (base 2): 64 points put exactly 8 in each eighth of the range.
  h = sweeps.halton({"x": sweeps.Uniform(0.0, 8.0)}, 64, seed=0)
  counts = np.bincount(np.floor([t["x"] for t in h]).astype(int), minlength=8)
  assert counts.tolist() == [8] * 8
  assert h == sweeps.halton({"x": sweeps.Uniform(0.0, 8.0)}, 64, seed=0)


def test_trial_names():
  lr_sgd = sweeps.grid({"schedule.lr": [0.1, 1e-3], "optimizer.name": ["sgd"]})
  trials = sweeps.product(lr_sgd, sweeps.seeds(2))
  assert sweeps.trial_names(trials) == ["000-lr=0.1-seed=0", "001-lr=0.1-seed=1", "002-lr=0.001-seed=0",
                                        "003-lr=0.001-seed=1"]
  clash = [{"a.lr": 1, "b.lr": 2}, {"a.lr": 3, "b.lr": 4}]
  assert sweeps.trial_names(clash) == ["000-a.lr=1-b.lr=2", "001-a.lr=3-b.lr=4"]
  odd = [{"optimizer.name": "a b/c"}, {"optimizer.name": "d"}]
  assert sweeps.trial_names(odd) == ["000-optimizer=a_b_c", "001-optimizer=d"]


# Runner.

def test_diverged_and_bad_trials_are_isolated_index_and_skip(tmp_path):
  sweep = [{"schedule.lr": 0.1}, {"schedule.lr": 1e6, "loss.name": "mse"}, {"optimizer.name": "adamax"}]
  config = write_config(tmp_path, sweep)
  workdir = tmp_path / "sweep"
  cache = tmp_path / "xla_cache"  # the trials share one persistent compilation cache
  code, out, err = finish(sweep_cli(config, workdir, "--parallel", "2", "--config.log_every=5",
                                    env=os.environ | {"RESEARCH_COMPILATION_CACHE": str(cache)}))
  assert code == 1, out + err  # one trial failed
  assert len([f for f in cache.iterdir() if f.name.startswith("jit_")]) > 3  # compiled programs written
  index = json.loads((workdir / "sweep.json").read_text())
  assert index["config_path"] == str(config) and index["variant"] is None and index["study"] == "tiny"
  assert index["common_overrides"] == {"log_every": 5}
  trials = index["trials"]
  assert [t["name"] for t in trials] == ["000-lr=0.1", "001-lr=1e+06-loss=mse", "002-optimizer=adamax"]
  assert [t["overrides"] for t in trials] == [json.loads(json.dumps(o, sort_keys=True)) for o in sweep]
  assert [t["status"] for t in trials] == ["done", "diverged", "failed"]
  assert [t["exit_code"] for t in trials] == [0, 3, 2]
  assert [t["attempts"] for t in trials] == [1, 1, 1]  # bad input (exit 2) is not retried
  assert all(t["wall_time_s"] > 0 and t["pid"] is None for t in trials)
  assert "unknown optimizer 'adamax'; valid choices" in trials[2]["error"]
  for t, status in zip(trials, ["done", "diverged"]):
    run = workdir / t["name"]
    assert json.loads((run / "meta.json").read_text())["status"] == status
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["schedule"]["lr"] == t["overrides"]["schedule.lr"] and cfg["log_every"] == 5
  assert "error: unknown optimizer 'adamax'" in (workdir / trials[2]["name"] / "log.txt").read_text()
  assert all(name in out for name in [t["name"] for t in trials]) and "status" in out  # the table
  assert sweeps.trial_dirs(workdir) == [workdir / "000-lr=0.1"]

  # Re-run trials 0 and 1 (in-process, as the CLI would): both finished, so nothing starts.
  lines = []
  sweeps.run_sweep(str(config), workdir, only=[0, 1], common={"log_every": 5}, out=lines.append)
  assert "skip 000-lr=0.1: done" in lines and "skip 001-lr=1e+06-loss=mse: diverged" in lines
  again = json.loads((workdir / "sweep.json").read_text())["trials"]
  assert [t["attempts"] for t in again] == [1, 1, 1] and again[0]["ended"] == trials[0]["ended"]
  # Another definition in the same directory is refused.
  message = r"holds another sweep \(common_overrides: \{'log_every': 5\} vs \{\}\)"
  with pytest.raises(UserError, match=message):
    sweeps.run_sweep(str(config), workdir, out=lines.append)


def test_killed_sweep_resumes_and_second_sweep_refuses(tmp_path):
  config = write_config(tmp_path, [{"seed": 1}], steps=600, checkpoint_every=100)
  workdir = tmp_path / "sweep"
  first = sweep_cli(config, workdir)
  run = workdir / "000"
  deadline = time.time() + 180
  pid = None
  while time.time() < deadline and pid is None:  # the index names the trial's process once it starts
    assert first.poll() is None, first.communicate()
    index = rundir.read_json(workdir / "sweep.json")
    pid = index and index["trials"][0]["pid"]
    time.sleep(0.02)
  while time.time() < deadline and not (run / "checkpoints" / "100").is_dir():
    time.sleep(0.005)
  os.kill(pid, signal.SIGSTOP)  # hold the trial mid-run, however slow the second sweep is to start
  trial = sweeps.load(workdir)["trials"][0]
  assert trial["status"] == "running" and trial["attempts"] == 1 and trial["pid"] == pid

  with pytest.raises(UserError) as refused:  # a second sweep while the first one runs
    sweeps.run_sweep(str(config), workdir)
  assert str(refused.value).startswith(f"{workdir} is in use by another sweep (pid {first.pid} on ")
  assert "\n" not in str(refused.value)  # the CLI prints it as one `error:` line

  first.send_signal(signal.SIGKILL)
  first.wait()
  deadline = time.time() + 30  # the trial dies with its sweep (PR_SET_PDEATHSIG), and its lock with it
  while time.time() < deadline and (alive(pid) or index_lib.trial_busy(run)):
    time.sleep(0.02)  # (the main thread is a zombie before all threads are gone and the files closed)
  assert not alive(pid) and not index_lib.trial_busy(run)
  assert json.loads((run / "meta.json").read_text())["status"] == "running"
  killed_at = rundir.read_metrics(run / "metrics.jsonl")[-1]["step"]
  assert 100 <= killed_at < 600
  assert sweeps.load(workdir)["trials"][0]["status"] == "interrupted"

  lines = []
  trial = sweeps.run_sweep(str(config), workdir, out=lines.append)["trials"][0]
  assert trial["status"] == "done" and trial["attempts"] == 2 and trial["exit_code"] == 0
  meta = json.loads((run / "meta.json").read_text())
  assert meta["status"] == "done" and len(meta["resumed"]) == 1 and meta["resumed"][0]["step"] >= 100
  summary = json.loads((run / "summary.json").read_text())
  assert summary["step"] == 600 and summary["steps_this_session"] == 600 - meta["resumed"][0]["step"]
  assert rundir.read_metrics(run / "metrics.jsonl")[-1]["step"] == 600
  log = (run / "log.txt").read_text()
  assert log.count("=== attempt") == 2 and "done at step 600" in log


FAKE_TRAINER = """
import json, sys
from pathlib import Path
run = Path(sys.argv[sys.argv.index("--workdir") + 1])
tries = run / "tries"
n = int(tries.read_text()) + 1 if tries.exists() else 1
tries.write_text(str(n))
if "--config.seed=1" in sys.argv or n == 1:
  print("RuntimeError: boom", flush=True)
  sys.exit(1)
(run / "meta.json").write_text(json.dumps({"status": "done"}))
"""


def test_retries_and_crash_isolation_with_a_fake_trainer(tmp_path):
  config = write_config(tmp_path, sweeps.seeds(2))
  fake = tmp_path / "fake_train.py"
  fake.write_text(FAKE_TRAINER)
  lines = []
  index = sweeps.run_sweep(str(config), tmp_path / "s", parallel=2, retries=2,
                           train_command=[sys.executable, str(fake)], out=lines.append)
  t0, t1 = index["trials"]
  assert (t0["status"], t0["attempts"], t0["exit_code"]) == ("done", 2, 0)  # crashed once, retried
  assert (t1["status"], t1["attempts"], t1["exit_code"]) == ("failed", 3, 1)  # 1 + 2 retries
  assert t1["error"] == "RuntimeError: boom"
  assert sum("-> retrying" in line for line in lines) == 3
  # A re-run skips the finished trial and tries the failed one again.
  lines = []
  index = sweeps.run_sweep(str(config), tmp_path / "s", retries=0, train_command=[sys.executable, str(fake)],
                           out=lines.append)
  assert [t["attempts"] for t in index["trials"]] == [2, 4] and "skip 000-seed=0: done" in lines
  assert json.loads((tmp_path / "s" / "sweep.json").read_text())["trials"] == index["trials"]


def test_refusals_in_process(tmp_path):
  config = write_config(tmp_path, sweeps.seeds(2))
  workdir = tmp_path / "s"
  workdir.mkdir()
  with runner.SweepLock(workdir):
    with pytest.raises(UserError, match="is in use by another sweep"):
      sweeps.run_sweep(str(config), workdir)
  assert not (workdir / index_lib.INDEX_FILE).exists()
  with pytest.raises(UserError, match="--only: no trial 5; valid indices: 0..1"):
    sweeps.run_sweep(str(config), workdir, only=[5])
  with pytest.raises(UserError, match="unknown config key 'schedule.learning_rate'; valid keys here: "):
    sweeps.run_sweep(str(config), workdir, common={"schedule.learning_rate": 0.1})
  with pytest.raises(UserError, match="--config.seed is also set by trial 0"):
    sweeps.run_sweep(str(config), workdir, common={"seed": 3})
  with pytest.raises(UserError, match="unknown launcher 'pbs'; valid choices: local, slurm"):
    sweeps.run_sweep(str(config), workdir, launcher="pbs")
  nosweep = tmp_path / "nosweep.py"
  nosweep.write_text(textwrap.dedent(TINY.split("def get_sweep")[0].format(steps=1, checkpoint_every=0)))
  with pytest.raises(UserError, match="defines no get_sweep"):
    sweeps.run_sweep(str(nosweep), workdir)
  try:
    import submitit  # noqa: F401
  except ImportError:
    with pytest.raises(UserError, match=r"^--launcher slurm needs submitit: pip install submitit==1\.5\.4$"):
      sweeps.run_sweep(str(config), workdir, launcher="slurm")
  lines = []
  sweeps.run_sweep(str(config), workdir, dry_run=True, out=lines.append)
  assert len(lines) == 2 and "000-seed=0  [pending]" in lines[0] and "--config.seed=0" in lines[0]
  assert not (workdir / index_lib.INDEX_FILE).exists()


POST_SWEEP = """

def post_sweep(sweep_dir, arg):
  import json
  from pathlib import Path
  statuses = json.loads((Path(sweep_dir) / "sweep.json").read_text())["trials"]
  if {fail}:
    raise ValueError("no pair to compare")
  import os
  (Path(sweep_dir) / "post.json").write_text(json.dumps([arg, [t["status"] for t in statuses], os.getpid()]))
"""


def test_post_sweep_runs_once_every_trial_finished_and_failures_keep_trials(tmp_path):
  """post_sweep waits for every trial (skipped finished ones count), sees the finished index; a failing
  post step is recorded in sweep.json and its traceback logged, the trials stay done. It runs as its own
  job (a process of the launcher), not in the sweep process."""
  fake = tmp_path / "fake_train.py"
  fake.write_text(FAKE_TRAINER.replace('"--config.seed=1" in sys.argv or n == 1', "False"))
  config = write_config(tmp_path, sweeps.seeds(2))
  config.write_text(config.read_text() + POST_SWEEP.format(fail=False))
  workdir, lines = tmp_path / "s", []
  run = lambda **kw: sweeps.run_sweep(str(config), workdir, train_command=[sys.executable, str(fake)],
                                      out=lines.append, **kw)
  index = run(only=[0])
  assert index["post_sweep"]["status"] == "pending" and not (workdir / "post.json").exists()
  index = run()  # trial 0 is skipped (done), trial 1 runs, then the post step
  arg, statuses, pid = json.loads((workdir / "post.json").read_text())
  assert [arg, statuses] == [None, ["done", "done"]]
  assert pid != os.getpid() and index["post_sweep"]["job"] == pid
  assert index["post_sweep"]["status"] == "done" and f"post_sweep: running (job {pid})" in lines
  config.write_text(config.read_text().replace("if False:", "if True:"))
  index = run()
  assert index["post_sweep"]["status"] == "failed"
  assert index["post_sweep"]["error"] == "ValueError: no pair to compare"
  assert [t["status"] for t in index["trials"]] == ["done", "done"]
  assert "ValueError: no pair to compare" in (workdir / runner.POST_SWEEP_LOG).read_text()
  saved = json.loads((workdir / "sweep.json").read_text())
  assert saved["post_sweep"]["status"] == "failed" and saved["trials"] == index["trials"]
