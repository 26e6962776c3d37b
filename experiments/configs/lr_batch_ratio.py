"""Learning rate over batch size: does the ratio eta / B set how sharp the minimum SGD finds is?

Question: plain SGD on a grid of learning rates eta x batch sizes B at a fixed epoch budget, so that
the diagonals of the grid share the same ratio eta / B: the final lambda_max against eta / B (one curve,
if the ratio is what matters) and against the stability bound 2 / eta (a step of size eta on a
quadratic diverges along directions of curvature above 2 / eta), with test accuracy and the gap.

Published result it probes: Jastrzebski, Kenton, Arpit, Ballas, Fischer, Bengio & Storkey 2017 ("Three
Factors Influencing Minima in SGD", arXiv:1711.04623; ICANN 2018): SGD behaves like a stochastic
differential equation whose noise scale is set by eta / B; a higher ratio leads to wider (flatter)
minima with better generalization, and runs with the same ratio reach minima of similar sharpness
(Sec. 3: the SDE whose noise scale is eta / B; Sec. 4: experiments on the ratio).

Criteria (`get_criteria`; Kendall's tau over the finished runs,
judged by its two-sided p-value at 0.05 / 2, Bonferroni):
- `sharpness_falls_with_ratio`: the final lambda_max falls as eta / B grows (tau < 0);
- `accuracy_rises_with_ratio`: the final test accuracy rises with eta / B (tau > 0).
eta / B is not a config key: the report derives it per run (`lrb/eta_over_b`, analysis/studies/
lr_batch_ratio.py). That runs sharing a ratio share their sharpness (exponents of eta and B summing to 0 in
a log-log fit) is reported as a finding, not a criterion: one fit over 9 runs has no per-run quantity.
lambda_max is the Hessian of the loss SGD descends (`curvature.bn_mode = "batch"`: BatchNorm, where the
network has it, with batch statistics over ghost batches of the run's own batch size).

Commands:
  python -m experiments.sweep --config experiments/configs/lr_batch_ratio.py:quick \
      --workdir runs/lr_batch_ratio-quick --parallel 2
  python -m analysis.report runs/lr_batch_ratio-quick
  python -m experiments.sweep --config experiments/configs/lr_batch_ratio.py:paper \
      --workdir runs/lr_batch_ratio

Sweep (`get_sweep`): learning rate x batch size (each learning rate doubling with each batch doubling
keeps eta / B, so the grid has 5 distinct ratios on its diagonals), one seed; the curvature schedule is
and the ghost-batch size are zipped with the batch size, so that lambda_max is measured at the same
epochs (20 measurements over training and one at initialization) for every batch size.

Variants:
- `quick`: `simple_cnn` (conv blocks of 32 and 64 channels, dense 128) on 4,096 Fashion-MNIST training
  images, SGD without momentum at a constant lr of 0.025, 0.05 or 0.1 and batch 32, 64 or 128, 10 epochs:
  9 trials; lambda_max on 512 fixed training images every epoch. Measured with lambda_max every 5 epochs: 6
  min 8 s for the sweep and its report with `--parallel 2` on 2 quiet CPU cores (2026-11-22). With
  lambda_max every half epoch (run at 018e590, 2026-12-03, nothing else running): verdicts as in the run at
  a14fa55 (both hold), 11 min 43 s (1,310 CPU-seconds; trials of 140-173 s, of which the 21 lambda_max
  measurements about 118 s), over the 10-minute budget; so lambda_max is now measured every epoch (11
  points). No criterion reads the curve (both judge final values); training is unchanged.
  Run at c2799bf (2026-12-03, nothing else running): the same verdicts and numbers, 7 min 51 s with
  `--parallel 2` (807 CPU-seconds).
- `paper`: CIFAR-10 with ResNet-32 (one of Jastrzebski et al.'s networks), plain SGD at a constant lr of
  0.025, 0.05 or 0.1 and batch 64, 128 or 256, 200 epochs, no augmentation (our recipe, not a copy of
  theirs); the Hessian on 5,120 training images every 10 epochs (BatchNorm with batch statistics over
  ghost batches of the run's batch size). For a GPU; CIFAR-10 needs TFDS's download.

Expected cost of `paper`: 9 trials of 0.43 GPU-hours each, 3.9 GPU-hours for the sweep (110 PFLOP), an
estimate from XLA's FLOP counts at 40% of the A100's float32 peak of 19.5 TFLOP/s, printed by
  python -m experiments.dry_run --config experiments/configs/lr_batch_ratio.py:paper
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
LRS = (0.025, 0.05, 0.1)
BATCH_SIZES = {"quick": (32, 64, 128), "paper": (64, 128, 256)}
NUM_TRAIN = {"quick": 4096, "paper": 45000}
EPOCHS = {"quick": 10, "paper": 200}
CURVATURE_EVERY_EPOCHS = {"quick": 1.0, "paper": 10}  # 10 (quick) and 20 (paper) measurements after step 0
EVAL_EVERY_EPOCHS = {"quick": 2, "paper": 10}
PROBES = {"quick": 512, "paper": 5120}  # a multiple of every batch size (ghost batches)


def _curvature_every(arg: str, batch_size: int) -> int:
  return round(CURVATURE_EVERY_EPOCHS[arg] * (NUM_TRAIN[arg] // batch_size))  # steps per epoch: n // B


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "lr_batch_ratio"
  c.optimizer.name = "sgd"
  c.schedule.name = "constant"
  c.schedule.lr = LRS[1]
  c.training.batch_size = BATCH_SIZES[arg][1]
  c.training.num_steps = 0
  c.training.num_epochs = EPOCHS[arg]
  c.eval.every_steps = 0
  c.eval.every_epochs = EVAL_EVERY_EPOCHS[arg]
  c.curvature.every_steps = _curvature_every(arg, c.training.batch_size)
  c.curvature.at_end = True
  # the Hessian of the loss SGD descends: batch statistics over ghost batches of the training batch size
  c.curvature.bn_mode = "batch"
  c.curvature.chunk_size = c.training.batch_size
  c.curvature.num_examples = PROBES[arg]
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = NUM_TRAIN[arg]
    c.data.options.valid_size = 1000
    c.data.options.eval_train_size = 1000
    c.model.name = "simple_cnn"
    c.log_every = 25
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 5000
    c.model.name = "resnet32"
    c.log_every = 100
    c.curvature.trace_probes = 50
  return c


def get_criteria(arg: str | None = "quick") -> list[dict]:
  """Jastrzebski et al.'s claims as rank correlations with eta / B over the runs (`lrb/eta_over_b`, derived
  by the report for every finished run)."""
  get_config(arg)
  source = "Jastrzebski et al. 2017 (arXiv:1711.04623; ICANN 2018), Sec. 4"
  return [
      {"id": "sharpness_falls_with_ratio", "claim": "A higher eta / B leads to a flatter minimum: the final "
       "lambda_max falls as eta / B grows", "source": source, "quantity": "curv/lambda_max",
       "compare": "kendall", "by": "lrb/eta_over_b", "expected": "<"},
      {"id": "accuracy_rises_with_ratio", "claim": "A higher eta / B generalizes better: the final test "
       "accuracy rises with eta / B", "source": source, "quantity": "test/accuracy", "compare": "kendall",
       "by": "lrb/eta_over_b", "expected": ">"},
  ]


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """learning rate x (batch size with its curvature schedule and ghost batch), one seed."""
  get_config(arg)
  arg = arg or "quick"
  sizes = list(BATCH_SIZES[arg])
  batches = sweeps.zipped({"training.batch_size": sizes,
                           "curvature.every_steps": [_curvature_every(arg, b) for b in sizes],
                           "curvature.chunk_size": sizes})
  return sweeps.product(sweeps.grid({"schedule.lr": list(LRS)}), batches)
