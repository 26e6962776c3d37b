"""Generalization measures: over a population of networks trained with different hyperparameters, which
sharpness, norm and margin measures rank the networks by their generalization gap?

Question: a full grid over training hyperparameters (learning rate, batch size, width, dropout; the paper
variant adds depth and weight decay), each network trained for the same number of epochs; at the end
every measure of research.measures is computed (worst-case and average sharpness, plain and adaptive;
Keskar's epsilon-sharpness; PAC-Bayes sigma, plain and magnitude-aware, with Jiang et al.'s bound terms;
output margin; Frobenius / spectral norm products, distance from init; path norm; Fisher-Rao norm;
lambda_max and the Hessian trace; parameter count) and ranked by Kendall's tau with the generalization gap
over all runs, and by the granulated Kendall coefficient Psi (the mean over hyperparameter axes of the
tau among runs that differ only in that axis), which discounts correlations that come from one
hyperparameter moving both the measure and the gap.

Published results it probes: Jiang, Neyshabur, Mobahi, Krishnan & Bengio 2020 ("Fantastic generalization
measures and where to find them", ICLR, arXiv:1912.02178): over 10,000 convolutional networks on CIFAR-10
and SVHN, PAC-Bayes flatness / sharpness measures (especially magnitude-aware ones) had the highest
granulated Kendall coefficients, while norm-based measures (products of spectral or Frobenius norms)
correlated poorly or negatively with the gap. Andriushchenko, Croce, Mueller, Hein & Flammarion 2023 ("A
modern look at the relationship between sharpness and generalization", ICML, arXiv:2302.07011): in
modern settings (transformers, fine-tuning, training from scratch with augmentation) even adaptive
worst-case sharpness does not correlate consistently with generalization; the sign and size of the
correlation depend on the setting.

Pre-registered criteria (`get_criteria`, recorded in sweep.json before the runs): Kendall's tau over all
runs between a measure (in Jiang et al.'s complexity orientation) and the accuracy gap `gap/accuracy`
(`by` names that column of the runs table), judged by its two-sided p-value at 0.05 / 3 (Bonferroni).
The granulated
coefficient Psi is reported beside it (it has no interval: each psi averages groups of two runs).
- `pacbayes_mag_flatness`, `pacbayes_flatness`: tau > 0 for the magnitude-aware and plain PAC-Bayes
  flatness 1/sigma'^2 and 1/sigma^2 (Jiang et al.: the sharpness-based measures that correlate best).
- `adaptive_sharpness_no_correlation`: the 95% interval of tau (Fisher z) inside +-0.3 for adaptive
  worst-case sharpness (Andriushchenko et al.: no consistent correlation). With 16 runs that interval is
  about +-0.36 wide, so the quick variant can at best be inconclusive; the paper grid can decide.

Commands:
  python -m experiments.sweep --config experiments/configs/generalization_measures.py:quick \
      --workdir runs/generalization_measures-quick --parallel 2
  python -m analysis.report runs/generalization_measures-quick
  python -m experiments.sweep --config experiments/configs/generalization_measures.py:paper \
      --workdir runs/generalization_measures

Sweep (`get_sweep`): the full grid below (every pair of runs that differs in one axis only exists, as the
granulated coefficient needs); one seed per grid point (the seed is not an axis, as in Jiang et al.).

Variants:
- `quick`: `mlp` (ReLU, 2 hidden layers) on 2,048 Fashion-MNIST training images, heavy-ball momentum 0.9,
  15 epochs, grid lr {0.01, 0.05} x batch size {32, 128} x width {64, 256} x dropout {0, 0.3}: 16 trials;
  every measure on 512 fixed training images; the gaps on a fixed 1,000-image training subset and the
  10,000 test images. Measured: 3 min 39 s for the sweep and its report with `--parallel 2` on 2 quiet
  CPU cores (2026-11-22, load average 2-7 from the study's own processes, cold compilation cache; 16
  trials of 20-38 s).
  Run at ec7f995 (2026-12-03, nothing else running; the inverse margin is now undefined where the
  10th-percentile margin is not positive, 6 of the 16 networks): 2 min 15 s for the sweep (249 CPU-seconds);
  the 3 criteria inconclusive, as before (tau = +0.13 with p = 0.49, +0.37 with p = 0.047 against alpha =
  0.017, and an interval -0.49 to +0.36 for the no-correlation band +-0.3).
- `paper`: closer to Jiang et al.'s design (our recipe, a fraction of their 10,000 networks): `simple_cnn`
  on CIFAR-10, lr {0.01, 0.03, 0.1} x batch {32, 128, 512} x width {0.5, 1, 2} x blocks {2, 3} x weight
  decay {0, 5e-4} x dropout {0, 0.3}: 216 runs, each trained until the training cross-entropy is below
  0.01 in the paper (here: a fixed 60 epochs), measures on 5,000 training images. For a GPU.

Expected cost of `paper`: 216 trials of 0.0025-0.058 GPU-hours each, 4.4 GPU-hours for the sweep (122 PFLOP),
an estimate from XLA's FLOP counts at 40% of the A100's float32 peak of 19.5 TFLOP/s, printed by
  python -m experiments.dry_run --config experiments/configs/generalization_measures.py:paper
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
MEASURES = ("worst_case,worst_case_adaptive,average,average_adaptive,epsilon,pac_bayes,pac_bayes_magnitude,"
            "margin,norms,path_norm,fisher_rao,lambda_max,hessian_trace,num_params")
QUICK_GRID = {"schedule.lr": [0.01, 0.05], "training.batch_size": [32, 128], "model.knobs.width": [64, 256],
              "model.knobs.dropout": [0.0, 0.3]}
PAPER_GRID = {"schedule.lr": [0.01, 0.03, 0.1], "training.batch_size": [32, 128, 512],
              "model.knobs.width": [0.5, 1.0, 2.0], "model.knobs.blocks": [2, 3],
              "optimizer.weight_decay": [0.0, 5e-4], "model.knobs.dropout": [0.0, 0.3]}


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "generalization_measures"
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.schedule.name = "constant"
  c.progress = "lines"
  m = c.measures
  m.at_end = True
  m.names = MEASURES
  m.split = "train"
  m.bn_mode = "eval"
  m.steps = 10
  m.pac_bayes_samples = 5
  m.pac_bayes_depth = 10
  m.trace_probes = 10
  m.lambda_max_tol = 1e-3
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 2048
    c.data.options.valid_size = 0
    c.data.options.eval_train_size = 1000
    c.eval.splits = ("eval_train", "test")
    c.model.name = "mlp"
    c.model.knobs.depth = 2
    c.model.knobs.width = 256
    c.model.knobs.dropout = 0.0
    c.schedule.lr = 0.05
    c.training.batch_size = 128
    c.training.num_epochs = 15
    c.eval.every_epochs = 5
    c.log_every = 100
    m.num_examples = 512
    m.chunk_size = 512
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 0
    c.data.options.eval_train_size = 10000
    c.eval.splits = ("eval_train", "test")
    c.model.name = "simple_cnn"
    c.model.knobs.width = 1.0
    c.model.knobs.blocks = 2
    c.model.knobs.dropout = 0.0
    c.schedule.lr = 0.03
    c.training.batch_size = 128
    c.training.num_epochs = 60
    c.eval.every_epochs = 10
    m.num_examples = 5000
    m.chunk_size = 500
    m.steps = 20
    m.pac_bayes_samples = 10
    m.pac_bayes_depth = 15
    m.trace_probes = 30
  return c


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """The full grid of the variant (16 trials for quick, 216 for paper)."""
  arg = arg or "quick"
  get_config(arg)
  return sweeps.grid(QUICK_GRID if arg == "quick" else PAPER_GRID)


AXES = {"quick": tuple(QUICK_GRID), "paper": tuple(PAPER_GRID)}


def get_criteria(arg: str | None = "quick") -> list[dict]:
  """The published claims as criteria registered before the runs (Kendall's tau with `gap/accuracy`)."""
  get_config(arg)
  jiang = "Jiang et al. 2020 (ICLR, arXiv:1912.02178), results on sharpness-based measures"
  common = {"compare": "kendall", "by": "gap/accuracy"}
  return [
      {"id": "pacbayes_mag_flatness", "claim": "Magnitude-aware PAC-Bayes flatness (1/sigma'^2) ranks the "
       "networks by their generalization gap (positive Kendall tau)", "source": jiang,
       "quantity": "sharp/pacbayes_mag_flatness", "expected": ">"} | common,
      {"id": "pacbayes_flatness", "claim": "PAC-Bayes flatness (1/sigma^2) ranks the networks by their "
       "generalization gap (positive Kendall tau)", "source": jiang, "quantity": "sharp/pacbayes_flatness",
       "expected": ">"} | common,
      {"id": "adaptive_sharpness_no_correlation", "claim": "Adaptive worst-case sharpness does not correlate "
       "with the generalization gap (the 95% interval of tau inside +-0.3)",
       "source": "Andriushchenko et al. 2023 (ICML, arXiv:2302.07011)",
       "quantity": "sharp/worst_case_adaptive_l2", "expected": "=", "threshold": 0.0, "margin": 0.3} | common,
  ]
