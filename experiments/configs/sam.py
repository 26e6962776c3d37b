"""Sharpness-aware minimization: do SAM and ASAM find flatter minima that generalize better than SGD?

Question: the same network trained with SGD (heavy-ball momentum), SAM and ASAM at the same learning
rate and step budget, several seeds each: test accuracy, generalization gap, lambda_max (tracked during
training), trace, and worst-case sharpness of the solutions.

Published results it probes: Foret, Kleiner, Mobahi & Neyshabur 2021 ("Sharpness-Aware Minimization for
Efficiently Improving Generalization", ICLR, arXiv:2010.01412): minimizing the worst-case loss in an
l2 ball of radius rho = 0.05 lowers test error (e.g. WideResNet-28-10 on CIFAR-10) and gives a Hessian
with smaller top eigenvalues. Kwon, Kim, Park & Choi 2021 ("ASAM: Adaptive Sharpness-Aware
Minimization for Scale-Invariant Learning of Deep Neural Networks", ICML, arXiv:2102.11600): the
adaptive (scale-invariant) ball |T_w^-1 eps| <= rho, T_w = |w| + eta, improves on SAM.

Commands:
  python -m experiments.sweep --config experiments/configs/sam.py:quick --workdir runs/sam-quick \
      --parallel 2
  python -m analysis.report runs/sam-quick
  python -m experiments.sweep --config experiments/configs/sam.py:paper --workdir runs/sam
Worst-case sharpness of the final networks is measured at the end of each trial by the measures
evaluator (`measures` section, research/measures/tracking.py): plain l2 with SAM's rho = 0.05 and
adaptive l2 with ASAM's rho = 0.5 (`sharp/worst_case_l2`, `sharp/worst_case_adaptive_l2`), the same
probe set and BatchNorm mode as the curvature tracker, 20 ascent steps from one random start.

Sweep (`get_sweep`): method (SGD: rho = 0; SAM: rho = 0.05; ASAM: adaptive, rho = 0.5, eta = 0.01, the
defaults of Kwon et al.'s code) x seed. SAM and ASAM cost two gradients per step.

Variants:
- `quick`: `simple_cnn` (conv blocks of 32 and 64 channels, dense 128) on 4,096 Fashion-MNIST training
  images, heavy-ball momentum 0.9 at lr 0.05, 400 steps of 128 (12.5 epochs), 2 seeds: 6 trials;
  lambda_max every 200 steps and trace (8 probes) on 256 fixed training images, worst-case sharpness at
  the end on the same images. Measured: 6 min 52 s for the sweep and its report with `--parallel 2` on 2
  quiet CPU cores (2026-11-22, load average 2-7 from the study's own processes, cold compilation cache;
  6 trials of 122-143 s).
- `paper`: WideResNet-28-10 on CIFAR-10 (Foret et al.'s CIFAR model) with SAM's rho = 0.05 and a standard
  recipe: momentum 0.9, lr 0.1 with cosine decay, weight decay 5e-4, batch 128, 200 epochs, crop and flip,
  the whole batch as one m-sharpness group; 3 seeds; the Hessian on 5,000 training images. For a GPU;
  CIFAR-10 needs TFDS's download.
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
METHODS = {  # name: overrides of optimizer.sam
    "sgd": {"optimizer.sam.rho": 0.0, "optimizer.sam.adaptive": False},
    "sam": {"optimizer.sam.rho": 0.05, "optimizer.sam.adaptive": False},
    "asam": {"optimizer.sam.rho": 0.5, "optimizer.sam.adaptive": True},
}


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "sam"
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.optimizer.sam.eta = 0.01
  c.curvature.bn_mode = "eval"
  c.curvature.at_end = True
  c.measures.at_end = True
  c.measures.names = "worst_case,worst_case_adaptive"
  c.measures.rho = METHODS["sam"]["optimizer.sam.rho"]
  c.measures.adaptive_rho = METHODS["asam"]["optimizer.sam.rho"]
  c.measures.bn_mode = "eval"
  c.measures.steps = 20
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 4096
    c.data.options.valid_size = 1000
    c.data.options.eval_train_size = 1000
    c.model.name = "simple_cnn"
    c.schedule.name = "constant"
    c.schedule.lr = 0.05
    c.training.batch_size = 128
    c.training.num_epochs = 0
    c.training.num_steps = 400
    c.eval.every_epochs = 0
    c.eval.every_steps = 200
    c.log_every = 25
    c.curvature.every_steps = 200
    c.curvature.num_examples = 256
    c.curvature.chunk_size = 256
    c.curvature.trace_probes = 8
    c.measures.num_examples = 256
    c.measures.chunk_size = 256
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 5000
    c.data.augment.crop_padding = 4
    c.data.augment.flip = True
    c.model.name = "wide_resnet"
    c.model.knobs.depth = 28
    c.model.knobs.widen_factor = 10
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "cosine"
    c.schedule.lr = 0.1
    c.training.batch_size = 128
    c.training.num_epochs = 200
    c.eval.every_epochs = 10
    c.curvature.every_steps = 20 * 351  # every 20 epochs of 45,000 / 128
    c.curvature.num_examples = 5000
    c.curvature.chunk_size = 500
    c.curvature.trace_probes = 50
    c.measures.num_examples = 5000
    c.measures.chunk_size = 500
  return c


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """method (sgd, sam, asam) x seed (2 for quick, 3 for paper)."""
  get_config(arg)
  methods = [dict(m) for m in METHODS.values()]
  return sweeps.product(methods, sweeps.seeds(2 if (arg or "quick") == "quick" else 3))
