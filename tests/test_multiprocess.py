"""Multi-process training on one host: 2 JAX processes on 127.0.0.1 (CPU, gloo) train the quick default
run with lambda_max and the Hessian trace measured at the end, are killed with SIGKILL after their first
checkpoint and restarted; then 2 processes measure the final checkpoint with `experiments.measure`
(lambda_max and trace; sharpness and generalization measures).

The reference is 1 process with 2 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2): the
same per-device split of every batch, so the same arithmetic; only the process count differs. (Against 1
process with 1 device the summation order of the gradient differs and SGD amplifies the rounding: about
1e-5 relative at step 10, percents by step 50; see the README's Cluster section.)"""

import json
import math
import subprocess
import sys
import time

import jax_processes as jp
import pytest

from research.core import rundir


def test_two_processes_killed_and_restarted_equal_one_process(quick_reference, tmp_path):
  ref_dir, ref_measure, ref_measures = quick_reference
  workdir, logs = tmp_path / "run", tmp_path / "logs"
  args = [*jp.TRAIN, "--workdir", str(workdir)]
  procs = jp.start(args, 2, logs)
  deadline = time.time() + 300
  while not jp.checkpoint_steps(workdir) and time.time() < deadline and all(p.poll() is None for p in procs):
    time.sleep(0.1)
  killed_after = jp.checkpoint_steps(workdir)
  jp.kill(procs)
  assert killed_after == [50], jp.tail(logs)  # killed mid-run, after the first checkpoint
  assert not (workdir / "summary.json").exists()

  assert jp.wait(jp.start(args, 2, logs), 600) == [0, 0], jp.tail(logs)
  meta = rundir.read_json(workdir / "meta.json")
  assert meta["status"] == "done" and meta["process_count"] == 2
  assert [r["step"] for r in meta["resumed"]] == [50]
  table = jp.compare_runs(workdir, ref_dir)
  summary = rundir.read_json(workdir / "summary.json")
  assert summary["devices"] == 2 and summary["final"]["test/loss"] == table["test/loss"][0]

  # The final checkpoint measured by 2 processes: Lanczos and Hutchinson over both processes' chunks.
  procs = jp.start([*jp.MEASURE, "--workdir", str(workdir)], 2, tmp_path / "measure")
  assert jp.wait(procs, 600) == [0, 0], jp.tail(tmp_path / "measure")
  records = sorted((workdir / "curvature").glob("step100_hessian_train*.json"))
  assert len(records) == 2  # training's record and one post-hoc record: process 0 alone wrote
  got = rundir.read_json(records[-1])["results"]  # step100_hessian_train_posthoc<UTC time>.json
  ref = rundir.read_json(next((ref_dir / "curvature").glob("step100_hessian_train_posthoc*.json")))["results"]
  assert jp.relative(got["top"]["values"][0], ref["top"]["values"][0]) <= 1e-5
  assert jp.relative(got["trace_hutchinson"]["estimate"], ref["trace_hutchinson"]["estimate"]) <= 1e-5
  assert jp.relative(got["top"]["values"][0], ref_measure["lambda_max"]) <= 1e-5

  # Sharpness (random perturbations drawn alike on every process), margins gathered from both processes.
  procs = jp.start([*jp.MEASURES, "--workdir", str(workdir)], 2, tmp_path / "measures")
  assert jp.wait(procs, 600) == [0, 0], jp.tail(tmp_path / "measures")
  timed = lambda d: {k: v for k, v in d.items() if not k.endswith("seconds")}
  measures = timed(jp.printed_json(tmp_path / "measures" / "p0.log"))
  assert measures == timed(jp.printed_json(tmp_path / "measures" / "p1.log"))  # every process computes
  assert "sharp/worst_case_l2" in measures and "sharp/output_margin" in measures
  assert measures.keys() == timed(ref_measures).keys()
  for k, v in measures.items():  # an undefined measure (nan, e.g. 1/gamma^2 at gamma <= 0) on both sides
    assert (math.isnan(v) and math.isnan(ref_measures[k])) or jp.relative(v, ref_measures[k]) <= 1e-4, (
        k, v, ref_measures[k])
  assert len(list((workdir / "measures").glob("step100_posthoc*.json"))) == 1
  (tmp_path / "figures.json").write_text(json.dumps({"train": table, "measure": {
      "lambda_max": [got["top"]["values"][0], ref["top"]["values"][0]],
      "trace": [got["trace_hutchinson"]["estimate"], ref["trace_hutchinson"]["estimate"]]},
      "measures": {k: [v, ref_measures[k]] for k, v in measures.items()}}, indent=1))


def test_the_cluster_comes_from_flags_variables_or_slurm(monkeypatch):
  from research.core import distributed
  from research.core.errors import UserError

  for name in (*distributed.ENV, "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"):
    monkeypatch.delenv(name, raising=False)
  assert distributed.cluster_from_environment() is None
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "2")
  monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")  # the batch script itself: one process
  assert distributed.cluster_from_environment() is None
  monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")  # an srun step of 2 tasks: JAX reads SLURM_*
  assert distributed.cluster_from_environment() == {}
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  assert distributed.cluster_from_environment() == {"coordinator_address": "10.0.0.1:1234",
                                                    "num_processes": 4, "process_id": 3}
  monkeypatch.setenv("JAX_PROCESS_ID", "4")
  with pytest.raises(UserError, match=r"JAX_PROCESS_ID must be in \[0, JAX_NUM_PROCESSES\), got 4 of 4"):
    distributed.cluster_from_environment()
  monkeypatch.delenv("JAX_PROCESS_ID")
  with pytest.raises(UserError, match="missing JAX_PROCESS_ID"):
    distributed.cluster_from_environment()
  with pytest.raises(UserError, match="give all of coordinator_address, num_processes and process_id"):
    distributed.initialize("127.0.0.1:1", 2)
  with pytest.raises(UserError, match=r"process_id must be in \[0, num_processes\), got 2 of 2"):
    distributed.initialize("127.0.0.1:1", 2, 2)


@pytest.mark.parametrize("env, message", [
    ({}, "error: --distributed: no multi-process job found; give --coordinator_address"),
    ({"JAX_NUM_PROCESSES": "2"}, "error: multi-process run: set all of JAX_COORDINATOR_ADDRESS"),
])
def test_a_missing_cluster_is_one_line_and_exit_2(tmp_path, env, message):
  done = subprocess.run([sys.executable, *jp.TRAIN, "--workdir", str(tmp_path / "run"), "--distributed"],
                        cwd=jp.ROOT, env=jp.environment(**env), capture_output=True, text=True, timeout=300)
  last = done.stderr.strip().splitlines()[-1]
  assert done.returncode == 2 and last.startswith(message), done.stderr[-2000:]
  assert not (tmp_path / "run").exists()
