"""Batch size: does large-batch training at the same learning rate and epoch budget find sharper minima
that generalize worse?

Question: train the same network with a small and a large batch (and one in between), at a fixed
learning rate and a fixed number of epochs, several seeds each: test accuracy, generalization gap, and
the sharpness of the solution (lambda_max tracked during training, trace at the end).

Published result it probes: Keskar, Mudigere, Nocedal, Smelyanskiy & Tang 2017 ("On Large-Batch
Training for Deep Learning: Generalization Gap and Sharp Minima", ICLR, arXiv:1609.04836): with Adam at
the same learning rate, large batches (10% of the training set) reach similar training accuracy but a
larger test error than small batches (256), and land in sharper minima (larger epsilon-sharpness,
larger Hessian eigenvalues); the 1-D interpolation from the small-batch to the large-batch solution
rises steeply on the large-batch side.

Commands:
  python -m experiments.sweep --config experiments/configs/batch_size.py:quick \
      --workdir runs/batch_size-quick --parallel 2
  python -m analysis.report runs/batch_size-quick
  python -m experiments.sweep --config experiments/configs/batch_size.py:paper --workdir runs/batch_size
Keskar's epsilon-sharpness and the small-to-large interpolation are not part of the sweep: compute them
on the final checkpoints (`research.training.load_run`, then `research.measures.epsilon_sharpness` and
`research.landscape.interpolate` between the two runs of one seed).

Sweep (`get_sweep`): batch size x seed; the curvature schedule is zipped with the batch size so that
lambda_max is measured at the same epochs (every 5 epochs for quick, 10 for paper) for every batch size.

Variants:
- `quick`: `simple_cnn` (conv blocks of 32 and 64 channels, dense 128) on 4,096 Fashion-MNIST training
  images, Adam at lr 1e-3 for 15 epochs, batch 64, 256 and 512 (1/8 of the training set, the "large"
  batch), 2 seeds: 6 trials; lambda_max and trace (8 probes) on 256 fixed training images every 5 epochs.
  Estimated, not measured: 7-14 minutes with `--parallel 2` on 2 CPU cores (the trials add up to about 14
  minutes at the rates of a 20-step smoke trial under a load average of 7-9; two at a time take half to
  all of that).
- `paper`: close to Keskar et al.'s C1 network (a shallow AlexNet-like convolutional network): `alexnet`
  on CIFAR-10, Adam at lr 1e-3, batch 256 against 5,000 (10% of the 50,000 training images, their
  large-batch rule), 100 epochs, no augmentation, 3 seeds; the Hessian on 5,000 training images. For a
  GPU; CIFAR-10 needs TFDS's download.
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
EPOCHS = {"quick": 15, "paper": 100}
BATCH_SIZES = {"quick": (64, 256, 512), "paper": (256, 5000)}
NUM_TRAIN = {"quick": 4096, "paper": 50000}
CURVATURE_EVERY_EPOCHS = {"quick": 5, "paper": 10}


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "batch_size"
  c.optimizer.name = "adam"
  c.schedule.name = "constant"
  c.schedule.lr = 1e-3
  c.training.batch_size = BATCH_SIZES[arg][0]
  c.training.num_steps = 0
  c.training.num_epochs = EPOCHS[arg]
  c.eval.every_steps = 0
  c.eval.every_epochs = CURVATURE_EVERY_EPOCHS[arg]
  c.curvature.every_steps = CURVATURE_EVERY_EPOCHS[arg] * (NUM_TRAIN[arg] // BATCH_SIZES[arg][0])
  c.curvature.at_end = True
  c.curvature.bn_mode = "eval"
  c.curvature.save_every = 0  # the record at the end is always saved
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = NUM_TRAIN[arg]
    c.data.options.valid_size = 1000
    c.data.options.eval_train_size = 1000
    c.model.name = "simple_cnn"
    c.log_every = 25
    c.curvature.num_examples = 256
    c.curvature.chunk_size = 256
    c.curvature.trace_probes = 8
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 0  # Keskar et al. train on all 50,000 images and report test error
    c.data.options.eval_train_size = 10000
    c.model.name = "alexnet"
    c.training.chunk_size = 1000  # a batch of 5,000 as 5 exactly summed chunks
    c.log_every = 50
    c.curvature.num_examples = 5000
    c.curvature.chunk_size = 1000
    c.curvature.trace_probes = 50
  return c


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """batch size (with the matching curvature schedule) x seed (2 for quick, 3 for paper)."""
  get_config(arg)
  arg = arg or "quick"
  sizes = list(BATCH_SIZES[arg])
  every = [CURVATURE_EVERY_EPOCHS[arg] * (NUM_TRAIN[arg] // b) for b in sizes]  # steps per epoch: n // b
  return sweeps.product(sweeps.zipped({"training.batch_size": sizes, "curvature.every_steps": every}),
                        sweeps.seeds(2 if arg == "quick" else 3))
