"""Speed of a 2-D loss-landscape scan against a forward pass. Run by hand:

  .venv/bin/python -m benchmarks.landscape [--points_per_batch 1,2,4,8] [--grid 21] [--examples 1000]

About 5-10 minutes on 2 CPU cores (most of it the full 21x21 scan).

What is timed, all in one process on the same 1,000 examples (Fashion-MNIST training images through
`research.data.load("fashion_mnist", num_train=...)` when prepared, synthetic 28x28x1 otherwise) and
the same `simple_cnn` (default knobs, 10 classes, 421,642 parameters, initial weights: the speed does
not depend on their values), BatchNorm mode eval (simple_cnn has no BatchNorm by default):

1. `forward`: a jitted call of the mean cross-entropy over the 1,000 examples in one batch
   (`curvature.model_functions`' loss_fn), per call over 2 back-to-back calls: the reference cost.
2. For each points_per_batch value P: `landscape.scan` of 2P grid points (two filter-normalized random
   directions, the examples as one chunk), after a first call that compiles; wall time per point.
   The forward pass and the scans are timed round-robin, `--repeats` rounds, medians reported, so
   that load from other processes hits all of them alike.
3. The full `--grid` x `--grid` scan with the fastest points_per_batch (already compiled by step 2):
   total wall time, with and without that compilation, and time per point against the forward pass
   timed before (step 2) and right after it.

Printed: every time and the ratios (time per point / forward time; goal within 1.5x).
"""

import argparse
import statistics
import time

import jax
import numpy as np
from flax import nnx

from benchmarks import models as model_bench
from research import data, landscape, models
from research.backend import xla
from research.core.errors import UserError
from research.curvature import operators


def _examples(n: int):
  try:
    ds = data.load("fashion_mnist", num_train=n, eval_train_size=0, prepare=False)
    return ds.train.images, ds.train.labels, ds.preprocess, "fashion_mnist"
  except UserError as e:
    print(f"fashion_mnist not available ({e}); using synthetic data")
    ds = data.load("synthetic", synthetic_train=n, synthetic_test=10, image_shape=(28, 28, 1), num_classes=10)
    return ds.train.images, ds.train.labels, ds.preprocess, "synthetic"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--points_per_batch", default="1,2,4,8")
  parser.add_argument("--grid", type=int, default=21)
  parser.add_argument("--examples", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  print(f"host malloc: {model_bench.host_allocator()}; convolutions: {model_bench.convolutions()}")

  images, labels, preprocess, source = _examples(args.examples)
  model = models.create("simple_cnn", num_classes=10, input_shape=(28, 28, 1), rngs=nnx.Rngs(0))
  graphdef, params, rest = models.split(model)
  print(f"simple_cnn, {models.num_params(model):,} parameters, {len(labels)} {source} examples, "
        f"devices {jax.devices()}")

  loss_fn, _ = operators.model_functions(graphdef, rest, preprocess=preprocess)
  batch = {"image": jax.device_put(images), "label": jax.device_put(labels.astype(np.int32))}
  forward = xla.jit(loss_fn)
  point_model = landscape.point_model(graphdef, rest, preprocess=preprocess)
  directions = landscape.random_directions(params, 0, 2)
  split = {"train": operators.make_chunks(images, labels)}  # one chunk of all examples, like `forward`
  candidates = [int(x) for x in args.points_per_batch.split(",")]

  def time_forward(calls: int = 2) -> float:
    """Seconds per call over `calls` back-to-back calls (a scan's points run back to back too: a lone
    call after a large scan measured up to 2x slower than the same call amid others)."""
    t = time.perf_counter()
    for _ in range(calls):
      out = forward(params, batch)
    out.block_until_ready()
    return (time.perf_counter() - t) / calls

  def time_scan(ppb: int) -> float:
    """Seconds per point of a scan of 2 point batches (its functions compiled by an earlier call)."""
    axis = np.linspace(-1.0, 1.0, 2 * ppb)
    result = landscape.scan(point_model, params, directions, [axis, np.zeros(1)], split, points_per_batch=ppb)
    return result.info["seconds_per_point"]

  time_forward()
  compile_seconds = {}
  for ppb in candidates:  # compiles each points_per_batch's functions
    t = time.perf_counter()
    time_scan(ppb)
    compile_seconds[ppb] = time.perf_counter() - t
  times = {"forward": []} | {ppb: [] for ppb in candidates}
  for _ in range(args.repeats):  # round-robin, so that load from other processes hits all alike
    times["forward"].append(time_forward())
    for ppb in candidates:
      times[ppb].append(time_scan(ppb))
  t_forward = statistics.median(times["forward"])
  print(f"forward (loss) over {len(labels)} examples: {t_forward * 1e3:.1f} ms (median of {args.repeats}, "
        f"min {min(times['forward']) * 1e3:.1f})")
  per_point = {ppb: statistics.median(times[ppb]) for ppb in candidates}
  for ppb in candidates:
    print(f"points_per_batch {ppb:2d}: {per_point[ppb] * 1e3:7.1f} ms per point (min "
          f"{min(times[ppb]) * 1e3:.1f}) = {per_point[ppb] / t_forward:.2f}x forward; first scan incl. "
          f"compile {compile_seconds[ppb]:.1f} s")
  best = min(per_point, key=per_point.get)
  print(f"fastest points_per_batch: {best}")

  axis = np.linspace(-1.0, 1.0, args.grid)
  t = time.perf_counter()
  result = landscape.scan_2d(point_model, params, directions, split, xs=axis, ys=axis, points_per_batch=best)
  total = time.perf_counter() - t
  after = statistics.median([time_forward() for _ in range(args.repeats)])
  per = total / result.info["num_points"]
  print(f"{args.grid}x{args.grid} scan ({result.info['num_points']} points), points_per_batch {best}: "
        f"{total:.1f} s ({total + compile_seconds[best]:.1f} s with the first call's compilation), "
        f"{per * 1e3:.1f} ms per point = {per / t_forward:.2f}x the forward before, {per / after:.2f}x the "
        f"forward right after ({after * 1e3:.1f} ms); goal <= 1.5x; loss range "
        f"{result.values['train']['loss'].min():.3f}..{result.values['train']['loss'].max():.3f}")

if __name__ == "__main__":
  main()
