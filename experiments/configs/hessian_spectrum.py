"""Hessian spectrum: what does the eigenvalue density look like at initialization and after training, with
and without BatchNorm, and how many outliers leave the bulk as the number of classes changes?

Question: the spectral density of the training-loss Hessian (stochastic Lanczos quadrature) and its top
12 eigenvalues (Lanczos), (a) at initialization and after training, for the same CNN with and without
BatchNorm; (b) after training on class subsets of 2, 5 and 10 classes: the number of outlier
eigenvalues against the number of classes C.

Published results it probes: Ghorbani, Krishnan & Xiao 2019 ("An Investigation into Neural Net
Optimization via Hessian Eigenvalue Density", ICML, arXiv:1901.10159): during training large isolated
eigenvalues separate from the bulk; without BatchNorm they are large and slow optimization, with
BatchNorm they are suppressed. Papyan 2019 ("Measurements of Three-Level Hierarchical Structure in the
Outliers in the Spectrum of Deepnet Hessians", ICML, arXiv:1901.08244) and Sagun, Evci, Guney, Dauphin
& Bottou 2017 ("Empirical Analysis of the Hessian of Over-Parametrized Neural Networks",
arXiv:1706.04454): the spectrum is a bulk near zero plus about C outliers, C the number of classes.

Commands:
  python -m experiments.sweep --config experiments/configs/hessian_spectrum.py:quick \
      --workdir runs/hessian_spectrum-quick --parallel 2
  python -m analysis.report runs/hessian_spectrum-quick
  python -m experiments.sweep --config experiments/configs/hessian_spectrum.py:paper \
      --workdir runs/hessian_spectrum

Sweep (`get_sweep`): (a) phase (init, trained) x norm (batch, none); (b) trained, norm none, on the
first 2 and 5 classes (`data.options.classes`; the 10-class run is shared with (a)). The "init" trials
make one step at learning rate 0, so the parameters they measure are exactly the initial ones. Every
measurement uses BatchNorm in batch mode (statistics of the 512 probe images), so that networks at
initialization, whose running statistics are not yet estimated, and trained ones are measured alike.
Each measurement writes `curvature/step<S>_hessian_train.json/.npz` with the SLQ nodes and weights, the
top eigenvalues and the outlier count (`curv/num_outliers` in metrics.jsonl: Ritz values above the first
wide gap over the SLQ bulk, `research.curvature.density.outliers`; with one probe that rule is crude, so
compare it with where the top-12 eigenvalues leave the bulk).

Variants:
- `quick`: `simple_cnn` at half width (conv blocks of 16 and 32 channels, dense 128) on 4,096
  Fashion-MNIST training images, heavy-ball momentum 0.9 at lr 0.05, 400 steps of 128 (12.5 epochs), 1
  seed: 6 trials; the top 12 eigenvalues and a spectral density (60 Lanczos steps, 1 probe) at the end, on
  512 fixed training images. Measured: 5 min 29 s for the sweep and its report with `--parallel 2` on 2
  quiet CPU cores (2026-11-22, load average 2-7 from the study's own processes, cold compilation cache;
  6 trials of 78-118 s).
- `paper`: Ghorbani et al.'s network: ResNet-32 with and without BatchNorm on CIFAR-10; our recipe:
  momentum 0.9, lr 0.05 with cosine decay, weight decay 5e-4, 100 epochs, crop and flip; class subsets of
  CIFAR-10 for the outlier count; the Hessian on 5,000 training images (Ghorbani et al. use all 50,000),
  density with 5 probes of 90 Lanczos steps. For a GPU; CIFAR-10 needs TFDS's download.
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
INIT = {"schedule.lr": 0.0, "training.num_steps": 1, "training.num_epochs": 0}
CLASS_SUBSETS = ((0, 1), (0, 1, 2, 3, 4))


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "hessian_spectrum"
  c.model.knobs.norm = "batch"
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.curvature.at_end = True
  c.curvature.bn_mode = "batch"
  c.curvature.k = 12
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 4096
    c.data.options.valid_size = 1000
    c.data.options.eval_train_size = 1000
    c.model.name = "simple_cnn"
    c.model.knobs.width = 0.5
    c.schedule.name = "constant"
    c.schedule.lr = 0.05
    c.training.batch_size = 128
    c.training.num_epochs = 0
    c.training.num_steps = 400
    c.eval.every_epochs = 0
    c.eval.every_steps = 100
    c.log_every = 25
    c.curvature.every_steps = 400  # the end only: this study compares spectra, not trajectories
    c.curvature.num_examples = 512
    c.curvature.chunk_size = 512
    c.curvature.density_every = 400
    c.curvature.density_probes = 1
    c.curvature.density_steps = 60
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 5000
    c.data.augment.crop_padding = 4
    c.data.augment.flip = True
    c.model.name = "resnet32"
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "cosine"
    c.schedule.lr = 0.05
    c.training.batch_size = 128
    c.training.num_epochs = 100
    c.eval.every_epochs = 5
    c.log_every = 100
    c.curvature.every_steps = 10 * 351  # every 10 epochs of 45,000 / 128
    c.curvature.num_examples = 5000
    c.curvature.chunk_size = 5000  # batch mode: one chunk, the statistics of all 5,000 probe images
    c.curvature.density_every = 50 * 351
    c.curvature.density_probes = 5
    c.curvature.density_steps = 90
  return c


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """(a) phase x norm, (b) class subsets (trained, no normalization); one seed."""
  get_config(arg)
  phases = [dict(INIT), {}]  # init: one step at lr 0; trained: the config as it is
  norms = sweeps.grid({"model.knobs.norm": ["batch", "none"]})
  subsets = sweeps.grid({"model.knobs.norm": ["none"], "data.options.classes": list(CLASS_SUBSETS)})
  return sweeps.concat(sweeps.product(phases, norms), subsets)
