"""The paper variants of the studies, never run here (they are for GPUs), pass the dry run on abstract
shapes (`research.dry_run`, `python -m experiments.dry_run`): every trial's model, data shapes, train and
eval steps and evaluators trace, and every study's docstring carries the cost line the command prints.
Checked against independent numbers: published parameter counts (VGG-11, the CIFAR ResNets of He et al.
2016, WRN-28-10 of Zagoruyko & Komodakis 2016), closed forms for the MLPs' parameters and for the FLOPs
of an MLP's train and eval steps, TFDS's own feature specs and a real `load` for the dataset metadata.
A broken study fails with one line per trial. Nothing is trained, compiled or downloaded.
"""

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from experiments import dry_run as dry_run_main
from research import data, dry_run
from research.core.errors import UserError
from research.dry_run import study as study_lib

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "experiments" / "configs"
PAPER, WITHOUT_PAPER = study_lib.studies_with(CONFIG_DIR.glob("[!_]*.py"), "paper")
NAMES = [Path(p.split(":")[0]).stem for p in PAPER]


@pytest.fixture(scope="module")
def plan_of():
  """study name -> its paper variant's StudyPlan, planned once per module with one shared Planner."""
  planner, done = dry_run.Planner(), {}

  def get(name: str) -> dry_run.StudyPlan:
    if name not in done:
      done[name] = dry_run.plan_study(f"{CONFIG_DIR / name}.py:paper", planner)
    return done[name]

  return get


def test_thirteen_studies_have_a_paper_variant():
  assert len(PAPER) == 13, NAMES
  assert [Path(p).name for p in WITHOUT_PAPER] == ["default.py"]


