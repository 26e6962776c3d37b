"""Multi-process training on one host: 2 JAX processes on 127.0.0.1 (CPU, gloo) train the quick default
run with lambda_max and the Hessian trace measured at the end, are killed with SIGKILL after their first
checkpoint and restarted; then 2 processes measure the final checkpoint with `experiments.measure`
(lambda_max and trace; sharpness and generalization measures).

The reference is 1 process with 2 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2): the
same per-device split of every batch, so the same arithmetic; only the process count differs. (Against 1
process with 1 device the summation order of the gradient differs and SGD amplifies the rounding: about
1e-5 relative at step 10, percents by step 50; see the README's Cluster section.)"""

import json
import time

import jax_processes as jp

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
  measures = jp.printed_json(tmp_path / "measures" / "p0.log")
  assert measures == jp.printed_json(tmp_path / "measures" / "p1.log")
  assert "sharp/worst_case_l2" in measures and "sharp/output_margin" in measures
  for k, v in ref_measures.items():
    if not k.endswith("seconds"):
      assert jp.relative(measures[k], v) <= 1e-4, (k, measures[k], v)
  assert len(list((workdir / "measures").glob("step100_posthoc*.json"))) == 1
  (tmp_path / "figures.json").write_text(json.dumps({"train": table, "measure": {
      "lambda_max": [got["top"]["values"][0], ref["top"]["values"][0]],
      "trace": [got["trace_hutchinson"]["estimate"], ref["trace_hutchinson"]["estimate"]]},
      "measures": {k: [measures[k], v] for k, v in ref_measures.items()}}, indent=1))
