"""Multi-process training on one host: 2 JAX processes on 127.0.0.1 (CPU, gloo) train the quick default
run with lambda_max and the Hessian trace measured at the end, are killed with SIGKILL after their first
checkpoint and restarted; then 2 processes measure the final checkpoint with `experiments.measure`.

The reference is 1 process with 2 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2): the
same per-device split of every batch, so the same arithmetic; only the process count differs. (Against 1
process with 1 device the summation order of the gradient differs and SGD amplifies the rounding: about
1e-5 relative at step 10, percents by step 50; see the README's Cluster section.)"""

import json
import subprocess
import sys
import time

import jax_processes as jp
import pytest

from research.core import rundir

MEASURE = ["-m", "experiments.measure", "--what", "lambda_max,trace", "--num_examples", "256",
           "--chunk_size", "128", "--num_probes", "3", "--tol", "1e-6"]


def _rel(a: float, b: float) -> float:
  return abs(a - b) / max(abs(b), 1e-12)


def _floats(record: dict) -> dict:
  return {k: v for k, v in record.items() if isinstance(v, float) and not k.endswith("seconds")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The 1-process run (2 CPU devices) and its post-hoc measurement."""
  folder = tmp_path_factory.mktemp("one")
  env = jp.environment(XLA_FLAGS="--xla_force_host_platform_device_count=2")
  workdir = folder / "run"
  for args in ([*jp.TRAIN, "--workdir", str(workdir)], [*MEASURE, "--workdir", str(workdir)]):
    done = subprocess.run([sys.executable, *args], cwd=jp.ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  return workdir, json.loads(done.stdout)


def test_two_processes_killed_and_restarted_equal_one_process(reference, tmp_path):
  ref_dir, ref_measure = reference
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

  rows = rundir.read_metrics(workdir / "metrics.jsonl")
  ref_rows = rundir.read_metrics(ref_dir / "metrics.jsonl")
  steps = [r["step"] for r in rows]
  assert steps == sorted(set(steps)) == [r["step"] for r in ref_rows]  # one writer, no duplicated row
  final, ref_final = _floats(rows[-1]), _floats(ref_rows[-1])
  assert final.keys() == ref_final.keys() and "curv/lambda_max" in final and "curv/trace" in final
  worst = max(_rel(final[k], ref_final[k]) for k in final)
  assert worst <= 1e-4, {k: (final[k], ref_final[k]) for k in final}
  for k in ("curv/lambda_max", "curv/trace"):
    assert _rel(final[k], ref_final[k]) <= 1e-5, (k, final[k], ref_final[k])
  summary = rundir.read_json(workdir / "summary.json")
  assert summary["devices"] == 2 and summary["final"]["test/loss"] == rows[-1]["test/loss"]

  # The final checkpoint measured by 2 processes: Lanczos and Hutchinson over both processes' chunks.
  procs = jp.start([*MEASURE, "--workdir", str(workdir)], 2, tmp_path / "measure")
  assert jp.wait(procs, 600) == [0, 0], jp.tail(tmp_path / "measure")
  records = sorted((workdir / "curvature").glob("step100_hessian_train*.json"))
  assert len(records) == 2  # training's record and one post-hoc record: process 0 alone wrote
  measured = rundir.read_json(records[-1])  # step100_hessian_train_posthoc<time>.json
  ref_records = sorted((ref_dir / "curvature").glob("step100_hessian_train_posthoc*.json"))
  ref = rundir.read_json(ref_records[0])["results"]
  got = measured["results"]
  assert _rel(got["top"]["values"][0], ref["top"]["values"][0]) <= 1e-5
  assert _rel(got["trace_hutchinson"]["estimate"], ref["trace_hutchinson"]["estimate"]) <= 1e-5
  assert _rel(got["top"]["values"][0], ref_measure["lambda_max"]) <= 1e-5
