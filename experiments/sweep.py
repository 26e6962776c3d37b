"""python -m experiments.sweep --config experiments/configs/<study>.py[:variant] --workdir DIR
[--parallel N] [--launcher local|slurm] [--only 0,3] [--retries 1] [--dry_run] [--slurm KEY=VALUE ...]
[--config.key=value ...]

Trains every trial of the config file's `get_sweep(variant)` into DIR/<index>-<key=value...>/ (one run
directory each, `python -m experiments.train` subprocesses) and keeps DIR/sweep.json, the index of
trials. Re-running continues the sweep: finished trials are skipped, interrupted and failed ones resume
from their checkpoints. `--config.key=value` applies to every trial. When every trial has finished
and the config file defines `post_sweep(sweep_dir, arg)`, it runs last (comparisons across trials, e.g.
interpolation between runs; its outcome is `post_sweep` in sweep.json). See `research.sweeps.runner`.
While trials run, a progress line shows trials ended, training steps done over all selected trials,
elapsed time and an ETA, rewritten in place on a terminal, a plain line every 30 s in a log
(`research.sweeps.progress`).
Exit status: 0 every selected trial finished (done, early_stopped or diverged) and the post step, if
any, succeeded; 1 some did not or the post step failed; 2 bad input or DIR in use by another sweep (one
`error:` line); 130 interrupted.
"""

import argparse
import ast
import sys

from research.core.errors import USER_ERROR_EXIT_CODE, UserError, error_line


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UserError(message)


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _pairs(items: list[str], flag: str) -> dict:
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise UserError(f"{flag} takes KEY=VALUE, got {item!r}")
    out[key] = _literal(value)
  return out


def parse(argv: list[str]) -> argparse.Namespace:
  parser = _Parser(prog="python -m experiments.sweep", description=__doc__.split("\n\n")[1])
  parser.add_argument("--config", required=True, help="Study config file[:variant] with get_sweep(arg).")
  parser.add_argument("--workdir", required=True, help="Sweep directory (created; continued if it exists).")
  parser.add_argument("--parallel", type=int, default=1, help="Trials running at once.")
  parser.add_argument("--launcher", default="local", help="local (subprocesses) or slurm (submitit).")
  parser.add_argument("--only", default=None, help="Comma-separated trial indices to run.")
  parser.add_argument("--retries", type=int, default=1, help="Extra attempts for a failed trial.")
  parser.add_argument("--dry_run", action="store_true", help="Print the trials and commands; run nothing.")
  parser.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                      help="submitit parameter, e.g. slurm_partition=gpu timeout_min=120 gpus_per_node=1.")
  args, rest = parser.parse_known_args(argv)
  common = []
  for arg in rest:
    if not arg.startswith("--config.") or "=" not in arg:
      raise UserError(f"unknown argument {arg!r}; overrides for every trial look like --config.key=value")
    common.append(arg[len("--config."):])
  args.common = _pairs(common, "--config.")
  args.slurm = _pairs(args.slurm, "--slurm")
  try:
    args.only = None if args.only is None else [int(i) for i in args.only.split(",") if i.strip()]
  except ValueError:
    raise UserError(f"--only takes comma-separated trial indices, got {args.only!r}") from None
  return args


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  try:
    args = parse(argv)
    from research import sweeps  # after parsing, so that usage errors come fast

    index = sweeps.run_sweep(args.config, args.workdir, parallel=args.parallel, launcher=args.launcher,
                             only=args.only, retries=args.retries, dry_run=args.dry_run, common=args.common,
                             slurm=args.slurm, command=["python", "-m", "experiments.sweep", *argv])
  except (UserError, OSError) as e:  # OSError: the workdir or the dataset on disk
    print(error_line(e), file=sys.stderr)
    return USER_ERROR_EXIT_CODE
  except KeyboardInterrupt:
    return 130
  if args.dry_run:
    return 0
  selected = args.only if args.only is not None else range(len(index["trials"]))
  unfinished = [index["trials"][i] for i in selected
                if index["trials"][i]["status"] not in sweeps.index.FINISHED]
  post_failed = (index.get("post_sweep") or {}).get("status") == "failed"
  return 1 if unfinished or post_failed else 0


if __name__ == "__main__":
  sys.exit(main())
