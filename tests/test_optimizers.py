"""Optimizers, schedules and losses against hand-computed numbers.

Optimizer steps run on a quadratic f(w) = 0.5 w^T A w - b^T w over a params dict {"v": (3,), "m": (2, 2)}
(w = concat(v, m.ravel())), the gradient A w - b taken in NumPy, and are compared with the update rules
written out in float64 NumPy.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.core import losses
from research.core.errors import UserError
from research.training import optimizers, schedules

_RNG = np.random.default_rng(0)
_M = _RNG.normal(size=(7, 7))
A = _M @ _M.T / 7 + np.eye(7)  # symmetric positive definite
B = _RNG.normal(size=7)
W0 = np.array([0.5, -1.0, 0.25, 1.5, -0.5, 0.75, -0.25])
LR = 0.1


def _tree(w, dtype=jnp.float32):
  return {"v": jnp.asarray(w[:3], dtype), "m": jnp.asarray(w[3:].reshape(2, 2), dtype)}


def _flat(tree):
  return np.concatenate([np.asarray(tree["v"]).ravel(), np.asarray(tree["m"]).ravel()]).astype(np.float64)


def _grad(w):
  return A @ w - B


def _run(schedule=LR, steps=2, x64=False, **overrides):
  """[w after step 1, w after step 2, ...] from make_optimizer on the quadratic, float32 or float64."""
  cfg = optimizers.default_optimizer_config()
  cfg.update(overrides)
  opt = optimizers.make_optimizer(cfg, schedule)
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    params = _tree(W0, dtype)
    state = opt.init(params)
    out = []
    for _ in range(steps):
      grads = _tree(_grad(_flat(params)), dtype)  # A w - b, in NumPy
      updates, state = opt.update(grads, state, params)
      params = optax.apply_updates(params, updates)
      out.append(_flat(params))
  return out


def _close(actual, expected):
  np.testing.assert_allclose(np.stack(actual), np.stack(expected), rtol=1e-6, atol=1e-6)


def _momentum_reference(transform_grad=lambda g, w: g, lrs=(LR, LR), nesterov=False, decoupled=0.0, m=0.9):
  """PyTorch SGD: v = m v + g; w -= lr * (g + m v if nesterov else v); decoupled: w -= lr * wd * w."""
  w, v, out = W0.copy(), np.zeros(7), []
  for lr in lrs:
    g = transform_grad(_grad(w), w)
    v = m * v + g
    w = w - lr * (g + m * v if nesterov else v) - lr * decoupled * w
    out.append(w)
  return out


def _adam_reference(decoupled=0.0, b1=0.9, b2=0.999, eps=1e-8):
  """Kingma & Ba 2015 with bias correction; AdamW's decay -lr * wd * w (Loshchilov & Hutter 2019)."""
  w, m, v, out = W0.copy(), np.zeros(7), np.zeros(7), []
  for t in (1, 2):
    g = _grad(w)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
    w = w - LR * ((m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + decoupled * w)
    out.append(w)
  return out


def test_sgd():
  w1 = W0 - LR * _grad(W0)
  _close(_run(name="sgd"), [w1, w1 - LR * _grad(w1)])


def test_momentum_is_pytorch_heavy_ball():
  _close(_run(name="momentum"), _momentum_reference())
  # written out: v1 = g0, w1 = w0 - lr g0; v2 = 0.9 g0 + g1, w2 = w1 - lr v2
  w1 = W0 - LR * _grad(W0)
  np.testing.assert_allclose(_momentum_reference()[1], w1 - LR * (0.9 * _grad(W0) + _grad(w1)))


def test_nesterov_is_pytorch_nesterov():
  _close(_run(name="nesterov"), _momentum_reference(nesterov=True))


def test_adam():
  # Optax computes the bias correction 1 - b2^t in the parameter dtype: in float32, 1 - 0.999^2 loses
  # ~2e-5 relative to cancellation (PyTorch uses a Python float), so the rule is checked in float64.
  _close(_run(name="adam", x64=True), _adam_reference())
  np.testing.assert_allclose(np.stack(_run(name="adam")), np.stack(_adam_reference()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name, decoupled", [("adamw", False), ("adam", True)])
def test_adamw_and_adam_with_decoupled_decay(name, decoupled):
  actual = _run(name=name, weight_decay=0.1, decoupled_weight_decay=decoupled, x64=True)
  _close(actual, _adam_reference(decoupled=0.1))


def test_rmsprop_eps_outside_sqrt():
  w, v, out = W0.copy(), np.zeros(7), []
  for _ in range(2):
    g = _grad(w)
    v = 0.999 * v + 0.001 * g**2
    w = w - LR * g / (np.sqrt(v) + 1e-8)
    out.append(w)
  _close(_run(name="rmsprop"), out)


def test_adagrad_accumulator_starts_at_zero():
  w, s, out = W0.copy(), np.zeros(7), []
  for _ in range(2):
    g = _grad(w)
    s = s + g**2
    w = w - LR * g / np.sqrt(s + 1e-8)
    out.append(w)
  _close(_run(name="adagrad"), out)


def test_lion_with_its_decoupled_decay():
  w, m, out = W0.copy(), np.zeros(7), []
  for _ in range(2):  # Chen et al. 2023, Algorithm 2
    g = _grad(w)
    w = w - LR * (np.sign(0.9 * m + 0.1 * g) + 0.1 * w)
    m = 0.999 * m + 0.001 * g
    out.append(w)
  _close(_run(name="lion", weight_decay=0.1), out)


def test_coupled_weight_decay_is_added_to_the_gradient():
  expected = _momentum_reference(lambda g, w: g + 0.1 * w)
  _close(_run(name="momentum", weight_decay=0.1), expected)


def test_decoupled_weight_decay_uses_the_scheduled_lr():
  schedule = optax.linear_schedule(0.1, 0.05, 2)  # lr 0.1 at step 0, 0.075 at step 1
  expected = _momentum_reference(lrs=(0.1, 0.075), decoupled=0.1)
  _close(_run(schedule, name="momentum", weight_decay=0.1, decoupled_weight_decay=True), expected)
  coupled = _run(schedule, name="momentum", weight_decay=0.1)
  assert np.abs(coupled[1] - expected[1]).max() > 1e-3  # the two conventions really differ


def test_l1_adds_sign_of_weights():
  w1 = W0 - LR * (_grad(W0) + 0.05 * np.sign(W0))
  _close(_run(name="sgd", l1=0.05, steps=1), [w1])


def test_clipping_acts_on_the_raw_gradient_before_l1_and_decay():
  clip = 0.5
  assert np.linalg.norm(_grad(W0)) > clip

  def transform(g, w):
    g = g * min(1.0, clip / np.linalg.norm(g))
    return g + 0.05 * np.sign(w) + 0.1 * w

  expected = _momentum_reference(transform)
  _close(_run(name="momentum", grad_clip_norm=clip, l1=0.05, weight_decay=0.1), expected)


def test_no_bias_norm_mask_skips_1d_parameters():
  matrix = np.array([0, 0, 0, 1, 1, 1, 1.0])  # "v" is (3,), "m" is (2, 2)
  expected = _momentum_reference(lambda g, w: g + matrix * (0.1 * w + 0.05 * np.sign(w)))
  _close(_run(name="momentum", weight_decay=0.1, l1=0.05, weight_decay_mask="no_bias_norm"), expected)


@pytest.mark.parametrize("name", optimizers.OPTIMIZERS)
def test_every_optimizer_takes_a_finite_descent_step(name):
  (w1,) = _run(1e-3, name=name, steps=1, weight_decay=1e-3, l1=1e-4, grad_clip_norm=10.0,
               weight_decay_mask="no_bias_norm", decoupled_weight_decay=True)
  assert np.all(np.isfinite(w1)) and np.any(w1 != W0)
  f = lambda w: 0.5 * w @ A @ w - B @ w
  assert f(w1) < f(W0)


# Schedules: lr 0.1 unless stated, values at chosen steps computed by hand.
@pytest.mark.parametrize("overrides, total, per_epoch, expected", [
    (dict(name="constant"), 100, 10, {0: 0.1, 1000: 0.1}),
    (dict(name="step"), 100, 1, {0: 0.1, 49: 0.1, 50: 0.01, 74: 0.01, 75: 0.001, 100: 0.001}),
    # 100 steps of 7 per epoch = 14.29 epochs: 0.5 -> epoch round(7.14) = 7 = step 49,
    # 0.75 -> epoch round(10.71) = 11 = step 77
    (dict(name="step"), 100, 7, {48: 0.1, 49: 0.01, 76: 0.01, 77: 0.001}),
    # both boundaries round to step 2: the decays multiply
    (dict(name="step", boundaries=(0.5, 0.6)), 4, 1, {1: 0.1, 2: 0.001, 4: 0.001}),
    # 0.1 * (0.9 * 0.5 * (1 + cos(pi t / 100)) + 0.1): t=25 -> 0.1 * (0.9 * 0.853553 + 0.1)
    (dict(name="cosine", final_lr_fraction=0.1), 100, 10,
     {0: 0.1, 25: 0.0868198052, 50: 0.055, 100: 0.01, 150: 0.01}),
    (dict(name="warmup_cosine", warmup_steps=10, final_lr_fraction=0.1), 110, 10,
     {0: 0.0, 5: 0.05, 10: 0.1, 35: 0.0868198052, 60: 0.055, 110: 0.01}),
    (dict(name="warmup_cosine", warmup_steps=0), 100, 10, {0: 0.1, 50: 0.05, 100: 0.0}),
    (dict(name="linear", final_lr_fraction=0.2), 100, 10, {0: 0.1, 25: 0.08, 50: 0.06, 100: 0.02, 120: 0.02}),
    # start 0.1 / 25 = 0.004, peak 0.1 at 0.3 * 100, end 0.004 / 1e4 = 4e-7; cosine midpoints at 15 and 65
    (dict(name="one_cycle"), 100, 10, {0: 0.004, 15: 0.052, 30: 0.1, 65: 0.0500002, 100: 4e-7}),
])
def test_schedule_values(overrides, total, per_epoch, expected):
  cfg = schedules.default_schedule_config()
  cfg.update(overrides)
  schedule = schedules.make_schedule(cfg, total_steps=total, steps_per_epoch=per_epoch)
  actual = {step: float(schedule(step)) for step in expected}
  np.testing.assert_allclose(list(actual.values()), list(expected.values()), rtol=1e-6, atol=1e-9)


def test_defaults_have_every_documented_field():
  assert set(schedules.default_schedule_config()) == {
      "name", "lr", "warmup_steps", "boundaries", "decay_factor", "final_lr_fraction", "pct_start",
      "div_factor", "final_div_factor"}
  assert set(optimizers.default_optimizer_config()) == {
      "name", "momentum", "b1", "b2", "eps", "weight_decay", "decoupled_weight_decay", "l1",
      "grad_clip_norm", "weight_decay_mask"}
  for name in schedules.SCHEDULES:
    cfg = schedules.default_schedule_config()
    cfg.name, cfg.warmup_steps = name, 5
    assert np.isfinite(float(schedules.make_schedule(cfg, total_steps=20, steps_per_epoch=4)(7)))


# Losses on logits [[1, 2, 3], [0, 0, 0]], labels [2, 1].
LOGITS = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
LABELS = np.array([2, 1])
LSE = math.log(math.e + math.e**2 + math.e**3)  # 3.40760596


@pytest.mark.parametrize("name, smoothing, per_example", [
    ("cross_entropy", 0.0, [LSE - 3, math.log(3)]),  # [0.40760596, 1.09861229]
    # targets 0.7 one_hot + 0.1: [0.1, 0.1, 0.8] . [1, 2, 3] = 2.7; uniform logits give log 3 regardless
    ("cross_entropy", 0.3, [LSE - 2.7, math.log(3)]),
    ("mse", 0.0, [0.5 * (1 + 4 + 4), 0.5 * 1]),  # logits - one_hot: [1, 2, 2], [0, -1, 0]
])
def test_losses_by_hand(name, smoothing, per_example):
  logits, labels = jnp.asarray(LOGITS, jnp.float32), jnp.asarray(LABELS)
  values = losses.per_example_loss(name, logits, labels, smoothing)
  np.testing.assert_allclose(values, per_example, rtol=1e-6)
  scalar = losses.get_loss(name, smoothing)(logits, labels)
  np.testing.assert_allclose(scalar, np.mean(per_example), rtol=1e-6)
  np.testing.assert_allclose(values.mean(), scalar, rtol=1e-7)
  if name == "cross_entropy":
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, smoothing), scalar, rtol=1e-7)
  else:
    np.testing.assert_allclose(losses.mse(logits, labels), scalar, rtol=1e-7)
  low = logits.astype(jnp.bfloat16)  # the values are exactly representable
  assert losses.per_example_loss(name, low, labels, smoothing).dtype == jnp.float32
  assert losses.get_loss(name, smoothing)(low, labels).dtype == jnp.float32
  np.testing.assert_allclose(losses.get_loss(name, smoothing)(low, labels), scalar, rtol=1e-6)


def test_accuracy_and_jit():
  logits, labels = jnp.asarray(LOGITS, jnp.float32), jnp.asarray(LABELS)
  assert float(losses.accuracy(logits, labels)) == 0.5  # argmax of [0, 0, 0] is 0, not 1
  np.testing.assert_allclose(jax.jit(losses.get_loss("cross_entropy", 0.3))(logits, labels),
                             (LSE - 2.7 + math.log(3)) / 2, rtol=1e-6)


def _schedule(name):
  cfg = schedules.default_schedule_config()
  cfg.name = name
  return schedules.make_schedule(cfg, total_steps=10, steps_per_epoch=1)


def _optimizer(**overrides):
  cfg = optimizers.default_optimizer_config()
  cfg.update(overrides)
  return optimizers.make_optimizer(cfg, 0.1)


@pytest.mark.parametrize("build, valid", [
    (lambda: _optimizer(name="adamax"), optimizers.OPTIMIZERS),
    (lambda: _optimizer(weight_decay_mask="biases"), optimizers.WEIGHT_DECAY_MASKS),
    (lambda: _schedule("exponential"), schedules.SCHEDULES),
    (lambda: losses.get_loss("hinge"), losses.LOSSES),
    (lambda: losses.per_example_loss("hinge", jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32)), losses.LOSSES),
])
def test_unknown_names_are_one_line_user_errors(build, valid):
  with pytest.raises(UserError) as info:
    build()
  message = str(info.value)
  assert "\n" not in message and message.startswith("unknown ")
  assert all(name in message for name in valid)


def test_bad_values_are_user_errors():
  with pytest.raises(UserError, match="label_smoothing"):
    losses.get_loss("mse", 0.1)
  cfg = schedules.default_schedule_config()
  cfg.name, cfg.warmup_steps = "warmup_cosine", 10
  with pytest.raises(UserError, match="warmup_steps"):
    schedules.make_schedule(cfg, total_steps=10, steps_per_epoch=1)
