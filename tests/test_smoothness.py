"""Trajectory smoothness (Santurkar et al. 2018): closed forms on a quadratic, the dense Hessian of a tiny MLP
as the step shrinks, and the `smoothness` evaluator in a tiny training run (its numbers equal a direct call
on the final checkpoint; bad settings are one-line errors)."""

import json

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from research import curvature, training
from research.core import rundir
from research.core.errors import UserError
from research.evaluators import posthoc
from research.evaluators import smoothness as tracking
from research.measures import gradient_step_smoothness
from research.training import schedules

SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(6, 6, 1), num_classes=3, valid_size=0,
             eval_train_size=48)


@pytest.fixture
def x64():
  """float64 for one test (the module-scoped `float64` would stay on for the training tests too)."""
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


def _quadratic(d=6, seed=0):
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  m = jax.random.normal(k1, (d, d), jnp.float64)
  a = (m + m.T) / 2  # symmetric, indefinite
  b = jax.random.normal(k2, (d,), jnp.float64)
  w = jax.random.normal(k3, (d,), jnp.float64)
  s = jax.random.normal(k4, (d,), jnp.float64)  # a "model state" leaf: enters the loss, never moves
  return a, b, w, s


def test_quadratic_closed_forms(x64):
  a, b, w, s = _quadratic()
  lr, multiples = 0.1, (0.5, 1.0, 2.0, 3.0, 4.0)

  def loss_fn(tree, batch):
    v = tree["params"]["w"]
    return 0.5 * v @ a @ v + (b + tree["model_state"]["s"]) @ v + 0.0 * batch["x"].sum()

  params = {"params": {"w": w}, "model_state": {"s": s}}
  r = gradient_step_smoothness(loss_fn, params, {"x": jnp.zeros((3,))}, lr=lr, multiples=multiples,
                               param_filter=lambda name: name.startswith("params."))
  g = np.asarray(a @ w + b + s)
  ag = np.asarray(a) @ g
  loss = lambda v: float(0.5 * v @ np.asarray(a) @ v + np.asarray(b + s) @ v)
  steps = np.array(multiples) * lr
  losses = np.array([loss(np.asarray(w) - t * g) for t in steps])
  # L(w - t g) = L(w) - t |g|^2 + t^2 g^T A g / 2
  closed = loss(np.asarray(w)) - steps * (g @ g) + steps ** 2 * (g @ ag) / 2
  np.testing.assert_allclose(losses, closed, rtol=1e-12)
  assert r["num_params"] == 6  # the model-state leaf is not perturbed
  np.testing.assert_allclose(r["loss"], loss(np.asarray(w)), rtol=1e-12)
  np.testing.assert_allclose(r["losses"], losses, rtol=1e-12)
  np.testing.assert_allclose(r["loss_range"], losses.max() - losses.min(), rtol=1e-10)
  np.testing.assert_allclose(r["grad_norm"], np.linalg.norm(g), rtol=1e-12)
  np.testing.assert_allclose(r["grad_changes"], steps * np.linalg.norm(ag), rtol=1e-10)
  np.testing.assert_allclose(r["grad_change_max"], steps.max() * np.linalg.norm(ag), rtol=1e-10)
  beta = np.linalg.norm(ag) / np.linalg.norm(g)
  np.testing.assert_allclose(r["betas"], np.full(len(multiples), beta), rtol=1e-10)  # constant over c
  np.testing.assert_allclose(r["beta_smoothness"], beta, rtol=1e-10)
  np.testing.assert_allclose(r["distances"], steps * np.linalg.norm(g), rtol=1e-12)


def test_zero_gradient_and_bad_arguments(x64):
  a, _, _, _ = _quadratic()
  loss_fn = lambda p, batch: 0.5 * p @ a @ p + 0.0 * batch["x"].sum()
  batch = {"x": jnp.zeros((2,))}
  r = gradient_step_smoothness(loss_fn, jnp.zeros(6), batch, lr=0.1)
  assert r["grad_norm"] == 0.0 and r["loss_range"] == 0.0 and np.isnan(r["beta_smoothness"])
  for bad in (dict(lr=0.0), dict(lr=-1.0), dict(lr=0.1, multiples=()), dict(lr=0.1, multiples=(1.0, -2.0))):
    with pytest.raises(UserError) as e:
      gradient_step_smoothness(loss_fn, jnp.ones(6), batch, **bad)
    assert "\n" not in str(e.value)


