"""Optimizers: at a matched budget, which optimizer ends in the flattest minimum and the smallest gap?

Question: the same network and data trained for the same number of steps by full-batch gradient descent,
mini-batch SGD, SGD with heavy-ball momentum and Adam: final sharpness (lambda_max; for Adam also the
preconditioned lambda_max of P^-1/2 H P^-1/2, the curvature its update actually sees), training and test
accuracy and the generalization gap (the implicit bias of the optimizer).

Published results it probes: Keskar et al. 2017 (ICLR, arXiv:1609.04836) and Jastrzebski et al. 2017
(arXiv:1711.04623): gradient noise steers SGD to flatter minima than (near) full-batch training. Cohen,
Kaur, Li, Kolter & Talwalkar 2021 (ICLR, arXiv:2103.00065): full-batch GD's lambda_max rises to 2 / eta
and stays there; Cohen et al. 2022 ("Adaptive Gradient Methods at the Edge of Stability",
arXiv:2207.14484): Adam's preconditioned sharpness rises to 38 / eta (beta1 = 0.9) while its raw
lambda_max can keep growing. Wilson, Roelofs, Stern, Srebro & Recht 2017 ("The Marginal Value of
Adaptive Gradient Methods in Machine Learning", NeurIPS, arXiv:1705.08292): adaptive methods generalize
worse than SGD on image classification.

Commands:
  python -m experiments.sweep --config experiments/configs/optimizers.py:quick \
      --workdir runs/optimizers-quick --parallel 2
  python -m analysis.report runs/optimizers-quick
  python -m experiments.sweep --config experiments/configs/optimizers.py:paper --workdir runs/optimizers

Sweep (`get_sweep`): optimizer x seed. The budget is matched in steps (every optimizer makes the same
number of updates; full-batch GD computes each gradient on the whole training set). GD, SGD and
momentum take the same effective step: GD and SGD at lr eta, momentum 0.9 at lr eta / 10 (a constant
gradient moves it by eta / (1 - beta) = eta per step, as SGD). Adam at lr 1e-3, its usual default.

Variants:
- `quick`: `simple_cnn` at half width (conv blocks of 16 and 32 channels, dense 128) on 512 Fashion-MNIST
  training images (all of them evaluated as eval_train), 300 steps (batch 128: 75 epochs; GD: 300
  full-batch steps), eta = 0.05, 2 seeds: 8 trials; lambda_max on the whole training set every 100 steps.
  Measured: 4 min 31 s for the sweep and its report with `--parallel 2` on 2 quiet CPU cores
  (2026-11-22, load average 2-7 from the study's own processes, cold compilation cache; 8 trials of
  45-110 s).
- `paper`: ResNet-20 on 5,000 CIFAR-10 training images (Cohen et al.'s subset size), 10,000 steps,
  eta = 0.05, batch 128, no augmentation, 3 seeds; the Hessian on the whole subset (BatchNorm in eval
  mode; GD uses per-chunk batch statistics of 1,000 images). For a GPU; CIFAR-10 needs TFDS's download.
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
ETA = 0.05
OPTIMIZERS = {  # name: overrides of the base config
    "gd": {"optimizer.name": "sgd", "training.full_batch": True, "schedule.lr": ETA},
    "sgd": {"optimizer.name": "sgd", "training.full_batch": False, "schedule.lr": ETA},
    "momentum": {"optimizer.name": "momentum", "training.full_batch": False, "schedule.lr": ETA / 10},
    "adam": {"optimizer.name": "adam", "training.full_batch": False, "schedule.lr": 1e-3,
             "curvature.preconditioned": True},
}


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "optimizers"
  c.optimizer.name = "sgd"
  c.optimizer.momentum = 0.9
  c.schedule.name = "constant"
  c.schedule.lr = ETA
  c.training.batch_size = 128
  c.training.num_epochs = 0
  c.eval.every_epochs = 0
  c.eval.splits = ("eval_train", "test")
  c.curvature.at_end = True
  c.curvature.bn_mode = "eval"
  c.curvature.num_examples = 0  # the whole training set: the loss GD minimizes
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 512
    c.data.options.valid_size = 0
    c.data.options.eval_train_size = 512
    c.model.name = "simple_cnn"
    c.model.knobs.width = 0.5
    c.training.num_steps = 300
    c.eval.every_steps = 100
    c.log_every = 25
    c.curvature.every_steps = 100
    c.curvature.chunk_size = 512
  else:
    c.data.name = "cifar10"
    c.data.options.num_train = 5000
    c.data.options.valid_size = 0
    c.data.options.eval_train_size = 5000
    c.model.name = "resnet20"
    c.training.num_steps = 10000
    c.training.chunk_size = 1000  # GD: the 5,000 images as 5 exactly summed chunks
    c.eval.every_steps = 500
    c.log_every = 50
    c.curvature.every_steps = 500
    c.curvature.chunk_size = 1000
  return c


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """optimizer (gd, sgd, momentum, adam) x seed (2 for quick, 3 for paper)."""
  get_config(arg)
  return sweeps.product([dict(o) for o in OPTIMIZERS.values()],
                        sweeps.seeds(2 if (arg or "quick") == "quick" else 3))
