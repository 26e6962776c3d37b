"""Skip connections: what do residual connections do to the loss landscape and the Hessian, and how does
that change with depth?

Question: residual networks of two depths, each with and without its skip connections (the no-skip
twin has exactly the same parameters: the residual branches alone), trained alike: test accuracy, the
Hessian's extreme eigenvalues (lambda_max tracked during training; lambda_min and the ratio
lambda_min / lambda_max, a measure of non-convexity), and 2-D filter-normalized loss landscapes.

Published result it probes: Li, Xu, Taylor, Studer & Goldstein 2018 ("Visualizing the Loss Landscape
of Neural Nets", NeurIPS, arXiv:1712.09913): without skip connections the landscape turns chaotic as
depth grows (ResNet-56 and ResNet-110 without shortcuts; ResNet-20 is barely affected), with large
negative eigenvalues (a large |lambda_min / lambda_max|) and worse accuracy; with skips it stays
smooth and nearly convex around the minimum.

Commands:
  python -m experiments.sweep --config experiments/configs/skip_connections.py:quick \
      --workdir runs/skip_connections-quick --parallel 2
  python -m analysis.report runs/skip_connections-quick
  python -m experiments.sweep --config experiments/configs/skip_connections.py:paper \
      --workdir runs/skip_connections
Each trial ends with a 2-D filter-normalized loss landscape around its final parameters (the
`landscape` section: two random directions, biases and BatchNorm parameters zeroed, BatchNorm in eval
mode with the stored running statistics, as in Li et al.'s code), saved to `landscape/step<S>_2d` and
summarized as `land/` metrics; the report draws the contours per model.

Sweep (`get_sweep`): depth x skip (on, off), one seed for quick, 2 for paper.

Variants:
- `quick`: ResNet-20 and ResNet-32 at a quarter width (stages of 4, 8, 16 channels; BatchNorm, option-A
  shortcuts) on 2,048 Fashion-MNIST training images, heavy-ball momentum 0.9 at lr 0.05, 300 steps of 64
  (9.4 epochs): 4 trials; lambda_max and lambda_min on 128 fixed training images at initialization and
  at the end; at the end a 9 x 9 landscape on [-1, 1]^2 on 256 training (eval_train) and 256 test
  images. Measured: 7 min 2 s for the sweep and its report with `--parallel 2` on 2 quiet CPU cores
  (2026-11-22, load average 2-7 from the study's own processes, cold compilation cache; 4 trials of
  152-251 s).
- `paper`: Li et al.'s CIFAR-10 setting: ResNet-20, -56 and -110 with and without skips, momentum 0.9,
  lr 0.1 divided by 10 at 50%, 75% and 92% of 300 epochs, weight decay 5e-4, batch 128, crop and flip,
  2 seeds; the Hessian on 5,000 training images; a 51 x 51 landscape on [-1, 1]^2 on 10,000 training
  images (Li et al. use all 50,000). For a GPU; CIFAR-10 needs TFDS's download.
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
DEPTHS = {"quick": (20, 32), "paper": (20, 56, 110)}


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "skip_connections"
  c.model.name = f"resnet{DEPTHS[arg][0]}"
  c.model.knobs.skip = True
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.curvature.at_end = True
  c.curvature.bn_mode = "eval"
  c.curvature.lambda_min = True
  c.landscape.at_end = True
  c.landscape.kind = "2d"
  c.landscape.directions = "random"
  c.landscape.normalization = "filter"
  c.landscape.span = 1.0
  c.landscape.bn_mode = "eval"
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 2048
    c.data.options.valid_size = 500
    c.data.options.eval_train_size = 500
    c.model.knobs.width = 0.25
    c.schedule.name = "constant"
    c.schedule.lr = 0.05
    c.training.batch_size = 64
    c.training.num_epochs = 0
    c.training.num_steps = 300
    c.eval.every_epochs = 0
    c.eval.every_steps = 150
    c.log_every = 25
    c.curvature.every_steps = 300  # at initialization and at the end
    c.curvature.num_examples = 128
    c.curvature.chunk_size = 128
    c.landscape.num_points = 9
    c.landscape.num_examples = 256
    c.landscape.chunk_size = 256
    c.landscape.splits = ("eval_train", "test")
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 5000
    c.data.augment.crop_padding = 4
    c.data.augment.flip = True
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "step"
    c.schedule.lr = 0.1
    c.schedule.boundaries = (0.5, 0.75, 0.92)  # epochs 150, 225, 275 of 300
    c.schedule.decay_factor = 0.1
    c.training.batch_size = 128
    c.training.num_epochs = 300
    c.eval.every_epochs = 10
    c.log_every = 100
    c.curvature.every_steps = 30 * 351  # every 30 epochs of 45,000 / 128
    c.curvature.num_examples = 5000
    c.curvature.chunk_size = 500
    c.curvature.trace_probes = 50
    c.landscape.num_points = 51
    c.landscape.num_examples = 10000
    c.landscape.chunk_size = 1000
    c.landscape.splits = ("eval_train",)
  return c


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """depth x skip (True, False) x seed (1 for quick, 2 for paper)."""
  get_config(arg)
  arg = arg or "quick"
  return sweeps.product(sweeps.grid({"model.name": [f"resnet{d}" for d in DEPTHS[arg]],
                                     "model.knobs.skip": [True, False]}),
                        sweeps.seeds(1 if arg == "quick" else 2))
