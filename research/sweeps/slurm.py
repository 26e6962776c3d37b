"""Trials as Slurm jobs through submitit (`--launcher slurm`): one job per trial attempt, at most
`--parallel` in flight, each running the same `python -m experiments.train ...` command as the local
launcher, from the same directory, with its output appended to the trial's `log.txt`.

submitit is not a dependency of the project: `pip install submitit==1.5.4` on the cluster's login node.
The sweep process waits for its jobs (run it in tmux/screen or a small CPU job); stopping it cancels
them, and re-running it resumes them from their checkpoints. A job that Slurm kills (time limit,
preemption, node failure) counts as a failed attempt and is retried up to `--retries` times.
`parameters` go to `AutoExecutor.update_parameters` (e.g. slurm_partition, timeout_min, gpus_per_node,
cpus_per_task, mem_gb); `cluster` (e.g. "local") goes to the AutoExecutor itself.
Not tested on a Slurm cluster in this repository (none is available to its tests).
"""

import subprocess
from pathlib import Path

from research.core.errors import UserError

SUBMITIT_VERSION = "1.5.4"


def run_command(argv: list[str], cwd: str, log_path: str) -> int:
  """What a job runs: the trial's command, output appended to its log; returns the exit status."""
  with open(log_path, "a") as log:
    return subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL).returncode


class SlurmLauncher:
  """The runner's launcher interface (start, poll, ident, stop) over submitit jobs."""

  def __init__(self, folder: Path, parameters: dict):
    try:
      import submitit
    except ImportError:
      raise UserError(f"--launcher slurm needs submitit: pip install submitit=={SUBMITIT_VERSION}") from None
    self._errors = (submitit.core.utils.UncompletedJobError,)
    self._logs = {}
    parameters = dict(parameters)
    cluster = parameters.pop("cluster", None)
    self.executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster)
    try:
      self.executor.update_parameters(**({"name": "sweep"} | parameters))
    except (ValueError, TypeError) as e:
      raise UserError(f"--slurm: {e}".splitlines()[0]) from None

  def start(self, argv: list[str], cwd: Path, log, lock_fd: int):
    log.flush()
    job = self.executor.submit(run_command, argv, str(cwd), log.name)
    self._logs[job.job_id] = log.name
    return job

  def poll(self, job) -> int | None:
    """The trial's exit status; 1 (and an `error:` line in its log) if the job ended without one."""
    if not job.done():
      return None
    try:
      return int(job.result())
    except self._errors as e:
      first = " ".join(str(e).split())[:300]
      with open(self._logs[job.job_id], "a") as f:
        f.write(f"error: slurm job {job.job_id} ended without an exit status ({job.state}): {first}\n")
      return 1

  def ident(self, job) -> str:
    return str(job.job_id)

  def stop(self, job) -> int | None:
    job.cancel(check=False)
    return None
