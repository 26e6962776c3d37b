"""Depth against width: at a fixed parameter count, is it better to be deep and narrow or shallow and
wide, and which finds the flatter minimum?

Question: networks of several depths whose widths are chosen so that all have about the same number of
parameters (within 0.4% for the quick MLPs, 4% for the paper ResNets), trained alike: test accuracy,
generalization gap and sharpness (lambda_max tracked during training, trace at the end).

Published results it probes: Zagoruyko & Komodakis 2016 ("Wide Residual Networks", BMVC,
arXiv:1605.07146, Sec. 3): at a similar parameter count, wider and shallower residual networks match or
beat thin very deep ones (and train faster). Li, Xu, Taylor, Studer & Goldstein 2018 ("Visualizing the
Loss Landscape of Neural Nets", NeurIPS, arXiv:1712.09913, Sec. 6, Fig. 6): wider networks have flatter,
more convex landscapes around their minima, while depth without skip connections makes them chaotic. At
a matched parameter count the deeper network is the narrower one, so both predict: the shallow wide
network at least as accurate and flatter than the deep narrow one.

Pre-registered criteria (`get_criteria`, recorded in sweep.json before the first trial; the shallowest
shape against the deepest, Welch intervals over seeds):
- `shallow_wide_accuracy`: test accuracy of the shallowest, widest network minus that of the deepest,
  narrowest above -1 point ("match or beat", Zagoruyko & Komodakis).
- `deep_narrow_sharper`: lambda_max at the end larger for the deepest, narrowest network (ratio > 1).

Commands:
  python -m experiments.sweep --config experiments/configs/depth_width.py:quick \
      --workdir runs/depth_width-quick --parallel 2
  python -m analysis.report runs/depth_width-quick
  python -m experiments.sweep --config experiments/configs/depth_width.py:paper --workdir runs/depth_width

Sweep (`get_sweep`): (depth, width) pairs at a matched parameter count x seed. The widths are computed
here from closed-form parameter counts (`mlp_params`, `resnet_params`), checked against the built models
in tests/test_studies.py:
- `quick`: ReLU MLPs on 28x28x1 inputs at 200,000 parameters (within 0.4%): depth 1 x width 252 (200,350
  parameters), depth 2 x 201 (200,407), depth 4 x 157 (199,243), depth 8 x 121 (199,539).
- `paper`: CIFAR ResNets (BatchNorm, option-A shortcuts) at the 853,018 parameters of ResNet-56 (within
  4%; widths are multiples of 1/16): ResNet-20 x width 1.8125 (882,451), ResNet-32 x 1.375 (875,808),
  ResNet-56 x 1.0 (853,018), ResNet-110 x 0.6875 (818,707).

Variants:
- `quick`: the MLPs above on 4,096 Fashion-MNIST training images, heavy-ball momentum 0.9 at lr 0.02,
  2,000 steps of 128 (62.5 epochs), 6 seeds: 24 trials; lambda_max every 200 steps (11 points) and trace
  (8 probes) at the start and the end on 512 fixed training images (no normalization layers: the
  Hessian's BatchNorm mode does not apply).
  Design history: the 2-seed design (lambda_max every 100 steps; run at a14fa55 on 2026-12-03 under
  load: 8 trials of 45-77 s, 21-38 s of each in the 21 curvature measurements) left both criteria
  inconclusive: depth 1 minus depth 8 test accuracy +0.63 points with a 97.5% Welch interval of -7.0 to
  +8.3 points, lambda_max depth 8 / depth 1 2.83x with 0.80 to 10x (2 vs 2 seeds). Changed: 6 seeds
  (from 2), paid for by lambda_max every 200 steps (from 100), which served only the figure. The
  criteria are unchanged.
  Measured (git f6f6e51, 2026-12-03, `nice -n 10`, `--parallel 2` on 2 CPU cores shared with 3-4 other
  sweeps, load average 21-30): 48 min 50 s for the sweep (24 trials of 86-262 s wall), 612 CPU-seconds
  (`/usr/bin/time`: 559 s user, 53 s system), i.e. about 5 minutes on 2 quiet cores (re-run at 98e9e1c
  with nothing else running: 5 min 10 s, 549 CPU-seconds, the same numbers). Both criteria hold:
  depth 1 minus depth 8 test accuracy +1.37 points (97.5% Welch interval -0.04 to +2.77 points, above
  -1), lambda_max depth 8 / depth 1 4.04x (2.53 to 6.45x), 6 vs 6 seeds. Depth 8 ended short of fitting
  the training set (training-subset accuracy 98.88%, loss 0.036 nats, against 100% and 0.007 for depth
  1), and depth 4 split into 3 seeds at lambda_max ~1 and 3 at 14-30: lambda_max is not monotone in
  depth (Kendall's tau 0.25, p = 0.12).
- `paper`: the ResNets above on CIFAR-10 with Zagoruyko & Komodakis's recipe: Nesterov momentum 0.9,
  lr 0.1 divided by 5 at 30%, 60% and 80% of 200 epochs, weight decay 5e-4, batch 128, crop and flip,
  3 seeds; the Hessian of the loss training descends (BatchNorm with the statistics of fixed ghost
  batches of 128, the training batch size) on 5,120 training images every 10 epochs. For a GPU;
  CIFAR-10 needs TFDS's download.

Expected cost of `paper`: 12 trials of 0.45-0.5 GPU-hours each, 5.7 GPU-hours for the sweep (161 PFLOP), an
estimate from XLA's FLOP counts at 40% of the A100's float32 peak of 19.5 TFLOP/s, printed by
  python -m experiments.dry_run --config experiments/configs/depth_width.py:paper
"""

