"""python -m experiments.train --config experiments/configs/<study>.py[:variant] --workdir DIR
[--config.key=value ...]

Trains one run into DIR (see DESIGN.md's run directory) and resumes it if DIR has checkpoints. A finished
run in DIR is never rewritten: the same config prints its result, another one is refused; `--force`
moves DIR to DIR.replaced-<UTC time> (nothing is deleted) and starts over.
Several processes (hosts) run the same command, each with `--coordinator_address HOST:PORT
--num_processes N --process_id I` (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or as
the tasks of one `srun`: every process trains on its share of each batch, process 0 writes DIR.
Exit status: 0 done, 2 bad input or an unusable workdir or dataset (one `error:` line), 3 diverged
(non-finite loss, gradient or parameters).
"""

import ast
import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from research.core.errors import DIVERGED_EXIT_CODE, USER_ERROR_EXIT_CODE, UserError, error_line

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it has checkpoints).")
_FORCE = flags.DEFINE_bool("force", False, "Start over: move whatever is at --workdir (e.g. a finished run) "
                           "to <workdir>.replaced-<UTC time> first; nothing is deleted.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Require a multi-process job (refuse to run as one "
                                 "process when the flags, JAX_* variables or Slurm describe none).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process run: host:port of process "
                                   "0's coordinator (else JAX_COORDINATOR_ADDRESS, or a Slurm step).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process run: the number of processes "
                                      "(else JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index "
                                   "(else JAX_PROCESS_ID).")


FREE_FORM = ("model.knobs.", "data.options.")  # any key: checked by the model registry / data loader


def _split_free_form(argv: list[str]) -> tuple[list[str], dict[str, object]]:
  """Takes `--config.model.knobs.K=V` and `--config.data.options.K=V` out of argv (they may name keys
  the config file does not set); values are Python literals, or strings."""
  rest, free = [], {}
  for arg in argv:
    key = arg[len("--config."):].split("=", 1)[0] if arg.startswith("--config.") else ""
    if any(key.startswith(p) for p in FREE_FORM) and "=" in arg:
      value = arg.split("=", 1)[1]
      try:
        free[key] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        free[key] = value
    else:
      rest.append(arg)
  return rest, free


def _check_override_keys(argv: list[str]) -> None:
  """One line for an override naming a key that does not exist (absl's message is multi-line)."""
  from research.training import config as config_lib

  reference = config_lib.config_keys()
  for arg in argv:
    if arg.startswith("--config."):
      key = arg[len("--config."):].split("=", 1)[0]
      if key not in reference:
        raise UserError(config_lib.unknown_key_message(key, reference))


def _check_config_file(argv: list[str]) -> None:
  for i, arg in enumerate(argv):
    path = (arg.split("=", 1)[1] if arg.startswith("--config=")
            else argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
    if path is not None and not Path(path.split(":", 1)[0]).is_file():
      studies = sorted(str(p) for p in Path("experiments/configs").glob("[!_]*.py"))
      raise UserError(f"config file {path.split(':', 1)[0]!r} not found; studies: {', '.join(studies)}")


def launch_record(argv: list[str]) -> dict:
  """How this run was launched, for `meta.json`'s `launch` (the report's Reproduce section reads it):
  the command line as typed, the config file[:variant] and the `--config.*` overrides."""
  config = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      config = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      config = argv[i + 1]
  return {"argv": ["python", "-m", "experiments.train", *argv[1:]], "cwd": str(Path.cwd()),
          "config": config, "overrides": [a for a in argv[1:] if a.startswith("--config.")]}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv if argv is None else argv
  launch = launch_record(argv)
  try:
    argv, free = _split_free_form(argv)
    sys.argv = list(argv)  # config_flags finds `--config.*` overrides in sys.argv itself
    _check_config_file(argv)
    _check_override_keys(argv)
    FLAGS(argv)
    if not _WORKDIR.value:
      raise UserError("--workdir is required")
    config = _CONFIG.value
    if config is None:
      raise UserError("--config is required (e.g. experiments/configs/default.py:quick)")
    for key, value in free.items():
      section, name = key.rsplit(".", 1)
      sub = config
      for part in section.split("."):
        sub = sub[part]
      with sub.unlocked():
        sub[name] = value
  except (flags.Error, UserError, ValueError, KeyError, AttributeError, TypeError, OSError) as e:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if "Error whilst parsing config file" in str(e) and lines:  # an error raised by get_config
      lines = [lines[-1].split(": ", 1)[-1]]
    message = " ".join(" ".join(lines).split()) or type(e).__name__
    print(f"error: {message}", file=sys.stderr)
    return 2
  from research import backend  # after flag parsing, so that errors above come fast
  from research.core import distributed

  try:
    backend.setup()  # before JAX runs anything; touches no device
    joined = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if _DISTRIBUTED.value and not joined:
      raise UserError("--distributed: no multi-process job found; give --coordinator_address, "
                      "--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                      "JAX_PROCESS_ID), or run under srun with several tasks")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from research import training

  try:
    summary = training.train_and_evaluate(config, _WORKDIR.value, launch=launch, force=_FORCE.value)
  except (UserError, OSError) as e:  # OSError: the workdir or the dataset on disk
    print(error_line(e), file=sys.stderr)
    return USER_ERROR_EXIT_CODE
  final = summary.get("final", {})
  shown = {k: round(v, 4) for k, v in final.items() if isinstance(v, float)}
  if summary.get("already_finished"):
    print(f"{_WORKDIR.value} is a finished run (nothing trained; --force starts over)")
  if summary["status"] == "diverged" and summary.get("divergence"):
    print(f"diverged: {summary['divergence']['message']}")
  else:
    print(f"{summary['status']} at step {summary['step']}: {shown}")
  return DIVERGED_EXIT_CODE if summary["status"] == "diverged" else 0


if __name__ == "__main__":
  sys.exit(main())