def _mlp(seed=1, n=20, d_in=4, hidden=5, classes=3):
  k = jax.random.split(jax.random.key(seed), 5)
  params = {"w1": 0.8 * jax.random.normal(k[0], (d_in, hidden), jnp.float64),
            "b1": 0.1 * jax.random.normal(k[1], (hidden,), jnp.float64),
            "w2": 0.8 * jax.random.normal(k[2], (hidden, classes), jnp.float64)}
  images = np.asarray(jax.random.normal(k[3], (n, d_in), jnp.float64))
  labels = np.asarray(jax.random.randint(k[4], (n,), 0, classes))

  def loss_fn(p, batch):
    logits = jnp.tanh(batch["image"] @ p["w1"] + p["b1"]) @ p["w2"]
    per_example = -jax.nn.log_softmax(logits)[jnp.arange(logits.shape[0]), batch["label"]]
    mask = batch.get("mask", jnp.ones_like(per_example))
    return (per_example * mask).sum() / mask.sum()

  return params, images, labels, loss_fn


def test_small_steps_give_the_directional_curvature_of_the_dense_hessian(x64):
  params, images, labels, loss_fn = _mlp()
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  flat, unravel = ravel_pytree(params)
  full = jax.jit(lambda f: loss_fn(unravel(f), batch))
  h = np.asarray(jax.hessian(full)(flat))
  g = np.asarray(jax.grad(full)(flat))
  directional = np.linalg.norm(h @ g) / np.linalg.norm(g)
  spectral_norm = np.abs(np.linalg.eigvalsh(h)).max()
  # 20 examples in chunks of 7 (a ragged last chunk): still the exact full-batch mean
  chunks = curvature.make_chunks(images, labels, 7, shard=False)
  tiny = gradient_step_smoothness(loss_fn, params, chunks, lr=0.1, multiples=(1e-4, 1e-3))
  np.testing.assert_allclose(tiny["loss"], float(full(flat)), rtol=1e-12)
  np.testing.assert_allclose(tiny["grad_norm"], np.linalg.norm(g), rtol=1e-12)
  np.testing.assert_allclose(tiny["betas"][0], directional, rtol=1e-3)
  np.testing.assert_allclose(tiny["betas"][1], directional, rtol=1e-2)
  small = gradient_step_smoothness(loss_fn, params, chunks, lr=0.1, multiples=(0.01, 0.05, 0.1))
  assert directional <= spectral_norm
  assert small["beta_smoothness"] <= spectral_norm * (1 + 1e-2)
  # the losses are the full-batch losses at the stepped parameters
  for c, value in zip((0.01, 0.05, 0.1), small["losses"]):
    np.testing.assert_allclose(value, float(full(flat - c * 0.1 * g)), rtol=1e-12)


def _config(**changes):
  base = {"training.num_steps": 8, "model.knobs.norm": "batch", "smoothness.every_steps": 4,
          "smoothness.num_examples": 64, "schedule.name": "warmup_cosine", "schedule.warmup_steps": 2,
          "schedule.final_lr_fraction": 0.5}
  return helpers.tiny_config(SYNTH, eval_every=4, **(base | changes))


