"""Label noise: what does fitting wrong labels do to generalization and to the sharpness of the solution?

Question: the same network trained long enough to fit its training set, with clean labels and with a
fraction of the training labels flipped to another class: how far the training accuracy on the (noisy)
labels climbs above 1 - noise (memorization), the test accuracy and generalization gap, and lambda_max
and the trace over training.

Published results it probes: Zhang, Bengio, Hardt, Recht & Vinyals 2017 ("Understanding Deep Learning
Requires Rethinking Generalization", ICLR, arXiv:1611.03530): networks fit partially and fully random
labels, and test error grows steadily with the noise level. Arpit et al. 2017 ("A Closer Look at
Memorization in Deep Networks", ICML, arXiv:1706.05394): clean patterns are learned first, noisy
examples are memorized later (test accuracy peaks, then falls). Neyshabur, Bhojanapalli, McAllester &
Srebro 2017 ("Exploring Generalization in Deep Learning", NeurIPS, arXiv:1706.08947): sharpness-based
measures grow with the fraction of random labels.

Commands:
  python -m experiments.sweep --config experiments/configs/label_noise.py:quick \
      --workdir runs/label_noise-quick --parallel 2
  python -m analysis.report runs/label_noise-quick
  python -m experiments.sweep --config experiments/configs/label_noise.py:paper --workdir runs/label_noise

Sweep (`get_sweep`): label noise (`data.options.label_noise`: the fraction of training labels moved to a
uniformly drawn different class; validation and test labels stay clean) x seed. `eval_train` is a fixed
subset of the noisy training split, so `eval_train/accuracy` is the accuracy on the labels the network
was trained on (memorization), and the Hessian is that of the noisy training loss. Accuracy on the
flipped examples alone is not logged; `research.data.load` with the run's options gives them
(`Dataset.noisy_indices`, `clean_train_labels`) for a measurement on the final checkpoint.

Variants:
- `quick`: `simple_cnn` at half width (conv blocks of 16 and 32 channels, dense 128) on 2,048
  Fashion-MNIST training images, heavy-ball momentum 0.9 at lr 0.05, 800 steps of 128 (50 epochs), noise
  0, 0.2 and 0.4, 2 seeds: 6 trials; lambda_max every 400 steps and trace (8 probes) on 512 fixed training
  images. Measured: 4 min 33 s for the sweep and its report with `--parallel 2` on 2 quiet CPU cores
  (2026-11-22, load average 2-7 from the study's own processes, cold compilation cache; 6 trials of
  78-94 s).
- `paper`: CIFAR-10 with partially corrupted labels as in Zhang et al., on an AlexNet-like network
  (`alexnet`) without dropout, weight decay or augmentation (as their fitting experiments), momentum 0.9
  at lr 0.01, 200 epochs, noise 0, 0.2, 0.4, 0.6 and 0.8, 2 seeds; the Hessian on 5,000 training images.
  (Zhang et al. redraw a corrupted label uniformly over all classes, so it stays correct with probability
  1/10; here it always changes.) For a GPU; CIFAR-10 needs TFDS's download.
"""

from research import sweeps
from research.training import default_config

VARIANTS = ("quick", "paper")
NOISE = {"quick": (0.0, 0.2, 0.4), "paper": (0.0, 0.2, 0.4, 0.6, 0.8)}


def get_config(arg: str | None = "quick"):
  arg = arg or "quick"
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid choices: {', '.join(VARIANTS)}")
  c = default_config()
  c.study = "label_noise"
  c.data.options.label_noise = 0.0
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.schedule.name = "constant"
  c.curvature.at_end = True
  c.curvature.bn_mode = "eval"
  c.progress = "lines"
  if arg == "quick":
    c.data.name = "fashion_mnist"
    c.data.options.num_train = 2048
    c.data.options.valid_size = 1000
    c.data.options.eval_train_size = 1000
    c.model.name = "simple_cnn"
    c.model.knobs.width = 0.5
    c.schedule.lr = 0.05
    c.training.batch_size = 128
    c.training.num_epochs = 0
    c.training.num_steps = 800
    c.eval.every_epochs = 0
    c.eval.every_steps = 100
    c.log_every = 25
    c.curvature.every_steps = 400
    c.curvature.num_examples = 512
    c.curvature.chunk_size = 512
    c.curvature.trace_probes = 8
  else:
    c.data.name = "cifar10"
    c.data.options.valid_size = 5000
    c.data.options.eval_train_size = 10000
    c.model.name = "alexnet"
    c.model.knobs.dropout = 0.0
    c.schedule.lr = 0.01
    c.training.batch_size = 128
    c.training.num_epochs = 200
    c.eval.every_epochs = 5
    c.log_every = 50
    c.curvature.every_steps = 20 * 351  # every 20 epochs of 45,000 / 128
    c.curvature.num_examples = 5000
    c.curvature.chunk_size = 500
    c.curvature.trace_probes = 50
  return c


def get_sweep(arg: str | None = "quick") -> list[dict]:
  """label noise x seed (2 for both variants)."""
  get_config(arg)
  return sweeps.product(sweeps.grid({"data.options.label_noise": list(NOISE[arg or "quick"])}),
                        sweeps.seeds(2))
