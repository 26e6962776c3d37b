"""Sweeps on a real Slurm: a single-node cluster on localhost (tests/slurm_cluster.py), started and
stopped here. Every trial is a Slurm job; one is cancelled mid-run and comes back from its checkpoint;
the post step is a job of its own; the results equal the local launcher's. And one multi-process
training run as one job of 2 tasks (`srun`), found by JAX from Slurm's variables, equals the 1-process
reference of tests/test_multiprocess.py. Skipped, with the reason in one line, where the daemons cannot
be installed or started."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax_processes as jp
import pytest
import slurm_cluster

from research import sweeps
from research.core import rundir

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
import json
from pathlib import Path

from research.training import default_config


def get_config(arg=None):
  c = default_config()
  c.data.name = "synthetic"
  c.data.options.update(dict(synthetic_train=256, synthetic_test=64, image_shape=(8, 8, 1), num_classes=3,
                             eval_train_size=64))
  c.model.name = "mlp"
  c.model.knobs.update(dict(depth=2, width=64))
  c.optimizer.name = "sgd"
  c.schedule.lr = 0.05
  c.training.batch_size = 32
  c.training.num_epochs = 0
  c.training.num_steps = 600
  c.eval.every_epochs = 0
  c.eval.every_steps = 200
  c.eval.batch_size = 64
  c.eval.splits = ("eval_train", "test")
  c.checkpoint_every = 50
  c.log_every = 50
  c.progress = "none"
  c.study = "tiny"
  return c


def get_sweep(arg=None):
  return [{"seed": s, "schedule.lr": lr} for s in (0, 1) for lr in (0.05, 0.1)]


def post_sweep(sweep_dir, arg):
  import os
  finals = {}
  for run in sorted(Path(sweep_dir).iterdir()):
    if (run / "summary.json").exists():
      finals[run.name] = json.loads((run / "summary.json").read_text())["final"]["test/loss"]
  (Path(sweep_dir) / "post.json").write_text(json.dumps({"finals": finals, "pid": os.getpid(),
                                                         "job": os.environ.get("SLURM_JOB_ID")}))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  reason = slurm_cluster.ensure_installed()
  if reason:
    pytest.skip(f"no local Slurm: {reason}")
  local = slurm_cluster.LocalSlurm(tmp_path_factory.mktemp("slurm"))
  try:
    local.start()
  except (OSError, subprocess.SubprocessError, RuntimeError) as e:
    local.stop()
    pytest.skip(f"the local Slurm daemons did not start: {str(e).splitlines()[0]}")
  yield local
  local.stop()


def _finals(workdir: Path) -> dict:
  return {run.name: rundir.read_json(run / "summary.json")["final"] for run in sorted(workdir.iterdir())
          if (run / "summary.json").exists()}


def test_a_sweep_on_slurm_survives_a_cancelled_job_and_equals_the_local_sweep(cluster, tmp_path,
                                                                              monkeypatch):
  monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
  monkeypatch.chdir(ROOT)
  config = tmp_path / "tiny.py"
  config.write_text(CONFIG)
  workdir, lines = tmp_path / "slurm", []
  outcome = {}

  def run():
    outcome["index"] = sweeps.run_sweep(str(config), workdir, parallel=2, launcher="slurm", retries=1,
                                        slurm={"timeout_min": 30, "cpus_per_task": 1}, out=lines.append)

  thread = threading.Thread(target=run)
  thread.start()
  victim, cancelled = workdir / "001-seed=0-lr=0.1", None
  deadline = time.time() + 300
  while time.time() < deadline and cancelled is None:  # cancel trial 1 once it has saved a checkpoint
    index = rundir.read_json(workdir / "sweep.json") or {"trials": []}
    trial = next((t for t in index["trials"] if t["name"] == victim.name), None)
    ckpts = [p for p in (victim / "checkpoints").glob("*") if p.name.isdigit()] if victim.exists() else []
    if trial and trial["status"] == "running" and ckpts and trial["pid"]:
      cancelled = str(trial["pid"])
      subprocess.run(["scancel", cancelled], env=cluster.env, check=True)
    time.sleep(0.2)
  thread.join(timeout=600)
  assert not thread.is_alive() and cancelled is not None, "\n".join(lines)
  index = outcome["index"]
  assert [t["status"] for t in index["trials"]] == ["done"] * 4, "\n".join(lines)
  trial = next(t for t in index["trials"] if t["name"] == victim.name)
  assert trial["attempts"] == 2
  meta = rundir.read_json(victim / "meta.json")
  assert [r["step"] for r in meta["resumed"]] and meta["resumed"][0]["step"] > 0  # from its checkpoint
  post = json.loads((workdir / "post.json").read_text())
  assert index["post_sweep"]["status"] == "done" and post["job"] == str(index["post_sweep"]["job"])

  jobs, deadline = {}, time.time() + 60
  while post["job"] not in jobs and time.time() < deadline:  # a job's record is written as it ends
    jobs = {j["jobid"]: j for j in cluster.sacct()}
    time.sleep(0.5)
  assert jobs[cancelled]["state"] == "CANCELLED"
  assert jobs[post["job"]]["state"] == "COMPLETED"
  completed = [j for j in jobs.values() if j["state"] == "COMPLETED"]
  assert len(completed) == 4 + 1  # the four trials (one of them on its second job) and the post step
  (tmp_path / "sacct.json").write_text(json.dumps(list(jobs.values()), indent=1))

  local = tmp_path / "local"
  sweeps.run_sweep(str(config), local, parallel=2, out=lambda line: None)
  assert _finals(local) == _finals(workdir)  # resume is exact, and a Slurm job runs the same command


BATCH_SCRIPT = """#!/bin/bash
#SBATCH --job-name=train-2-tasks
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --output={folder}/slurm-%j.out
cd {root}
srun --kill-on-bad-exit=1 {python} {train} --workdir {workdir}
"""


def test_training_as_one_slurm_job_of_two_tasks_equals_one_process(cluster, quick_reference, tmp_path):
  ref_dir = quick_reference[0]
  workdir = tmp_path / "run"
  script = tmp_path / "train.sbatch"
  script.write_text(BATCH_SCRIPT.format(folder=tmp_path, root=jp.ROOT, python=sys.executable,
                                        train=" ".join(jp.TRAIN), workdir=workdir))
  env = jp.environment(SLURM_CONF=str(cluster.conf))  # JAX_PLATFORMS=cpu; no JAX_* cluster variable
  job = subprocess.run(["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True,
                       check=True).stdout.strip().split(";")[0]
  jobs, deadline = {}, time.time() + 900
  while job not in jobs and time.time() < deadline:  # a job's record is written as it ends
    time.sleep(1)
    jobs = {j["jobid"]: j for j in cluster.sacct()}
  output = (tmp_path / f"slurm-{job}.out").read_text(errors="replace") if job in jobs else ""
  assert jobs.get(job, {}).get("state") == "COMPLETED", output[-3000:]
  meta = rundir.read_json(workdir / "meta.json")
  assert meta["status"] == "done" and meta["process_count"] == 2 and meta["slurm_job"] == job
  table = jp.compare_runs(workdir, ref_dir)
  (tmp_path / "figures.json").write_text(json.dumps({"job": jobs[job], "train": table}, indent=1))