import math

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
MLP_DEPTHS = (1, 2, 4, 8)
MLP_TARGET = 200_000
MLP_INPUT = 28 * 28 * 1
RESNET_DEPTHS = (20, 32, 56, 110)
RESNET_REFERENCE = (56, 1.0)  # the target count: ResNet-56 at width 1
NUM_CLASSES = 10
CURVATURE_POINTS = 10  # quick: lambda_max every 1/10 of training (and at initialization)
QUICK_SEEDS = 6
MATCH = 0.01  # "match or beat": the shallow network at most 1 point below the deep one


def mlp_params(depth: int, width: int, inputs: int = MLP_INPUT, classes: int = NUM_CLASSES) -> int:
  """Parameters of `research.models` "mlp" without normalization: (inputs + 1) w + (depth - 1)(w + 1) w
  + (w + 1) classes."""
  return (inputs + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * classes


def mlp_width(depth: int, target: int = MLP_TARGET) -> int:
  """The integer width whose parameter count is closest to `target` (the root of the quadratic above,
  then its integer neighbours)."""
  a, b = depth - 1, MLP_INPUT + 1 + (depth - 1) + NUM_CLASSES
  rest = target - NUM_CLASSES  # a w^2 + b w = rest
  root = rest / b if a == 0 else (-b + math.sqrt(b * b + 4 * a * rest)) / (2 * a)
  return min((max(1, math.floor(root) + d) for d in (0, 1)), key=lambda w: abs(mlp_params(depth, w) - target))


def resnet_params(depth: int, width: float, in_channels: int = 3, classes: int = NUM_CLASSES) -> int:
  """Parameters of `research.models` "resnet<depth>" (BatchNorm, option-A shortcuts, convolutions without
  bias): a 3x3 stem to round(16 w) channels, three stages of (depth - 2) / 6 blocks of two 3x3
  convolutions to round(16 w), round(32 w), round(64 w) channels, 2 BatchNorm parameters per channel after
  every convolution, a linear head."""
  n = (depth - 2) // 6
  stem = round(16 * width)
  total = 9 * in_channels * stem + 2 * stem
  in_ch = stem
  for base in (16, 32, 64):
    out = round(base * width)
    for _ in range(n):
      total += 9 * in_ch * out + 9 * out * out + 4 * out
      in_ch = out
  return total + in_ch * classes + classes


def resnet_width(depth: int, target: int, step: float = 1 / 16) -> float:
  """The width multiple of `step` (whole channel counts) whose parameter count is closest to `target`."""
  return min((k * step for k in range(1, 129)), key=lambda w: abs(resnet_params(depth, w) - target))


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "depth_width"
  c.curvature.at_end = True
  c.curvature.bn_mode = "batch"  # ghost batches of curvature.chunk_size (the ResNets have BatchNorm)
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 4096
    c.data.options.valid_size = 1000
    c.data.options.eval_train_size = 1000
    c.model.name = "mlp"
    c.model.knobs.depth = MLP_DEPTHS[1]
    c.model.knobs.width = mlp_width(MLP_DEPTHS[1])
    c.optimizer.name = "momentum"
    c.schedule.name = "constant"
    c.schedule.lr = 0.02
    c.training.batch_size = 128
    c.training.num_epochs = 0
    c.training.num_steps = 2000
    c.eval.every_epochs = 0
    c.eval.every_steps = 500
    c.log_every = 50
    c.curvature.every_steps = c.training.num_steps // CURVATURE_POINTS
    c.curvature.num_examples = 512
    c.curvature.chunk_size = 512  # no normalization layers: one chunk
    c.curvature.trace_probes = 8
    c.curvature.trace_every = c.training.num_steps  # the trace at initialization and at the end
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 5000
    c.data.augment.crop_padding = 4
    c.data.augment.flip = True
    c.model.name = f"resnet{RESNET_REFERENCE[0]}"
    c.model.knobs.width = RESNET_REFERENCE[1]
    c.optimizer.name = "nesterov"
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "step"
    c.schedule.lr = 0.1
    c.schedule.boundaries = (0.3, 0.6, 0.8)
    c.schedule.decay_factor = 0.2
    c.training.batch_size = 128
    c.training.num_epochs = 200
    c.eval.every_epochs = 10
    c.log_every = 100
    c.curvature.every_steps = 10 * 351  # every 10 epochs of 45,000 / 128: 21 points
    c.curvature.num_examples = 5120
    c.curvature.chunk_size = c.training.batch_size
    c.curvature.trace_probes = 50
    c.curvature.trace_every = 200 * 351  # at initialization and at the end
  return c


def shapes(arg: str | None = "quick") -> list[tuple[dict, int]]:
  """({config key: value} naming the shape, depth) from shallowest to deepest."""
  if (arg or "quick") == "quick":
    return [({"model.knobs.depth": d}, d) for d in MLP_DEPTHS]
  return [({"model.name": f"resnet{d}"}, d) for d in RESNET_DEPTHS]


def get_criteria(arg: str | None = "quick") -> list[dict]:
  """The published claims as criteria registered before the runs: shallowest, widest (a) against deepest,
  narrowest (b) for accuracy; deepest against shallowest for lambda_max; Kendall's tau over all runs."""
  get_config(arg)
  (shallow, d0), (deep, d1) = shapes(arg)[0], shapes(arg)[-1]
  return [
      {"id": "shallow_wide_accuracy",
       "claim": f"At a matched parameter count the depth-{d0} (widest) network is at least as accurate "
       f"as the depth-{d1} (narrowest) one: at most {100 * MATCH:g} point below",
       "source": "Zagoruyko & Komodakis 2016 (BMVC, arXiv:1605.07146), Sec. 3", "quantity": "test/accuracy",
       "compare": "difference", "expected": ">", "threshold": -MATCH, "a": shallow, "b": deep},
      {"id": "deep_narrow_sharper", "claim": f"The depth-{d1} (narrowest) network ends with a larger top "
       f"Hessian eigenvalue than the depth-{d0} (widest) one", "source": "Li et al. 2018 (NeurIPS, "
       "arXiv:1712.09913), Sec. 6, Fig. 6 (wider: flatter)", "quantity": "curv/lambda_max",
       "compare": "ratio", "expected": ">", "a": deep, "b": shallow},
  ]


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """(depth, width) at a matched parameter count x seed (QUICK_SEEDS for quick, 3 for paper)."""
  get_config(arg)
  if (arg or "quick") == "quick":
    shapes = sweeps.zipped({"model.knobs.depth": list(MLP_DEPTHS),
                            "model.knobs.width": [mlp_width(d) for d in MLP_DEPTHS]})
    return sweeps.product(shapes, sweeps.seeds(QUICK_SEEDS))
  target = resnet_params(*RESNET_REFERENCE)
  shapes = sweeps.zipped({"model.name": [f"resnet{d}" for d in RESNET_DEPTHS],
                          "model.knobs.width": [resnet_width(d, target) for d in RESNET_DEPTHS]})
  return sweeps.product(shapes, sweeps.seeds(3))
