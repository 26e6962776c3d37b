"""python -m experiments.convert_checkpoints RUN_DIR

Rewrites a run's checkpoints of the old flat format (a list of arrays without names) in the named,
checksummed format (`research.training.checkpoints`), then restores the latest one by name and verifies
it. The old folder is kept as `checkpoints.flat` until you delete it. Exit status: 0 converted (or
nothing to convert), 2 bad input (one `error:` line).
"""

import sys
from pathlib import Path

from research.core.errors import USER_ERROR_EXIT_CODE, UserError


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1 or argv[0].startswith("-"):
    print("usage: python -m experiments.convert_checkpoints RUN_DIR", file=sys.stderr)
    return USER_ERROR_EXIT_CODE
  from research import training
  from research.training import checkpoints

  workdir = Path(argv[0])
  try:
    _, _, template = training.initial_state(training.run_config(workdir))
    converted = checkpoints.convert_flat(workdir / "checkpoints", template)
    step = training.load_run(workdir)[-1]
  except (UserError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return USER_ERROR_EXIT_CODE
  done = f"converted steps {', '.join(map(str, converted))}" if converted else "nothing to convert"
  print(f"{workdir / 'checkpoints'}: {done}; step {step} restored by name and verified" +
        ("; the old steps are kept in checkpoints.flat until you delete it" if converted else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
