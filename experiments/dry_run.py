"""python -m experiments.dry_run --config experiments/configs/<study>.py[:variant] [--config ...]
python -m experiments.dry_run --all [--variant paper] [--verbose] [--cost_lines]
[--gpu A100 --precision float32 --peak_tflops 19.5 --utilization 0.4]

Proves that every trial of a study's sweep would run, without training, compiling or downloading
anything: for each trial the dataset's shapes and split sizes from its dataset card, the model and its
parameter count under `jax.eval_shape` of its initialization, the train and eval steps and every
evaluator the config switches on traced on abstract batches of the run's shapes (`research.dry_run`).
Then prints, per study, the trials, parameters, steps, PFLOPs of the whole sweep (XLA's cost analysis of
each lowered program times the calls a trial makes of it), the share outside train steps, and GPU-hours
per trial and for the sweep at the stated throughput: an estimate from FLOP counts, not a measurement.
`--all` takes every experiments/configs/*.py that has `--variant` (default paper); `--verbose` adds
what was checked and each cost line per distinct program; `--cost_lines` the sentence each study's
docstring carries. (`python -m experiments.sweep --dry_run` is another thing: it lists the trials'
commands.) Runs on the CPU backend (JAX_PLATFORMS=cpu is set unless given).
Exit status: 0 every trial passed; 1 some trial failed (one `error:` line each, naming study, variant and
trial); 2 bad input.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from research.core.errors import USER_ERROR_EXIT_CODE, UserError

CONFIG_DIR = Path("experiments/configs")


def parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m experiments.dry_run", description=__doc__.split("\n\n")[1])
  parser.add_argument("--config", action="append", default=[], help="Study config file[:variant] (repeat).")
  parser.add_argument("--all", action="store_true", help=f"Every {CONFIG_DIR}/*.py with --variant.")
  parser.add_argument("--variant", default="paper", help="The variant --all takes (default paper).")
  parser.add_argument("--verbose", action="store_true", help="What was checked and costed, per program.")
  parser.add_argument("--cost_lines", action="store_true", help="Each study's docstring line on its cost.")
  parser.add_argument("--gpu", default="A100", help="Name of the GPU the hours are for.")
  parser.add_argument("--precision", default="float32", help="The precision of --peak_tflops.")
  parser.add_argument("--peak_tflops", type=float, default=19.5, help="Peak TFLOP/s (A100 float32: 19.5).")
  parser.add_argument("--utilization", type=float, default=0.4, help="Sustained fraction of the peak.")
  args = parser.parse_args(argv)
  if not args.config and not args.all:
    parser.error("give --config FILE[:VARIANT] or --all")
  if not (args.peak_tflops > 0 and 0 < args.utilization <= 1):
    parser.error("--peak_tflops must be > 0 and --utilization in (0, 1]")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # abstract shapes only: no accelerator is needed
  from research import dry_run
  from research.dry_run import study

  throughput = dry_run.Throughput(args.gpu, args.precision, args.peak_tflops, args.utilization)
  start = time.time()
  try:
    configs = list(args.config)
    skipped = []
    if args.all:
      found, skipped = study.studies_with(CONFIG_DIR.glob("[!_]*.py"), args.variant)
      configs += [c for c in found if c not in configs]
    planner = dry_run.Planner()
    plans = []
    for config in configs:
      plans.append(dry_run.plan_study(config, planner))
      print(f"{plans[-1].label}: {len(plans[-1].trials)} trials, {plans[-1].distinct} distinct programs "
            f"traced in {plans[-1].seconds:.1f} s", file=sys.stderr, flush=True)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return USER_ERROR_EXIT_CODE
  trials = sum(len(p.trials) for p in plans)
  print(f"Dry run on abstract shapes ({len(plans)} studies, {trials} trials, "
        f"{sum(p.distinct for p in plans)} distinct programs; nothing trained, compiled or downloaded; "
        f"{time.time() - start:.0f} s)")
  print(dry_run.table(plans, throughput))
  print(f"FLOPs: XLA's cost analysis of each lowered program x the calls a trial makes of it (train steps, "
        f"evaluations, evaluators; see research/dry_run/evaluators.py for how calls are counted). GPU-hours "
        f"at {throughput.describe()}. An estimate from FLOP counts: memory traffic, host work (data, "
        f"Lanczos' small algebra, norms, checkpoints), compilation and the solvers' early stops are not in "
        f"it. 'eval %': the share of FLOPs outside train steps.")
  for p in plans:
    if p.post_sweep:
      print(f"{p.label}: its post_sweep (a comparison across trials after the sweep) is not counted.")
  for path in skipped:
    print(f"{path}: no {args.variant!r} variant (skipped)")
  if args.verbose:
    for p in plans:
      print()
      print(study.describe(p, throughput))
  if args.cost_lines:
    print()
    for p in plans:
      if p.plans and not p.failures:
        print(f"{p.config}:")
        print(study.cost_line(p, throughput))
  failures = [f for p in plans for f in p.failures]
  for line in failures:
    print(f"error: {line}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
