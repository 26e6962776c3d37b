"""Launching one command as several JAX processes on this host (CPU, gloo collectives), for the tests of
multi-process training and measurement (tests/test_multiprocess.py, tests/test_slurm.py)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The quick default run with the Hessian's lambda_max and trace measured at the end; progress as lines.
TRAIN = ["-m", "experiments.train", "--config", "experiments/configs/default.py:quick",
         "--config.curvature.at_end=True", "--config.curvature.trace_probes=5",
         "--config.curvature.num_examples=256", "--config.curvature.chunk_size=256",
         "--config.progress=none"]
MEASURE = ["-m", "experiments.measure", "--what", "lambda_max,trace", "--num_examples", "256",
           "--chunk_size", "128", "--num_probes", "3", "--tol", "1e-6"]
# Sharpness and generalization measures of the last checkpoint (random perturbations, per-example margins).
MEASURES = ["-m", "experiments.measure", "--sections", "measures",
            "--config.measures.names=worst_case,average,epsilon,margin,norms,pac_bayes",
            "--config.measures.num_examples=256", "--config.measures.chunk_size=128",
            "--config.measures.steps=5", "--config.measures.restarts=2", "--config.measures.average_pairs=4",
            "--config.measures.pac_bayes_samples=2", "--config.measures.pac_bayes_depth=4"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def environment(**extra) -> dict:
  """This process's environment for a child on CPU, without any cluster variable of our own."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_"))}
  env.pop("XLA_FLAGS", None)
  return env | {"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)} | extra


def start(args: list[str], num_processes: int, logs: Path) -> list[subprocess.Popen]:
  """`python <args>` as `num_processes` processes of one JAX job (JAX_* variables, a free port on
  127.0.0.1); process i's output goes to logs/p<i>.log (appended)."""
  logs.mkdir(parents=True, exist_ok=True)
  address = f"127.0.0.1:{free_port()}"
  procs = []
  for i in range(num_processes):
    env = environment(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(num_processes),
                      JAX_PROCESS_ID=str(i))
    with open(logs / f"p{i}.log", "a") as log:
      procs.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
  return procs


def wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
  """The exit codes; on timeout every process is killed and TimeoutError raised."""
  deadline = time.time() + timeout
  try:
    return [p.wait(timeout=max(deadline - time.time(), 0.1)) for p in procs]
  except subprocess.TimeoutExpired:
    kill(procs)
    raise TimeoutError(f"processes still running after {timeout:.0f} s") from None


def kill(procs: list[subprocess.Popen]) -> None:
  """SIGKILL to each process (by its own id), then reaped."""
  for p in procs:
    if p.poll() is None:
      os.kill(p.pid, signal.SIGKILL)
  for p in procs:
    p.wait()


def tail(logs: Path, lines: int = 15) -> str:
  """The last lines of every process's log, for an assertion message."""
  out = []
  for log in sorted(logs.glob("p*.log")):
    text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    out += [f"== {log.name}", *text[-lines:]]
  return "\n".join(out)


def checkpoint_steps(workdir: Path) -> list[int]:
  """The finished checkpoint steps of a run directory (Orbax renames a step's folder when complete)."""
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def reference_run(folder: Path) -> tuple[Path, dict, dict]:
  """The 1-process reference with 2 CPU devices (the per-device split of every batch of a 2-process
  run): `TRAIN` into folder/run, then `MEASURE` and `MEASURES` of its last checkpoint. Returns (run,
  MEASURE's printed metrics, MEASURES' printed metrics)."""
  env = environment(XLA_FLAGS="--xla_force_host_platform_device_count=2")
  workdir = folder / "run"
  printed = []
  for args in ([*TRAIN, "--workdir", str(workdir)], [*MEASURE, "--workdir", str(workdir)],
               [*MEASURES, "--workdir", str(workdir)]):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
      raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout[-2000:]}{done.stderr[-3000:]}")
    printed.append(done.stdout)
  return workdir, json.loads(printed[1]), json.loads(printed[2])


def printed_json(log: Path) -> dict:
  """The JSON object `experiments.measure` printed into a process's log (other lines skipped)."""
  found = re.search(r"^\{\n.*?^\}$", log.read_text(errors="replace"), re.S | re.M)
  if found is None:
    raise AssertionError(f"no JSON object in {log}")
  return json.loads(found.group(0))


def relative(a: float, b: float) -> float:
  return abs(a - b) / max(abs(b), 1e-12)


def compare_runs(workdir: Path, reference: Path) -> dict:
  """Checks that `workdir` (a multi-process run of `TRAIN`) has one row per logged step, the reference's
  steps, and final metrics within 1e-4 relative of the reference's (lambda_max and the trace within
  1e-5); returns {metric: [value, reference value, relative difference]} of the final row."""
  from research.core import rundir

  rows = rundir.read_metrics(workdir / "metrics.jsonl")
  ref_rows = rundir.read_metrics(reference / "metrics.jsonl")
  steps = [r["step"] for r in rows]
  assert steps == sorted(set(steps)) == [r["step"] for r in ref_rows]  # one writer, no duplicated row
  floats = lambda r: {k: v for k, v in r.items() if isinstance(v, float) and not k.endswith("seconds")}
  final, ref_final = floats(rows[-1]), floats(ref_rows[-1])
  assert final.keys() == ref_final.keys() and "curv/lambda_max" in final and "curv/trace" in final
  table = {k: [final[k], ref_final[k], relative(final[k], ref_final[k])] for k in final}
  assert max(t[2] for t in table.values()) <= 1e-4, table
  assert table["curv/lambda_max"][2] <= 1e-5 and table["curv/trace"][2] <= 1e-5, table
  return table