def test_the_evaluator_logs_smoothness_equal_to_a_direct_call(tmp_path):
  c = _config()
  training.train_and_evaluate(c, tmp_path)
  rows = {r["step"]: r for r in rundir.read_metrics(tmp_path / "metrics.jsonl") if "smooth/lr" in r}
  assert sorted(rows) == [0, 4, 8]
  # warm-up: the learning rate is 0 at step 0, no step to probe, nothing but the lr is logged
  assert rows[0]["smooth/lr"] == 0.0 and "smooth/beta" not in rows[0]
  schedule = schedules.make_schedule(c.schedule, total_steps=8, steps_per_epoch=3)
  for step in (4, 8):
    assert rows[step]["smooth/lr"] == pytest.approx(float(schedule(step)), rel=1e-6)
    for name in ("loss_range", "grad_change", "beta", "grad_norm", "loss", "seconds"):
      assert np.isfinite(rows[step][f"smooth/{name}"])
  record = json.loads((tmp_path / "smoothness" / "step8.json").read_text())
  assert record["settings"]["ghost_batch_size"] == 32 and record["settings"]["bn_mode"] == "batch"
  assert record["results"]["num_examples"] == 64 and record["results"]["multiples"] == [0.5, 1, 2, 3, 4]

  _, ds, graphdef, state, step = training.load_run(tmp_path)
  assert step == 8
  loss_fn, _ = curvature.model_functions(graphdef, state.model_state, bn_mode="batch",
                                         preprocess=ds.preprocess)
  chunks = curvature.make_chunks(ds.train.images[:64], ds.train.labels[:64], 32)
  direct = gradient_step_smoothness(loss_fn, state.params, chunks, lr=rows[8]["smooth/lr"])
  assert rows[8]["smooth/loss_range"] == pytest.approx(direct["loss_range"], rel=1e-4)
  assert rows[8]["smooth/grad_change"] == pytest.approx(direct["grad_change_max"], rel=1e-4)
  assert rows[8]["smooth/beta"] == pytest.approx(direct["beta_smoothness"], rel=1e-4)
  assert rows[8]["smooth/grad_norm"] == pytest.approx(direct["grad_norm"], rel=1e-5)
  assert rows[8]["smooth/loss"] == pytest.approx(direct["loss"], rel=1e-5)
  # afterwards on the checkpoint: the same numbers, a tagged record, metrics.jsonl untouched
  before = (tmp_path / "metrics.jsonl").read_text()
  again = posthoc.measure_checkpoint(tmp_path, ["smoothness"])
  assert (tmp_path / "metrics.jsonl").read_text() == before
  for name in ("loss_range", "grad_change", "beta", "grad_norm", "loss", "lr"):
    assert again[f"smooth/{name}"] == pytest.approx(rows[8][f"smooth/{name}"], rel=1e-5)
  assert len(list((tmp_path / "smoothness").glob("step8_posthoc*.json"))) == 1
  # ghost batches: the batch-statistics loss of 64 examples in two batches of 32 is not the loss of one
  # batch of 64, so the ghost batch size is part of what is measured
  one = curvature.make_chunks(ds.train.images[:64], ds.train.labels[:64], 64)
  whole = gradient_step_smoothness(loss_fn, state.params, one, lr=0.05)
  assert whole["loss"] != pytest.approx(direct["loss"], rel=1e-6)


@pytest.mark.parametrize("key,value,match", [
    ("smoothness.bn_mode", "foo", "smoothness.bn_mode"),
    ("smoothness.every_steps", -1, "smoothness.every_steps"),
    ("smoothness.multiples", (1.0, 0.0), "smoothness.multiples"),
    ("smoothness.multiples", (), "smoothness.multiples"),
    ("smoothness.lr_source", "max", "smoothness.lr_source"),
    ("smoothness.split", "test", "smoothness.split"),
])
def test_bad_settings_are_one_line_errors(key, value, match):
  with pytest.raises(UserError, match=match) as e:
    tracking.build(training.validate(_config(**{key: value})))
  assert "\n" not in str(e.value)


def test_the_default_ghost_batch_is_what_a_training_step_normalizes_over():
  c = _config()
  assert tracking.training_chunk(c, 96) == 32  # the batch
  assert tracking.training_chunk(_config(**{"training.chunk_size": 16}), 96) == 16
  sam = _config(**{"optimizer.sam.rho": 0.05, "optimizer.sam.micro_batch": 8})
  assert tracking.training_chunk(sam, 96) == 8
  assert tracking.training_chunk(_config(**{"training.full_batch": True}), 96) == 96


def test_a_probe_set_of_partial_ghost_batches_is_refused(tmp_path):
  with pytest.raises(UserError, match="whole ghost batches of 32") as e:
    training.train_and_evaluate(_config(**{"smoothness.num_examples": 40}), tmp_path / "batch")
  assert "\n" not in str(e.value)
  # with running statistics the chunks are only memory: a ragged probe set is the exact mean
  c = _config(**{"smoothness.num_examples": 40, "smoothness.bn_mode": "eval", "smoothness.every_steps": 0,
                 "smoothness.at_end": True})
  training.train_and_evaluate(c, tmp_path / "eval")
  last = rundir.read_metrics(tmp_path / "eval" / "metrics.jsonl")[-1]
  _, ds, graphdef, state, _ = training.load_run(tmp_path / "eval")
  loss_fn, _ = curvature.model_functions(graphdef, state.model_state, preprocess=ds.preprocess)
  batch = {"image": jnp.asarray(ds.train.images[:40]), "label": jnp.asarray(ds.train.labels[:40])}
  direct = gradient_step_smoothness(loss_fn, state.params, batch, lr=last["smooth/lr"])
  assert last["smooth/beta"] == pytest.approx(direct["beta_smoothness"], rel=1e-4)
  assert last["smooth/loss"] == pytest.approx(direct["loss"], rel=1e-5)
  record = json.loads((tmp_path / "eval" / "smoothness" / "step8.json").read_text())
  assert record["settings"]["ghost_batch_size"] is None and record["results"]["chunk_size"] == 32
