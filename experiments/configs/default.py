"""The default run: the simple CNN on offline Fashion-MNIST, SGD with momentum, 1 epoch.

Launch (about 1 minute on 2 CPU cores):
  python -m experiments.train --config experiments/configs/default.py --workdir runs/default
Variants: `:quick` (2,048 training examples, 100 steps, seconds), `:full` (30 epochs, cosine).

Sweep (`get_sweep`): learning rate x seed, e.g. the 4 trials of `:quick` (2 learning rates x 2 seeds):
  python -m experiments.sweep --config experiments/configs/default.py:quick --workdir runs/default-sweep \
      --parallel 2
"""

from research import sweeps
from research.training import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.data.name = "fashion_mnist"
  c.data.options.valid_size = 5000
  c.model.name = "simple_cnn"
  c.optimizer.name = "momentum"
  c.schedule.name = "constant"
  c.schedule.lr = 0.05
  c.training.batch_size = 128
  c.training.num_epochs = 1
  c.eval.every_epochs = 1
  c.eval.batch_size = 1000
  c.log_every = 50
  if arg == "quick":
    c.data.options.valid_size = 500
    c.data.options.num_train = 2048
    c.data.options.eval_train_size = 1000
    c.training.num_epochs = 0
    c.training.num_steps = 100
    c.eval.every_epochs = 0
    c.eval.every_steps = 50
    c.log_every = 10
  elif arg == "full":
    c.training.num_epochs = 30
    c.schedule.name = "cosine"
  elif arg is not None:
    raise ValueError(f"unknown variant {arg!r}; valid choices: quick, full")
  return c


def get_sweep(arg: str | None = None) -> list[dict]:
  """Learning rates x seeds (the learning rate varies slowest)."""
  get_config(arg)  # the same variant check
  lrs = {"quick": [0.02, 0.05], "full": [0.01, 0.03, 0.1]}.get(arg, [0.02, 0.05, 0.1])
  return sweeps.product(sweeps.grid({"schedule.lr": lrs}), sweeps.seeds(2 if arg == "quick" else 3))