def _docstring(name: str) -> str:
  spec = importlib.util.spec_from_file_location(f"_dry_run_{name}", CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return " ".join((module.__doc__ or "").split())


@pytest.mark.parametrize("name", NAMES)
def test_paper_variant_passes_the_dry_run(name, plan_of):
  s = plan_of(name)
  assert not s.failures, "\n".join(s.failures[:5])
  assert len(s.plans) == len(s.trials) > 0
  for plan in s.plans:
    assert plan.num_params > 0 and plan.total_steps > 0
    assert all(math.isfinite(c.flops) and c.flops > 0 and c.calls >= 0 for c in plan.costs), plan.costs
    assert plan.flops_of("train steps") > 0
  # the docstring's cost line is the one the command prints (generated, not typed)
  line = study_lib.cost_line(dataclasses.replace(s, config=f"experiments/configs/{name}.py:paper"),
                             dry_run.Throughput())
  assert " ".join(line.split()) in _docstring(name), (
      f"{name}.py's docstring lacks its cost line; run `python -m experiments.dry_run --config "
      f"experiments/configs/{name}.py:paper --cost_lines` and paste:\n{line}")


def _params(plan_of, name: str, **overrides) -> set[int]:
  """Parameter counts of the trials of study `name` whose overrides include `overrides`."""
  trials = [t for t in plan_of(name).trials if overrides.items() <= t.overrides.items()]
  assert trials, (name, overrides)
  return {t.plan.num_params for t in trials}


def _published(count: int, millions: float, digits: int) -> bool:
  """`count` rounds to the published figure given in millions with `digits` significant digits."""
  return float(f"{count / 1e6:.{digits}g}") == millions


def test_parameter_counts_match_published_ones(plan_of):
  # VGG-11 with BatchNorm for CIFAR-10 (512 -> 10 classifier): 9.23M, 2,752 conv biases fewer here
  # (convolutions before BatchNorm have none): the common PyTorch CIFAR implementation has 9,231,114.
  (vgg,) = _params(plan_of, "bn_ablation", **{"model.knobs.norm": "batch"})
  assert vgg + 2752 == 9_231_114
  # He et al. 2016, Sec. 4.2: ResNet-20/32/56/110 on CIFAR-10 have 0.27M, 0.46M, 0.85M, 1.7M parameters.
  (r20,) = _params(plan_of, "compression")
  (r32,) = _params(plan_of, "lr_batch_ratio")
  (r56,) = _params(plan_of, "depth_width", **{"model.name": "resnet56"})
  (r110,) = _params(plan_of, "skip_connections", **{"model.name": "resnet110", "model.knobs.skip": True})
  assert _published(r20, 0.27, 2) and _published(r32, 0.46, 2) and _published(r56, 0.85, 2)
  assert _published(r110, 1.7, 2)
  # Zagoruyko & Komodakis 2016 report 36.5M parameters for WRN-28-10.
  assert {_published(n, 36.5, 3) for n in _params(plan_of, "sam")} == {True}


def _mlp_params(inputs: int, width: int, depth: int, classes: int = 10) -> int:
  return (inputs + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * classes


def test_mlp_parameters_and_flops_match_closed_forms(plan_of):
  """Edge of stability: a tanh MLP (3072 -> 200 -> 200 -> 10) trained full-batch on 5,000 images. XLA
  counts a multiply-add as 2 FLOPs: the eval step's forward pass is 2 B sum(in x out); the train step is
  the forward pass, the weight gradients (as many) and the input gradients of every layer but the first,
  2 B (2 sum(in x out) + sum_(l > 1) in x out); elementwise work adds under 2%."""
  s = plan_of("edge_of_stability")
  layers = [(3072, 200), (200, 200), (200, 10)]
  macs = sum(a * b for a, b in layers)
  assert {p.num_params for p in s.plans} == {_mlp_params(3072, 200, 2)}
  plan = s.plans[0]
  costs = {c.what: c for c in plan.costs}
  batch = plan.batch_size
  train = 2 * batch * (2 * macs + sum(a * b for a, b in layers[1:]))
  assert 1.0 <= costs["train steps"].flops / train < 1.02
  evaluation = 2 * 1000 * macs  # eval.batch_size 1000
  assert 1.0 <= costs["evaluations"].flops / evaluation < 1.02
  reparam = plan_of("reparameterization")
  assert _params(plan_of, "reparameterization", **{"model.knobs.norm": "none"}) == {_mlp_params(784, 1024, 2)}
  assert len(reparam.plans) == 6


@pytest.mark.parametrize("name", sorted(data.metadata.INFO))
def test_dataset_cards_match_tfds_features(name):
  """Image shape and classes of each card against TFDS's own feature spec (offline: no download)."""
  features = tfds.builder(name).info.features
  card = data.metadata.INFO[name]
  assert tuple(features["image"].shape) == card.input_shape
  assert features["label"].num_classes == card.num_classes
  assert sum(card.train_per_class or [card.train_size]) == card.train_size


def test_describe_matches_a_real_load():
  """Split sizes from the card against the arrays `load` builds (Fashion-MNIST is prepared offline)."""
  options = dict(classes=(0, 3, 5), valid_size=1000, num_train=2048, eval_train_size=1000, seed=1)
  real, abstract = data.load("fashion_mnist", **options), data.describe("fashion_mnist", **options)
  assert real.metadata()["sizes"] == abstract.metadata()["sizes"]
  assert (real.num_classes, tuple(real.input_shape)) == (abstract.num_classes, abstract.input_shape)
  assert real.train.images.shape[1:] == abstract.train.images.shape[1:]
  full = data.describe("cifar10", valid_size=5000)
  sizes = [len(full.train), len(full.valid), len(full.test), len(full.eval_train)]
  assert sizes == [45000, 5000, 10000, 10000]
  with pytest.raises(UserError, match="num_train = 6000 needs 3000 examples of class"):
    data.describe("cifar10", classes=(0, 1), valid_size=5000, num_train=6000)


BROKEN = '''
from research.training import default_config

VARIANTS = ("paper",)


def get_config(arg=None):
  c = default_config()
  c.study = "broken"
  c.data.name = "synthetic"
  c.data.options.image_shape = (8, 8, 1)
  c.model.name = "mlp"
  c.model.knobs.width = 16
  c.training.batch_size = 32
  c.training.num_epochs = 0
  c.training.num_steps = 10
  c.eval.every_epochs = 0
  c.eval.batch_size = 64
  c.curvature.at_end = True
  c.curvature.num_examples = 100
  c.curvature.chunk_size = 32
  return c


def get_sweep(arg=None):
  return [{"seed": 0}, {"model.name": "resnet1000"},
          {"model.knobs.norm": "batch", "curvature.bn_mode": "batch"}]
'''


def test_a_broken_study_fails_with_one_line_per_trial(tmp_path, capsys):
  path = tmp_path / "broken.py"
  path.write_text(BROKEN)
  s = dry_run.plan_study(f"{path}:paper")
  assert s.trials[0].error is None and s.trials[0].plan.num_params == _mlp_params(64, 16, 2)
  first, second = s.failures
  assert first.startswith("broken:paper trial 001-model=resnet1000: unknown model 'resnet1000'")
  assert second.startswith("broken:paper trial 002-")
  assert "curvature.num_examples (100) must be a multiple of curvature.chunk_size (32)" in second
  assert dry_run_main.main(["--config", f"{path}:paper"]) == 1
  out, err = capsys.readouterr()
  assert "broken:paper" in out and err.count("error: broken:paper trial") == 2
  assert dry_run_main.main(["--config", str(tmp_path / "missing.py")]) == 2
