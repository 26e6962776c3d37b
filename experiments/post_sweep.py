"""python -m experiments.post_sweep --config experiments/configs/<study>.py[:variant] --workdir SWEEP_DIR

The post step of a sweep as its own job: calls the config file's `post_sweep(sweep_dir, arg)` (see
`research.sweeps.runner`). `experiments.sweep` launches it through the sweep's launcher once every trial
has finished; run it by hand to redo the comparison across trials. Exit status: 0 done, 1 the post step
raised (traceback printed), 2 bad input (one `error:` line).
"""

import argparse
import sys

from research.core.errors import USER_ERROR_EXIT_CODE, UserError


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.post_sweep",
                                   description=__doc__.split("\n\n")[1])
  parser.add_argument("--config", required=True, help="Study config file[:variant] with post_sweep.")
  parser.add_argument("--workdir", required=True, help="The sweep directory.")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  from research.sweeps import runner

  try:
    runner.call_post_sweep(args.config, args.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return USER_ERROR_EXIT_CODE
  return 0


if __name__ == "__main__":
  sys.exit(main())
