"""python -m benchmarks.train [--steps 200]

Throughput of the full training loop (`research.training.train_and_evaluate`: host batching, device
transfer, the jitted step, metrics checks and logging, a final checkpoint) against the bare jitted train
step on a batch already on the device, in the same run, for `simple_cnn` on Fashion-MNIST (28x28x1) and
`resnet20` on synthetic 32x32x3 data (CIFAR-10 cannot be downloaded here; the step costs the same).
Batch 128, SGD with momentum, no evaluation; the bare step and the loop alternate for `--rounds`
rounds (medians). Prints steps/s, images/s and the loop's overhead.
If PyTorch is installed (`pip install -r benchmarks/requirements.txt`), the PyTorch twin's train step
(benchmarks/models.py, channels-last, the faster layout here) is timed in the same run too.
"""

import argparse
import tempfile
import time

import jax
import numpy as np
from flax import nnx

from benchmarks import models as model_bench
from research import data, models, training
from research.backend import xla
from research.training import optimizers, schedules
from research.training import state as state_lib
from research.training import step as step_lib

CASES = {
    "simple_cnn": dict(data="fashion_mnist", options={}, shape=(28, 28, 1)),
    "resnet20": dict(data="synthetic", shape=(32, 32, 3),
                     options=dict(synthetic_train=4096, synthetic_test=256, image_shape=(32, 32, 3),
                                  num_classes=10)),
}


def config_for(name: str, steps: int):
  c = training.default_config()
  case = CASES[name]
  c.data.name = case["data"]
  c.data.options.update(case["options"] | {"eval_train_size": 256})
  c.model.name = name
  c.training.num_epochs, c.training.num_steps = 0, steps
  c.eval.every_epochs, c.eval.splits = 0, ()
  c.log_every, c.progress = 50, "none"
  return c


def bare_step_rate(config, steps: int) -> float:
  """Steps/s of the jitted step alone on one device-resident batch (after compilation)."""
  ds = data.load(config.data.name, **dict(config.data.options))
  model = models.create(config.model.name, num_classes=ds.num_classes, input_shape=ds.input_shape,
                        rngs=nnx.Rngs(0))
  schedule = schedules.make_schedule(config.schedule, total_steps=steps, steps_per_epoch=100)
  optimizer = optimizers.make_optimizer(config.optimizer, schedule)
  graphdef, state = state_lib.create(model, optimizer)
  step = xla.jit(step_lib.make_train_step(graphdef, optimizer, schedule, loss_name="cross_entropy",
                                          label_smoothing=0.0, preprocess=ds.preprocess,
                                          augment_key=jax.random.key(0)), donate_argnums=0)
  bs = config.training.batch_size
  batch = jax.device_put({"image": ds.train.images[None, :bs],
                          "label": ds.train.labels[None, :bs].astype(np.int32),
                          "mask": np.ones((1, bs), np.float32)})
  state, m = step(state, batch)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps - 1):  # dispatched back to back, no host work at all: the upper bound
    state, m = step(state, batch)
  jax.block_until_ready(m)
  return (steps - 1) / (time.perf_counter() - t)


def torch_rate(name: str, steps: int) -> float | None:
  """Steps/s of the PyTorch twin's train step (benchmarks/models.py), channels-last, on one batch."""
  try:
    import torch  # noqa: F401
  except ImportError:
    return None
  images, labels = model_bench.synthetic_batch(name, 128)
  runner = model_bench.TorchRunner(name, images, labels, channels_last=True)
  for _ in range(2):
    runner()
  t = time.perf_counter()
  for _ in range(steps):
    runner()
  return steps / (time.perf_counter() - t)


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--models", default="simple_cnn,resnet20")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args(argv)
  allocator = model_bench.host_allocator()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch 128, {args.steps} steps; "
        f"host malloc: {allocator}; convolutions: {model_bench.convolutions()}")
  for name in args.models.split(","):
    steps = args.steps if name == "simple_cnn" else max(args.steps // 4, 20)
    config = config_for(name, steps)
    bares, loops = [], []
    for _ in range(args.rounds):  # alternated, so that load from other processes hits both alike
      bares.append(bare_step_rate(config, steps))
      with tempfile.TemporaryDirectory() as workdir:
        loops.append(training.train_and_evaluate(config, workdir)["steps_per_s"])
    bare, loop = float(np.median(bares)), float(np.median(loops))
    line = (f"{name:<11} bare step {bare:7.2f} steps/s ({bare * 128:7.0f} img/s) | loop {loop:7.2f} steps/s "
            f"({loop * 128:7.0f} img/s) | loop overhead {100 * (1 - loop / bare):5.1f}%")
    rate = torch_rate(name, steps)
    if rate is not None:
      line += f" | PyTorch {rate * 128:7.0f} img/s, JAX loop / PyTorch = {loop / rate:.2f}"
    print(line, flush=True)


if __name__ == "__main__":
  main()
