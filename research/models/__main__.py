"""python -m research.models list [--input_shape 32,32,3] [--num_classes 10]

Prints every model with its parameter count for that input and its knobs with their defaults.
"""

import argparse
import sys

from flax import nnx

from research.core.errors import UserError
from research.models import registry


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m research.models")
  parser.add_argument("command", choices=["list"])
  parser.add_argument("--input_shape", default="32,32,3")
  parser.add_argument("--num_classes", type=int, default=10)
  args = parser.parse_args(argv)
  try:
    shape = tuple(int(s) for s in args.input_shape.split(","))
  except ValueError:
    print(f"error: --input_shape must be H,W,C integers, got {args.input_shape!r}", file=sys.stderr)
    return 2
  for name in registry.available():
    try:
      model = nnx.eval_shape(lambda n=name: registry.create(
          n, num_classes=args.num_classes, input_shape=shape, rngs=nnx.Rngs(0)))
      count = f"{registry.num_params(model):>12,d}"
    except UserError as e:
      count = f"{'n/a':>12} ({e})"
    knobs = ", ".join(f"{k}={getattr(v, '__name__', repr(v))}" for k, v in registry.knobs(name).items())
    print(f"{name:<16} {count}  knobs: {knobs}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
