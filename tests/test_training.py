"""The training engine: overfitting, SAM and full-batch steps against closed forms, exact resume after
SIGKILL, the divergence guard, 1 vs 4 devices, config errors.

Closed forms use a linear model (`mlp` with depth 0) and the square loss, whose gradient is
X^T (X W + b - Y) / n in NumPy, independent of JAX's autodiff.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from research import data, models, training
from research.core import rundir
from research.core.errors import UserError
from research.training import optimizers, sam, schedules
from research.training import state as state_lib
from research.training import step as step_lib

ROOT = Path(__file__).resolve().parents[1]
SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(6, 6, 1), num_classes=3, valid_size=0,
             eval_train_size=48)


def tiny_config(**changes):
  return helpers.tiny_config(SYNTH, **changes)


def test_overfits_a_tiny_batch(tmp_path):
  c = tiny_config(**{"training.batch_size": 16, "training.num_steps": 150, "schedule.lr": 0.1,
                     "data.options.synthetic_train": 16, "model.knobs.width": 64, "eval.every_steps": 150,
                     "eval.batch_size": 16, "data.options.eval_train_size": 16})
  summary = training.train_and_evaluate(c, tmp_path)
  assert summary["status"] == "done" and summary["step"] == 150
  assert summary["final"]["eval_train/accuracy"] == 1.0
  records = rundir.read_metrics(tmp_path / "metrics.jsonl")
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert losses[-1] < 0.05 * losses[0]
  for key in ("train/loss", "train/accuracy", "train/lr", "train/grad_norm", "train/param_norm",
              "train/update_norm"):
    assert all(key in r for r in records if "train/loss" in r)
  meta = json.loads((tmp_path / "meta.json").read_text())
  assert meta["status"] == "done" and meta["seed"] == 0 and meta["versions"]["jax"] == jax.__version__
  assert json.loads((tmp_path / "summary.json").read_text())["final"]["eval_train/accuracy"] == 1.0


def _linear_setup(n=10, num_classes=3):
  ds = data.load("synthetic", **(SYNTH | dict(synthetic_train=n, eval_train_size=n)))
  model = models.create("mlp", num_classes=num_classes, input_shape=ds.input_shape, rngs=nnx.Rngs(0),
                        depth=0)
  x = np.asarray(ds.preprocess(ds.train.images), np.float64).reshape(n, -1)
  y = np.eye(num_classes)[ds.train.labels]
  return ds, model, x, y


def _linear_grad(w, b, x, y):
  """Square loss 0.5 mean ||x w + b - y||^2: gradients in NumPy."""
  r = x @ w + b - y
  return x.T @ r / len(x), r.mean(0)


def _run_step(ds, model, opt_cfg, sched_lr, *, chunk=None, **kw):
  schedule = schedules.make_schedule(_const(sched_lr), total_steps=10, steps_per_epoch=1)
  optimizer = optimizers.make_optimizer(opt_cfg, schedule)
  graphdef, state = state_lib.create(model, optimizer)
  n = len(ds.train)
  chunk = chunk or n
  pad = -n % chunk
  idx = np.concatenate([np.arange(n), np.zeros(pad, int)])
  batch = {"image": ds.train.images[idx].reshape((-1, chunk) + ds.input_shape),
           "label": ds.train.labels[idx].astype(np.int32).reshape(-1, chunk),
           "mask": (np.arange(len(idx)) < n).astype(np.float32).reshape(-1, chunk)}
  train_step = jax.jit(step_lib.make_train_step(graphdef, optimizer, schedule, loss_name="mse",
                                                label_smoothing=0.0, preprocess=ds.preprocess,
                                                augment_key=jax.random.key(0), **kw))
  new_state, metrics = train_step(state, batch)
  return state, new_state, metrics


def _const(lr):
  c = schedules.default_schedule_config()
  c.name, c.lr = "constant", lr
  return c


def _wb(state):
  p = state.params
  return np.asarray(p["head"]["kernel"][...], np.float64), np.asarray(p["head"]["bias"][...], np.float64)


def test_sgd_and_full_batch_steps_equal_the_mean_gradient_step():
  ds, model, x, y = _linear_setup(n=10)
  opt = optimizers.default_optimizer_config()
  opt.name = "sgd"
  # Chunks of 4 over 10 examples: 3 chunks, the last one half padding; the step must still be exact.
  for chunk in (None, 4):
    old, new, metrics = _run_step(ds, model, opt, 0.5, chunk=chunk)
    w, b = _wb(old)
    gw, gb = _linear_grad(w, b, x, y)
    w1, b1 = _wb(new)
    np.testing.assert_allclose(w1, w - 0.5 * gw, atol=1e-6)
    np.testing.assert_allclose(b1, b - 0.5 * gb, atol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], np.sqrt((gw ** 2).sum() + (gb ** 2).sum()), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], 0.5 * ((x @ w + b - y) ** 2).sum(1).mean(), rtol=1e-5)


def test_momentum_two_steps_and_sam_step_equal_hand_computed():
  ds, model, x, y = _linear_setup(n=10)
  opt = optimizers.default_optimizer_config()
  opt.name, opt.momentum = "momentum", 0.9
  schedule = schedules.make_schedule(_const(0.3), total_steps=10, steps_per_epoch=1)
  optimizer = optimizers.make_optimizer(opt, schedule)
  graphdef, state = state_lib.create(model, optimizer)
  batch = {"image": ds.train.images[None], "label": ds.train.labels[None].astype(np.int32),
           "mask": np.ones((1, 10), np.float32)}
  step = jax.jit(step_lib.make_train_step(graphdef, optimizer, schedule, loss_name="mse",
                                          label_smoothing=0.0, preprocess=ds.preprocess,
                                          augment_key=jax.random.key(0)))
  w, b = _wb(state)
  vw, vb = np.zeros_like(w), np.zeros_like(b)
  for _ in range(2):  # PyTorch's heavy ball: v = 0.9 v + g; w -= lr v
    gw, gb = _linear_grad(w, b, x, y)
    vw, vb = 0.9 * vw + gw, 0.9 * vb + gb
    w, b = w - 0.3 * vw, b - 0.3 * vb
    state, _ = step(state, batch)
  np.testing.assert_allclose(_wb(state)[0], w, atol=1e-6)
  np.testing.assert_allclose(_wb(state)[1], b, atol=1e-6)

  # SAM (Foret et al. 2021): e = rho g / ||g||, then an SGD step with the gradient at w + e.
  opt.name = "sgd"
  rho = 0.05
  old, new, _ = _run_step(ds, model, opt, 0.5, sam_rho=rho)
  w, b = _wb(old)
  gw, gb = _linear_grad(w, b, x, y)
  norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
  ew, eb = rho * gw / norm, rho * gb / norm
  assert np.isclose(np.sqrt((ew ** 2).sum() + (eb ** 2).sum()), rho)
  sw, sb = _linear_grad(w + ew, b + eb, x, y)
  np.testing.assert_allclose(_wb(new)[0], w - 0.5 * sw, atol=1e-6)
  np.testing.assert_allclose(_wb(new)[1], b - 0.5 * sb, atol=1e-6)
  # m-sharpness with m = 5: one ascent vector per half of the batch, gradients averaged.
  old, new, _ = _run_step(ds, model, opt, 0.5, sam_rho=rho, sam_micro_batch=5, chunk=5)
  total_w, total_b = 0, 0
  for part in (slice(0, 5), slice(5, 10)):
    gw, gb = _linear_grad(w, b, x[part], y[part])
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    sw, sb = _linear_grad(w + rho * gw / norm, b + rho * gb / norm, x[part], y[part])
    total_w, total_b = total_w + sw / 2, total_b + sb / 2
  np.testing.assert_allclose(_wb(new)[0], w - 0.5 * total_w, atol=1e-6)


def test_sam_perturbation_norms():
  params = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([[1.0, 2.0]])}
  grads = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[-2.0, 0.5]])}
  e = sam.perturbation(grads, params, rho=0.1)
  assert np.isclose(float(jnp.sqrt(sum((v ** 2).sum() for v in jax.tree.leaves(e)))), 0.1)
  ea = sam.perturbation(grads, params, rho=0.1, adaptive=True, eta=0.0)  # ||e / |w| || = rho
  scaled = jax.tree.map(lambda v, w: v / jnp.abs(w), ea, params)
  assert np.isclose(float(jnp.sqrt(sum((v ** 2).sum() for v in jax.tree.leaves(scaled)))), 0.1)


def test_mixed_precision_early_stopping_and_tensorboard(tmp_path):
  c = tiny_config(**{"model.mixed_precision": True, "training.num_steps": 60, "eval.every_steps": 5,
                     "eval.splits": ("eval_train", "test"), "eval.early_stop_metric": "eval_train/accuracy",
                     "eval.patience": 2, "schedule.lr": 0.1, "tensorboard": True, "optimizer.name": "adam",
                     "data.options.synthetic_train": 32, "training.batch_size": 32,
                     "data.options.eval_train_size": 32})
  summary = training.train_and_evaluate(c, tmp_path)
  # Accuracy on 32 examples saturates at 1.0, then two evaluations without improvement stop the run.
  assert summary["status"] == "early_stopped" and summary["step"] < 60
  assert summary["early_stopping"]["best"] == 1.0
  assert summary["step"] == summary["early_stopping"]["best_step"] + 10
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  # bfloat16 compute, float32 parameters and optimizer state.
  ds = data.load("synthetic", **SYNTH)
  model = models.create("mlp", num_classes=3, input_shape=ds.input_shape, rngs=nnx.Rngs(0), dtype="bfloat16",
                        depth=1, width=16)
  graphdef, state = state_lib.create(model, optimizers.make_optimizer(c.optimizer, 1e-3))
  assert {str(x.dtype) for x in jax.tree.leaves((state.params, state.opt_state))} <= {"float32", "int32"}
  logits, _ = step_lib.forward(graphdef, state.params, state.model_state,
                               ds.preprocess(ds.test.images[:4]), train=False)
  assert logits.dtype == jnp.bfloat16


def test_divergence_guard_stops_with_status(tmp_path):
  c = tiny_config(**{"schedule.lr": 1e30, "loss.name": "mse"})
  summary = training.train_and_evaluate(c, tmp_path)
  assert summary["status"] == "diverged" and summary["diverged_step"] < 20
  meta = json.loads((tmp_path / "meta.json").read_text())
  assert meta["status"] == "diverged"
  records = rundir.read_metrics(tmp_path / "metrics.jsonl")
  assert records[-1]["diverged"] is True and records[-1]["step"] == summary["diverged_step"]
  if summary["last_finite"] is not None:
    assert np.isfinite(summary["last_finite"]["train/loss"])


def test_the_compiled_steps_are_one_program_for_every_seed():
  """The train and eval steps take the seed's augmentation key and the input statistics of its training
  split as arguments: two seeds, whose statistics differ, lower to the same program text, which the
  trials of a sweep then share through the persistent compilation cache."""
  from research.training import loop

  programs, means = [], []
  for seed in (0, 1):
    c = tiny_config(**{"seed": seed, "data.options.num_train": 64, "data.augment.flip": True})
    ds = loop._load_data(c)
    spe, total = loop.schedule_lengths(c, ds)
    graphdef, state, optimizer, schedule = loop.build_state(c, ds, total, spe)
    train_fn, eval_fn, constants = loop.make_steps(c, ds, graphdef, optimizer, schedule)
    positions, mask = data.chunk_indices(32, 32)
    batch = {"image": ds.train.images[positions], "label": ds.train.labels[positions].astype(np.int32),
             "mask": mask.astype(np.float32)}
    flat = {k: v[0] for k, v in batch.items()}
    programs.append((jax.jit(train_fn).lower(state, batch, constants).as_text(),
                     jax.jit(eval_fn).lower(state.params, state.model_state, flat, constants).as_text()))
    means.append(constants["inputs"]["mean"])
  assert not np.array_equal(*means)
  assert programs[0] == programs[1]


def test_divergence_guard_fires_on_a_planted_nan(tmp_path, monkeypatch):
  from research.training import loop

  real_load = loop._load_data
  planted = 37  # this training example's pixels become NaN after normalization

  def load_with_nan(config):
    ds = real_load(config)
    target = jnp.asarray(ds.train.images[planted])
    clean = ds.preprocess_with
    dirty = lambda statistics, x: jnp.where(jnp.all(x == target, axis=(1, 2, 3), keepdims=True), jnp.nan,
                                            clean(statistics, x))
    object.__setattr__(ds, "preprocess_with", dirty)
    return ds

  monkeypatch.setattr(loop, "_load_data", load_with_nan)
  summary = training.train_and_evaluate(tiny_config(), tmp_path)
  first = next(s for s in range(20) if planted in data.batch_indices(96, 32, s, seed=0))
  assert summary["status"] == "diverged" and summary["diverged_step"] == first + 1
  if first > 0:
    assert summary["last_finite"]["step"] == first and np.isfinite(summary["last_finite"]["train/loss"])
  saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert max(saved, default=0) <= first  # the diverged state is never saved


def test_config_errors_are_one_line():
  with pytest.raises(UserError, match=r"unknown config key 'training.batchsize'; valid keys here: "):
    with training.default_config().unlocked() as c:
      c.training.batchsize = 3
      training.validate(c)
  c = training.default_config()
  c.training = ml_collections.ConfigDict(c.training.to_dict() | {"batch_size": "big"})
  with pytest.raises(UserError, match="config key 'training.batch_size' must be int, got 'big'"):
    training.validate(c)
  base = [sys.executable, "-m", "experiments.train", "--workdir", "/nonexistent/never",
          "--config", "experiments/configs/default.py:quick"]
  for extra, message in [(["--config.optimizer.lr=0.1"], "unknown config key 'optimizer.lr'; valid keys"),
                         (["--config.training.batch_size=1.5"], "--config.training.batch_size=1.5"),
                         (["--config.optimizer.name=adamax"], "unknown optimizer 'adamax'; valid choices")]:
    out = subprocess.run(base + extra, capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr[-500:]


def _cli(workdir, *extra, **popen):
  args = [sys.executable, "-m", "experiments.train", "--config", "experiments/configs/default.py:quick",
          "--workdir", str(workdir), "--config.data.name=synthetic", "--config.model.name=mlp",
          "--config.progress=none", *[f"--config.data.options.{k}={v}" for k, v in SYNTH.items()],
          "--config.data.options.num_train=None", "--config.training.batch_size=32",
          "--config.model.knobs.width=32",
          "--config.model.knobs.dropout=0.25", *extra]
  return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **popen)


def _final_params(workdir):
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  path = workdir / "checkpoints" / str(steps[-1]) / "state"  # the named train state (checkpoints.py)
  checkpointer = ocp.PyTreeCheckpointer()  # as NumPy arrays, whatever devices wrote them
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata.tree)
  tree = checkpointer.restore(path, restore_args=as_numpy)
  return steps[-1], [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_kill_and_resume_is_bitwise_identical(tmp_path):
  extra = ["--config.training.num_steps=400", "--config.checkpoint_every=25", "--config.log_every=1",
           "--config.eval.every_steps=100", "--config.data.augment.flip=True",
           "--config.data.augment.crop_padding=1"]
  ref = _cli(tmp_path / "ref", *extra)
  assert ref.wait(timeout=300) == 0, ref.stdout.read()
  run = _cli(tmp_path / "run", *extra)
  metrics = tmp_path / "run" / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline:  # kill mid-run, after a checkpoint and some steps past it
    records = rundir.read_metrics(metrics)
    if records and records[-1]["step"] >= 160:
      break
    time.sleep(0.05)
  run.send_signal(signal.SIGKILL)
  run.wait()
  killed_at = rundir.read_metrics(metrics)[-1]["step"]
  assert killed_at < 400, "the run finished before it could be killed"
  again = _cli(tmp_path / "run", *extra)
  assert again.wait(timeout=300) == 0, again.stdout.read()
  assert (tmp_path / "run" / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
  step_a, leaves_a = _final_params(tmp_path / "ref")
  step_b, leaves_b = _final_params(tmp_path / "run")
  assert step_a == step_b == 400
  for a, b in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(a, b)
  meta = json.loads((tmp_path / "run" / "meta.json").read_text())
  assert meta["status"] == "done" and len(meta["resumed"]) == 1


def test_one_and_four_devices_agree(tmp_path):
  extra = ["--config.training.num_steps=20", "--config.eval.batch_size=48", "--config.eval.every_steps=20"]
  env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  four = _cli(tmp_path / "four", *extra, env=env)
  one = _cli(tmp_path / "one", *extra)
  assert four.wait(timeout=300) == 0, four.stdout.read()
  assert one.wait(timeout=300) == 0, one.stdout.read()
  assert json.loads((tmp_path / "four" / "meta.json").read_text())["devices"].__len__() == 4
  _, a = _final_params(tmp_path / "one")
  _, b = _final_params(tmp_path / "four")
  for x, y in zip(a, b, strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_curvature_extras_can_skip_the_initialization(tmp_path):
  """extras_at_init=False: step 0 measures lambda_max only; the trace and the density follow their cadence
  after it."""
  c = tiny_config(**{"training.num_steps": 20, "eval.every_steps": 20, "curvature.every_steps": 10,
                     "curvature.num_examples": 64, "curvature.chunk_size": 32, "curvature.trace_probes": 4,
                     "curvature.trace_every": 10, "curvature.density_every": 20,
                     "curvature.density_steps": 5, "curvature.density_probes": 1,
                     "curvature.extras_at_init": False})
  training.train_and_evaluate(c, tmp_path)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  tracked = {r["step"]: r for r in records if "curv/lambda_max" in r}
  assert sorted(tracked) == [0, 10, 20]
  assert sorted(s for s, r in tracked.items() if "curv/trace" in r) == [10, 20]
  assert sorted(p.name for p in (tmp_path / "curvature").glob("step*.npz")) == ["step20_hessian_train.npz"]


def test_curvature_tracking_matches_dense_hessian(tmp_path):
  """Tracked lambda_max, lambda_min and trace at the last step equal the dense Hessian's of the final
  checkpoint on the same probe set; warm starts from the previous eigenvector need fewer products."""
  c = tiny_config(**{"training.num_steps": 30, "eval.every_steps": 15, "curvature.every_steps": 10,
                     "curvature.num_examples": 64, "curvature.chunk_size": 40, "curvature.tol": 1e-5,
                     "curvature.lambda_min": True, "curvature.trace_probes": 200,
                     "curvature.trace_every": 20, "curvature.gradient": True,
                     "curvature.save_every": 20})
  training.train_and_evaluate(c, tmp_path)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  tracked = {r["step"]: r for r in records if "curv/lambda_max" in r}
  assert sorted(tracked) == [0, 10, 20, 30]  # step 0: the initialization
  assert sorted(s for s, r in tracked.items() if "curv/trace" in r) == [0, 20, 30]  # trace_every, end
  assert sorted(p.name for p in (tmp_path / "curvature").glob("step*")) == [
      "step0_hessian_train.json", "step0_hessian_train.npz", "step20_hessian_train.json",
      "step20_hessian_train.npz", "step30_hessian_train.json",
      "step30_hessian_train.npz"]
  saved = json.loads((tmp_path / "curvature" / "step30_hessian_train.json").read_text())
  assert saved["results"]["spectrum"]["lambda_max"] == tracked[30]["curv/lambda_max"]
  assert saved["operator"]["num_examples"] == 64 and saved["operator"]["bn_mode"] == "eval"

  from jax.flatten_util import ravel_pytree

  from research import curvature

  _, ds, graphdef, state, _ = training.load_run(tmp_path)
  loss_fn, _ = curvature.model_functions(graphdef, state.model_state, preprocess=ds.preprocess)
  flat, unravel = ravel_pytree(state.params)
  batch = {"image": ds.preprocess(ds.train.images[:64]), "label": ds.train.labels[:64]}
  loss_fn_raw, _ = curvature.model_functions(graphdef, state.model_state, preprocess=lambda x: x)
  dense = np.asarray(jax.hessian(lambda w: loss_fn_raw(unravel(w), batch))(flat), np.float64)
  eig = np.linalg.eigvalsh(0.5 * (dense + dense.T))
  last = tracked[30]
  np.testing.assert_allclose(last["curv/lambda_max"], eig[-1], rtol=1e-3)
  np.testing.assert_allclose(last["curv/lambda_min"], eig[0], rtol=1e-3, atol=1e-4)
  assert abs(last["curv/trace"] - np.trace(dense)) < 4 * last["curv/trace_se"]
  assert 0.0 <= last["curv/grad_top_fraction"] <= 1.0
  assert last["curv/lambda_max_converged"] == 1.0
  assert tracked[10]["curv/products"] < tracked[0]["curv/products"]  # warm start from step 0


def test_measure_checkpoint_afterwards_equals_tracking_during_training(tmp_path):
  """`experiments.measure` on the final checkpoint of a run that tracked nothing gives the lambda_max
  another run tracked at its end (same config, same seed), writes the same record file and logs into
  posthoc.jsonl, leaving metrics.jsonl alone; bad sections and keys are one-line errors."""
  from experiments import measure

  settings = {"training.num_steps": 10, "eval.every_steps": 10, "curvature.num_examples": 48,
              "curvature.chunk_size": 48, "curvature.tol": 1e-6}
  tracked, plain = tmp_path / "tracked", tmp_path / "plain"
  training.train_and_evaluate(tiny_config(**settings, **{"curvature.at_end": True}), tracked)
  training.train_and_evaluate(tiny_config(**settings), plain)
  before = (plain / "metrics.jsonl").read_text()
  assert measure.main(["--workdir", str(plain), "--sections", "curvature",
                       "--config.curvature.num_examples=48", "--config.curvature.tol=1e-6"]) == 0
  assert (plain / "metrics.jsonl").read_text() == before
  posthoc = [json.loads(line) for line in (plain / "posthoc.jsonl").read_text().splitlines()]
  expected = [json.loads(line) for line in (tracked / "metrics.jsonl").read_text().splitlines()
              if "curv/lambda_max" in line][-1]
  assert posthoc[0]["step"] == expected["step"] == 10
  np.testing.assert_allclose(posthoc[0]["curv/lambda_max"], expected["curv/lambda_max"], rtol=1e-4)
  assert (plain / "curvature" / f"step10_hessian_train{posthoc[0]['tag']}.json").exists()
  assert posthoc[0]["tag"].startswith("_posthoc")
  from analysis import runs

  row = runs.run_row(runs.load_run(plain), [])
  assert row["curv/lambda_max"] == posthoc[0]["curv/lambda_max"]
  assert measure.main(["--workdir", str(plain), "--sections", "curvatur"]) == 2
  assert measure.main(["--workdir", str(plain), "--sections", "curvature", "--config.curvature.kk=3"]) == 2


def test_resume_accepts_a_run_made_before_newer_config_keys(tmp_path):
  """A run directory whose config.json lacks keys added to the code later (at their defaults) resumes;
  one that differs in a real setting is refused."""
  c = tiny_config(**{"training.num_steps": 6, "eval.every_steps": 6, "checkpoint_every": 3})
  training.train_and_evaluate(c, tmp_path)
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["curvature"]["trace_every"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert training.train_and_evaluate(c, tmp_path)["status"] == "done"
  changed = tiny_config(**{"training.num_steps": 6, "eval.every_steps": 6, "checkpoint_every": 3,
                           "schedule.lr": 0.5})
  with pytest.raises(UserError, match="schedule.lr"):
    training.train_and_evaluate(changed, tmp_path)
