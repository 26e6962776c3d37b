"""python -m experiments.measure --workdir RUN --sections curvature[,...] [--checkpoint STEP]
[--config.<section>.<key>=value ...]

Measures a trained checkpoint of run directory RUN (the latest by default) with the evaluators training
runs on its schedule: the named config sections are switched on at that checkpoint, with the given
overrides (e.g. `--config.curvature.k=5 --config.curvature.density_every=1`). Records go where training
writes them (`RUN/curvature/`, ...); the metrics are printed and appended to `RUN/posthoc.jsonl`.
Exit status: 0 measured, 2 bad input (one `error:` line).
"""

import argparse
import ast
import json
import sys

from research.core.errors import UserError


def _overrides(extra: list[str]) -> dict:
  out = {}
  for arg in extra:
    if not arg.startswith("--config.") or "=" not in arg:
      raise UserError(f"unrecognized argument {arg!r}; overrides look like --config.<section>.<key>=value")
    key, value = arg[len("--config."):].split("=", 1)
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.measure", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="run directory")
  parser.add_argument("--sections", required=True, help="comma-separated config sections to measure")
  parser.add_argument("--checkpoint", type=int, default=None, help="checkpoint step (default: the latest)")
  args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  from research import native, xla
  from research.evaluators import posthoc

  try:
    xla.tune_host_allocator()  # before JAX runs anything
    native.conv_choice()  # $RESEARCH_CONV checked before any work
    xla.use_compilation_cache()
    metrics = posthoc.measure_checkpoint(args.workdir, [s for s in args.sections.split(",") if s],
                                         overrides=_overrides(extra), step=args.checkpoint)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # the workdir or the dataset on disk (permissions, space, a file in the way)
    print(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
    return 2
  print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
