"""Several JAX processes as one computation (multi-host training, or several processes on one host).

`initialize(...)` calls `jax.distributed.initialize` with the cluster from, in order: the arguments;
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (this JAX reads none of them
itself); or a Slurm job step of more than one task (JAX detects SLURM_* itself: one process per task).
On CPU the processes exchange collectives over gloo. Call it before anything else touches JAX.
Afterwards every process computes the same program on its share of each batch
(`research.core.mesh.global_batch`) and process 0 alone writes files (`rundir.is_writer`).
"""

import os

import jax

from research.core.errors import UserError

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _slurm_tasks() -> int:
  for name in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
    value = os.environ.get(name, "")
    if value.isdigit():
      return int(value)
  return 0


def cluster_from_environment() -> dict | None:
  """{coordinator_address, num_processes, process_id} from the JAX_* variables, {} for a Slurm step of
  several tasks (JAX detects it), or None when neither describes a multi-process job."""
  given = {name: os.environ.get(name) for name in ENV}
  if any(v is not None for v in given.values()):
    missing = [name for name, v in given.items() if v is None]
    if missing:
      raise UserError(f"multi-process run: set all of {', '.join(ENV)} (missing {', '.join(missing)})")
    try:
      num, pid = int(given["JAX_NUM_PROCESSES"]), int(given["JAX_PROCESS_ID"])
    except ValueError:
      raise UserError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                      f"{given['JAX_NUM_PROCESSES']!r} and {given['JAX_PROCESS_ID']!r}") from None
    if num < 1 or not 0 <= pid < num:
      raise UserError(f"JAX_PROCESS_ID must be in [0, JAX_NUM_PROCESSES), got {pid} of {num}")
    return {"coordinator_address": given["JAX_COORDINATOR_ADDRESS"], "num_processes": num,
            "process_id": pid}
  if "SLURM_JOB_ID" in os.environ and _slurm_tasks() > 1:
    return {}
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the multi-process job described by the arguments or the environment (see the module
  docstring); returns False, doing nothing, when there is none (a single process)."""
  given = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise UserError("multi-process run: give all of coordinator_address, num_processes and process_id "
                      f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r})")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise UserError(f"process_id must be in [0, num_processes), got {process_id} of {num_processes}")
    cluster = {"coordinator_address": coordinator_address, "num_processes": num_processes,
               "process_id": process_id}
  else:
    cluster = cluster_from_environment()
  if cluster is None:
    return False
  platforms = (jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")).split(",")[0].strip()
  if platforms in ("", "cpu"):  # CPU collectives across processes (GPUs and TPUs bring their own)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**cluster)
  return True
