"""The evaluator plug-in protocol: a measurement from outside `research/` joins training through the
registry alone, owns its config section, and its numbers land in metrics.jsonl."""

import importlib
import inspect

import helpers
import jax
import numpy as np
import pytest

from research import training
from research.core import evaluator, rundir
from research.core.errors import UserError
from research.training import loop

SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(6, 6, 1), num_classes=3, valid_size=0,
             eval_train_size=48)


@pytest.fixture
def toy():
  module = importlib.import_module("toy_evaluator")
  evaluator.register("toy", default_config=module.default_config, build=module.build)
  yield module
  evaluator.unregister("toy")


def _norm(tree) -> float:
  return float(np.sqrt(sum(np.vdot(x, x) for x in jax.tree.leaves(jax.device_get(tree)))))


def test_a_registered_evaluator_owns_its_section_and_logs_into_metrics(toy, tmp_path):
  assert "toy" in training.default_config()  # its schema joined the run config
  c = helpers.tiny_config(SYNTH, num_steps=8, eval_every=4, **{"toy.every_steps": 4, "toy.scale": 2.0})
  with pytest.raises(UserError, match="toy.nope"):
    bad = helpers.tiny_config(SYNTH)
    with bad.toy.unlocked():
      bad.toy.nope = 1
    training.validate(bad)
  training.train_and_evaluate(c, tmp_path)
  rows = {r["step"]: r for r in rundir.read_metrics(tmp_path / "metrics.jsonl") if "toy/param_norm" in r}
  assert sorted(rows) == [0, 4, 8]  # the initialization, every 4 steps, the end
  _, _, _, state, step = training.load_run(tmp_path)
  assert step == 8
  np.testing.assert_allclose(rows[8]["toy/param_norm"], 2.0 * _norm(state.params), rtol=1e-6)
  # the initial parameters the context hands out are the step-0 parameters the loop trained from
  np.testing.assert_allclose(rows[8]["toy/initial_norm"], rows[0]["toy/param_norm"] / 2.0, rtol=1e-6)
  assert rows[4]["toy/fraction_done"] == 0.5
  setup = rundir.read_json(tmp_path / "meta.json")["backend_setup"]  # what ran is recorded
  assert setup["convolutions"] in ("onednn", "xla") and "refused" in setup["onednn_verdicts"]


def test_the_loop_names_no_evaluator():
  source = inspect.getsource(loop)
  for name in ("curvature", "measures", "compression", "landscape", "toy"):
    assert f"research.{name}" not in source and f"evaluators.{name}" not in source


def test_an_unregistered_section_is_an_unknown_key():
  c = helpers.tiny_config(SYNTH)
  assert "toy" not in c
  with pytest.raises(UserError, match="unknown config key 'toy"):
    with c.unlocked():
      c.toy = {"every_steps": 1}
    training.validate(c)


def test_explicit_evaluators_replace_the_configured_ones(tmp_path):
  seen = []
  ev = evaluator.Evaluator("spy", lambda ctx: seen.append(ctx.step) or {"spy/step": float(ctx.step)},
                           every_steps=5)
  c = helpers.tiny_config(SYNTH, num_steps=10, eval_every=5, **{"curvature.every_steps": 5})
  training.train_and_evaluate(c, tmp_path, evaluators=[ev])
  assert seen == [0, 5, 10]
  assert not any("curv/lambda_max" in r for r in rundir.read_metrics(tmp_path / "metrics.jsonl"))
