"""Edge of stability: does full-batch gradient descent drive the sharpness up to 2 / eta and hover there?

Question: train with full-batch GD at several step sizes eta and track lambda_max (the top Hessian
eigenvalue of the training loss on the whole training set) against the stability threshold 2 / eta of
GD on a quadratic; with heavy-ball momentum beta the threshold is (2 + 2 beta) / eta; with full-batch
Adam the preconditioned sharpness is compared with 38 / eta (beta1 = 0.9).

Published results it probes: Cohen, Kaur, Li, Kolter & Talwalkar 2021 ("Gradient Descent on Neural
Networks Typically Occurs at the Edge of Stability", ICLR, arXiv:2103.00065): progressive sharpening
raises lambda_max until it reaches 2 / eta, then it hovers just above while the loss keeps falling
non-monotonically, for MSE and cross-entropy alike. Cohen et al. 2022 ("Adaptive Gradient Methods at
the Edge of Stability", arXiv:2207.14484): full-batch Adam's preconditioned sharpness hovers at
(2 + 2 beta1) / ((1 - beta1) eta) = 38 / eta.

Commands:
  python -m experiments.sweep --config experiments/configs/edge_of_stability.py:quick \
      --workdir runs/edge_of_stability-quick --parallel 2
  python -m analysis.report runs/edge_of_stability-quick

Sweep (`get_sweep`): GD at three step sizes for MSE, GD at one step size for cross-entropy, heavy-ball
momentum 0.9 at one step size (MSE) and full-batch Adam at one step size (MSE, preconditioned sharpness
tracked).

Variants:
- `quick`: a tanh MLP (2 hidden layers of 128) on 1,000 Fashion-MNIST training images (100 per class),
  full-batch, lambda_max on the whole training set every 20 steps (warm-started Lanczos). Measured: 3
  min 44 s for the sweep and its report with `--parallel 2` on 2 quiet CPU cores (2026-11-22, load
  average 2-7 from the study's own processes, cold compilation cache; 6 trials of 59-79 s).
- `paper`: Cohen et al.'s setting: a tanh MLP (2 hidden layers of 200) on 5,000 CIFAR-10 images,
  full-batch GD, step sizes 2/30 ... 2/120, until the training loss is small. For a GPU.
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "edge_of_stability"
  c.model.name = "mlp"
  c.model.knobs.depth = 2
  c.model.knobs.width = 128 if arg == "quick" else 200
  c.model.knobs.activation = "tanh"
  c.loss.name = "mse"
  c.optimizer.name = "sgd"
  c.schedule.name = "constant"
  c.schedule.lr = 0.05
  c.training.full_batch = True
  c.training.num_epochs = 0
  c.training.num_steps = 1500 if arg == "quick" else 10000
  c.eval.every_epochs = 0
  c.eval.every_steps = 100 if arg == "quick" else 500
  c.eval.splits = ("eval_train", "test")
  c.log_every = 10
  c.curvature.every_steps = 20 if arg == "quick" else 50
  c.curvature.at_end = True
  c.curvature.num_examples = 0  # the whole training set: the loss GD minimizes
  c.curvature.chunk_size = 1000
  c.curvature.tol = 1e-3
  c.curvature.save_every = 500
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 1000
    c.data.options.valid_size = 0
    c.data.options.eval_train_size = 1000
  else:
    c.data.name = "cifar10"
    c.data.options.num_train = 5000
    c.data.options.valid_size = 0
    c.data.options.eval_train_size = 5000
    c.curvature.chunk_size = 5000
  return c


def get_sweep(arg: str | None = "quick") -> list[dict]:
  get_config(arg)
  quick = (arg or "quick") == "quick"
  # quick: lambda_max of this MLP starts near 80 (measured), so 2 / eta = 100, 50, 33 brackets it
  lrs = [0.02, 0.04, 0.06] if quick else [2 / 30, 2 / 60, 2 / 90, 2 / 120]
  gd_mse = sweeps.grid({"schedule.lr": lrs})
  gd_ce = sweeps.grid({"loss.name": ["cross_entropy"], "schedule.lr": [lrs[-1]]})
  momentum = sweeps.grid({"optimizer.name": ["momentum"], "optimizer.momentum": [0.9],
                          "schedule.lr": [0.05 if quick else 2 / 120]})  # (2 + 2 beta) / eta = 76
  adam = sweeps.grid({"optimizer.name": ["adam"], "schedule.lr": [2e-3 if quick else 1e-4],
                      "curvature.preconditioned": [True]})
  return sweeps.concat(gd_mse, gd_ce, momentum, adam)
