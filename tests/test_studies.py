"""Study configs (experiments/configs/*.py), without training: every variant's config and every trial of
its sweep, with the trial's overrides applied, passes `research.training.config.validate`, names a
model, knobs, dataset options, optimizer, schedule and loss that exist; `config.study` is the file's
name; the sweep runner accepts the sweep; trials are distinct. Study-specific claims of the docstrings
are checked where they are arithmetic: matched parameter counts (against the built models), curvature
schedules at the same epochs for every batch size, and the "init" trials of hessian_spectrum (one step at
learning rate 0 leaves the parameters unchanged)."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from research import data, models, sweeps
from research.core import losses
from research.training import config as config_lib
from research.training import optimizers, schedules

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "experiments" / "configs"
FILES = sorted(p for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))
DEFAULT_VARIANTS = {"default": (None, "quick", "full")}  # files without a VARIANTS constant


def _module(path: Path):
  spec = importlib.util.spec_from_file_location(f"_study_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


MODULES = {p.stem: _module(p) for p in FILES}


def _variants(name: str) -> tuple:
  module = MODULES[name]
  return tuple(getattr(module, "VARIANTS", None) or DEFAULT_VARIANTS[name])


CASES = [(name, v) for name in MODULES for v in _variants(name)]


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with `{dotted key: value}` set; keys may be new (validate rejects unknown ones)."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *sections, name = key.split(".")
    sub = config
    for part in sections:
      sub = sub[part]
    sub[name] = tuple(value) if isinstance(value, list) else value
  return config


def _check_names(c: ml_collections.ConfigDict) -> None:
  """What validate leaves to the libraries: model, knobs, dataset options, optimizer, schedule, loss."""
  assert c.model.name in models.available()
  unknown = set(c.model.knobs) - set(models.knobs(c.model.name))
  assert not unknown, f"unknown knobs {unknown} for {c.model.name}"
  data.parse_options(**c.data.options.to_dict())
  assert c.data.name in data.available()
  assert c.optimizer.name in optimizers.OPTIMIZERS
  assert c.schedule.name in schedules.SCHEDULES
  assert c.loss.name in losses.LOSSES


def test_every_file_is_covered():
  assert {"default", "bn_ablation", "edge_of_stability", "batch_size", "sam", "lr_batch_ratio", "optimizers",
          "label_noise", "depth_width", "skip_connections", "hessian_spectrum"} <= set(MODULES)


@pytest.mark.parametrize("name,variant", CASES, ids=[f"{n}:{v}" for n, v in CASES])
def test_config_and_every_trial_validate(name, variant):
  module = MODULES[name]
  base = module.get_config(variant)
  if name != "default":
    assert base.study == name
  config_lib.validate(base)
  _check_names(base)
  trials = module.get_sweep(variant)
  assert trials and all(isinstance(t, dict) for t in trials)
  assert len({tuple(sorted((k, repr(v)) for k, v in t.items())) for t in trials}) == len(trials)
  for overrides in trials:
    config = config_lib.validate(apply_overrides(base, overrides))
    _check_names(config)
    if name != "default":
      assert config.study == name
  spec = f"{CONFIG_DIR / (name + '.py')}" + (f":{variant}" if variant else "")
  index = sweeps.load_definition(spec)
  assert [t["overrides"] for t in index["trials"]] == json.loads(json.dumps(trials))  # tuples as lists
  assert index["study"] == (base.study if name != "default" else "")


@pytest.mark.parametrize("name", [n for n in MODULES if hasattr(MODULES[n], "VARIANTS")])
def test_unknown_variant_is_refused(name):
  with pytest.raises(ValueError, match="valid choices"):
    MODULES[name].get_config("nonsense")


# `python -m research.models list` (built models, 32x32x3 inputs); He et al. 2016 report 0.27M, 0.46M,
# 0.85M and 1.7M.
RESNET_COUNTS = {20: 269_722, 32: 464_154, 56: 853_018, 110: 1_727_962}


def _built_params(name: str, input_shape: tuple, **knobs) -> int:
  build = lambda: models.create(name, num_classes=10, input_shape=input_shape, rngs=nnx.Rngs(0), **knobs)
  model = nnx.eval_shape(build)
  return models.num_params(model)


def test_depth_width_parameter_formulas():
  """The closed forms against built models (every quick MLP; ResNet-20 at a width that rounds channels)
  and the ResNets' known counts at width 1. (Building every paper ResNet takes minutes on this CPU.)"""
  dw = MODULES["depth_width"]
  for depth in dw.MLP_DEPTHS:
    width = dw.mlp_width(depth)
    assert dw.mlp_params(depth, width) == _built_params("mlp", (28, 28, 1), depth=depth, width=width)
  for depth, count in RESNET_COUNTS.items():
    assert dw.resnet_params(depth, 1.0) == count
  assert dw.resnet_params(20, 1.8125) == _built_params("resnet20", (32, 32, 3), width=1.8125)


@pytest.mark.parametrize("variant", ["quick", "paper"])
def test_depth_width_trials_have_matched_parameter_counts(variant):
  dw = MODULES["depth_width"]
  base = dw.get_config(variant)
  counts = {}
  for t in dw.get_sweep(variant):
    c = apply_overrides(base, t)
    if c.model.name == "mlp":
      counts[c.model.knobs.depth] = dw.mlp_params(c.model.knobs.depth, c.model.knobs.width)
    else:
      depth = int(c.model.name[len("resnet"):])
      counts[depth] = dw.resnet_params(depth, c.model.knobs.width)
  assert len(counts) == 4
  values = np.array(list(counts.values()), float)
  assert values.max() / values.min() < 1.10, counts


@pytest.mark.parametrize("name", ["batch_size", "lr_batch_ratio"])
def test_curvature_is_measured_at_the_same_epochs_for_every_batch_size(name):
  module = MODULES[name]
  for variant in module.VARIANTS:
    base = module.get_config(variant)
    n = base.data.options.get("num_train") or module.NUM_TRAIN[variant]
    epochs = set()
    for t in module.get_sweep(variant):
      c = apply_overrides(base, t)
      epochs.add(c.curvature.every_steps / (n // c.training.batch_size))
    assert len(epochs) == 1, epochs


def test_hessian_spectrum_init_trials_do_not_move_the_parameters():
  hs = MODULES["hessian_spectrum"]
  base = hs.get_config("quick")
  init = [t for t in hs.get_sweep("quick") if t.get("schedule.lr") == 0.0]
  assert {t["model.knobs.norm"] for t in init} == {"batch", "none"}  # per seed
  c = apply_overrides(base, init[0])
  assert c.training.num_steps == 1
  schedule = schedules.make_schedule(c.schedule, total_steps=1, steps_per_epoch=1)
  opt = optimizers.make_optimizer(c.optimizer, schedule)
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  grads = jax.tree.map(lambda x: jnp.cos(x) + 1.0, params)
  updates, _ = opt.update(grads, opt.init(params), params)
  moved = optax.apply_updates(params, updates)
  for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
