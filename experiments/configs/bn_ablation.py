"""BatchNorm ablation: what does BatchNorm do to the curvature of what training finds?

Question: a baseline CNN with BatchNorm, the same CNN without normalization and with LayerNorm, several
seeds each: validation accuracy, generalization gap, the Hessian of the loss training descends along
training, and the smoothness of the loss along the training trajectory.

Published results it probes (as pre-registered criteria, `get_criteria`): Santurkar et al. 2018 ("How
Does Batch Normalization Help Optimization?", NeurIPS, arXiv:1805.11604): BatchNorm makes the loss
smoother along the trajectory: the loss varies less along the gradient step, the gradient changes less,
the effective beta-smoothness is lower (their Fig. 4), and the top Hessian eigenvalue is lower (also
Ghorbani et al. 2019, ICML, arXiv:1901.10159); BatchNorm raises test accuracy (Ioffe & Szegedy 2015).
Ghorbani et al.'s outliers of the spectrum (about one per class) need the top 2C eigenvalues: the
`hessian_spectrum` study measures them, not this one.

Commands (the sweep is norm x seed; `make study` runs the quick variant and writes the report):
  python -m experiments.sweep --config experiments/configs/bn_ablation.py:quick \
      --workdir runs/bn_ablation-quick --parallel 2
  python -m analysis.report runs/bn_ablation-quick
  python -m experiments.sweep --config experiments/configs/bn_ablation.py:paper --workdir runs/bn_ablation

Variants:
- `quick`: `simple_cnn` (conv blocks of 32 and 64 channels, dense 128) on 4,096 Fashion-MNIST training
  images, 400 SGD-momentum steps of 128 (12.5 epochs), 3 norms x 3 seeds. Every 20 steps (and at
  initialization): the Hessian of the loss training descends on the first 256 training images (BatchNorm
  with batch statistics over 2 fixed ghost batches of 128, the training batch size): lambda_max and the
  gradient's share along its eigenvector; Santurkar et al.'s trajectory smoothness on
  the first 512 (loss variation, gradient change and effective beta-smoothness along the gradient step).
  At initialization and at the end: the trace (16 probes) and a spectral density (1 probe, 40 Lanczos
  steps: coarse, see its resolution).
- `paper`: VGG-11 on CIFAR-10 (Santurkar et al.'s setting), 100 epochs, cosine, weight decay 5e-4,
  crop and flip; 3 seeds; the Hessian on 5,120 training images (40 ghost batches of 128). For a GPU;
  CIFAR-10 needs TFDS's download (and TensorFlow to prepare it).
"""

from research import sweeps
from research.training import default_config

NORMS = ("batch", "none", "layer")
VARIANTS = ("quick", "paper")


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "bn_ablation"
  c.model.knobs.norm = "batch"
  c.optimizer.name = "momentum"
  c.schedule.name = "constant"
  c.schedule.lr = 0.05
  # the Hessian of the loss training descends: batch statistics over fixed ghost batches of the training
  # batch size (running statistics would be another function of the parameters)
  c.curvature.bn_mode = "batch"
  c.curvature.at_end = True
  c.curvature.gradient = True  # the gradient's share along the top eigenvector
  c.smoothness.bn_mode = "batch"
  c.smoothness.at_end = True
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 4096
    c.data.options.valid_size = 1000
    c.data.options.eval_train_size = 1000
    c.model.name = "simple_cnn"
    c.training.batch_size = 128
    c.training.num_epochs = 0
    c.training.num_steps = 400
    c.eval.every_epochs = 0
    c.eval.every_steps = 100
    c.log_every = 25
    c.curvature.every_steps = 20  # 21 points of the lambda_max curve
    c.curvature.num_examples = 256
    c.curvature.chunk_size = 128  # the ghost batch: the training batch size
    c.smoothness.every_steps = 20
    c.smoothness.num_examples = 512
    c.smoothness.chunk_size = 128
    c.curvature.trace_probes = 16
    c.curvature.trace_every = 400  # the trace at the end only: 16 products per measurement otherwise
    c.curvature.density_every = 400
    c.curvature.density_probes = 1
    c.curvature.density_steps = 40
    c.curvature.save_every = 400
    c.progress = "lines"
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 5000
    c.data.augment.crop_padding = 4
    c.data.augment.flip = True
    c.model.name = "vgg11"
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "cosine"
    c.training.batch_size = 128
    c.training.num_epochs = 100
    c.eval.every_epochs = 5
    c.curvature.every_steps = 5 * 352  # every 5 epochs of 45,000 / 128
    c.curvature.num_examples = 5120
    c.curvature.chunk_size = 128
    c.smoothness.every_steps = 352
    c.smoothness.num_examples = 5120
    c.smoothness.chunk_size = 128
    c.curvature.trace_probes = 50
    c.curvature.density_every = 100 * 352
    c.curvature.density_probes = 20  # tens of probes and 90 steps: Ghorbani et al. 2019 resolution
    c.curvature.density_steps = 90
    c.curvature.save_every = 20 * 352
  return c


_PAIR = {"a": {"model.knobs.norm": "none"}, "b": {"model.knobs.norm": "batch"}}


def get_criteria(arg: str | None = "quick") -> list[dict]:
  """The published claims, as testable criteria registered before the runs (ratios without / with
  BatchNorm, Welch intervals on the logs over seeds; `@mean`: mean over the measurements after step 0)."""
  santurkar = "Santurkar et al. 2018 (NeurIPS, arXiv:1805.11604)"
  return [
      {"id": "loss_variation", "claim": "Without BatchNorm the loss varies more along the gradient step",
       "source": f"{santurkar}, Fig. 4(a)", "quantity": "smooth/loss_range@mean", "compare": "ratio",
       "expected": ">"} | _PAIR,
      {"id": "gradient_predictiveness", "claim": "Without BatchNorm the gradient changes more along the step",
       "source": f"{santurkar}, Fig. 4(b)", "quantity": "smooth/grad_change@mean", "compare": "ratio",
       "expected": ">"} | _PAIR,
      {"id": "beta_smoothness", "claim": "Without BatchNorm the effective beta-smoothness is higher",
       "source": f"{santurkar}, Fig. 4(c)", "quantity": "smooth/beta@mean", "compare": "ratio",
       "expected": ">"} | _PAIR,
      {"id": "lambda_max", "claim": "Without BatchNorm the Hessian's top eigenvalue along training is higher "
       "(batch-statistics Hessian)", "source": f"{santurkar}, Sec. 3.2",
       "quantity": "curv/lambda_max@mean", "compare": "ratio", "expected": ">"} | _PAIR,
      {"id": "test_accuracy", "claim": "BatchNorm raises test accuracy (points, batch - none)",
       "source": "Ioffe & Szegedy 2015 (ICML); Santurkar et al. 2018, Fig. 1", "quantity": "test/accuracy",
       "compare": "difference", "expected": ">", "a": _PAIR["b"], "b": _PAIR["a"]},
  ]


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """norm (batch: the baseline, none, layer) x 3 seeds (Welch intervals need at least 2 per group; with 2
  they are too wide to decide anything)."""
  get_config(arg)
  return sweeps.product(sweeps.grid({"model.knobs.norm": list(NORMS)}),
                        sweeps.seeds(3))
