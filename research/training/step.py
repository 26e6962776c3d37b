"""The jitted train and evaluation steps: pure functions of the train state and a batch.

`make_train_step(...)` returns `train_step(state, batch) -> (state, metrics)`. A batch is a dict of
arrays with two leading axes, (chunks, chunk_size, ...): `image` uint8 (k, c, H, W, C), `label` int32
(k, c) and `mask` float32 (k, c) (1 for real examples, 0 for padding). The gradient is that of the mean
loss over the real examples of the whole batch, summed exactly over the chunks in a `lax.scan`, so one
step may cover a large batch or the whole training set (full-batch gradient descent) in constant
memory. In train mode BatchNorm uses each chunk's statistics and updates its running averages chunk by
chunk; dropout draws from the model's RNG stream, which is part of the state.

SAM (`research.training.sam`): with `micro_batch == 0` the ascent vector comes from the whole batch's
gradient (two accumulation passes); with `micro_batch = m` the batch is cut into chunks of m examples
and each chunk gets its own ascent vector (m-sharpness). `bn_update` chooses which pass's BatchNorm
statistics are kept: `clean` (at w) or `perturbed` (at w + e, as in the SAM authors' code).

Metrics of a step: `loss` and `accuracy` (at w, before the update, over the batch), `grad_norm` (of
the mean gradient, before clipping), `param_norm` (after the update), `update_norm`, `lr`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.backend import xla
from research.core import losses
from research.data import transforms
from research.models.functional import set_modes
from research.training import sam
from research.training.state import TrainState


def forward(graphdef, params, model_state, images, *, train: bool):
  """(logits, new model_state): train mode uses batch statistics and dropout, eval mode neither."""
  model = nnx.merge(graphdef, params, model_state, copy=True)
  set_modes(model, use_running_average=not train, deterministic=not train)
  logits = model(images)
  _, _, new_state = nnx.split(model, nnx.Param, ...)
  return logits, new_state


def make_train_step(graphdef, optimizer: optax.GradientTransformation, schedule: Callable, *,
                    loss_name: str, label_smoothing: float, preprocess: Callable, augment_key: jax.Array,
                    crop_padding: int = 0, flip: bool = False, sam_rho: float = 0.0,
                    sam_adaptive: bool = False, sam_eta: float = 0.01, sam_micro_batch: int = 0,
                    sam_bn_update: str = "perturbed") -> Callable:
  """`train_step(state, batch) -> (state, metrics)`, to be jitted with the state donated."""

  def chunk_loss(params, model_state, chunk, key):
    images = preprocess(chunk["image"])
    if crop_padding or flip:
      images = transforms.augment(key, images, crop_padding=crop_padding, flip=flip)
    logits, new_state = forward(graphdef, params, model_state, images, train=True)
    per_example = losses.per_example_loss(loss_name, logits, chunk["label"], label_smoothing)
    mask = chunk["mask"]
    correct = ((jnp.argmax(logits, -1) == chunk["label"]) * mask).sum()
    return (per_example * mask).sum(), (new_state, correct)

  value_and_grad = jax.value_and_grad(chunk_loss, has_aux=True)

  def chunk_grad(params, model_state, chunk, key):
    """Sum-loss, its gradient, the new model state and the correct count for one chunk."""
    (loss, (new_state, correct)), grads = value_and_grad(params, model_state, chunk, key)
    if sam_rho > 0 and sam_micro_batch > 0:  # m-sharpness: this chunk's own ascent vector
      e = sam.perturbation(grads, params, rho=sam_rho, adaptive=sam_adaptive, eta=sam_eta)
      shifted = jax.tree.map(jnp.add, params, e)
      (_, (perturbed_state, _)), grads = value_and_grad(shifted, model_state, chunk, key)
      new_state = perturbed_state if sam_bn_update == "perturbed" else new_state
    return loss, grads, new_state, correct

  def accumulate(params, model_state, batch, step):
    """Sums of loss, gradient and correct predictions over the chunks, threading the model state."""
    num_chunks = batch["label"].shape[0]

    def body(carry, i):
      grads_sum, model_state, loss_sum, correct_sum = carry
      chunk = jax.tree.map(lambda x: x[i], batch)
      key = jax.random.fold_in(jax.random.fold_in(augment_key, step), i)
      loss, grads, model_state, correct = chunk_grad(params, model_state, chunk, key)
      grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
      return (grads_sum, model_state, loss_sum + loss, correct_sum + correct), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (zeros, model_state, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    if num_chunks == 1:
      carry, _ = body(init, 0)
    else:
      # XLA:CPU runs convolutions inside loops about 10x slower (research/curvature/operators.py): up to
      # 16 chunks are unrolled there; more (e.g. full-batch GD on a large set) stay a loop.
      unroll = num_chunks if (xla.on_cpu() and num_chunks <= 16) else 1
      carry, _ = jax.lax.scan(body, init, jnp.arange(num_chunks), unroll=unroll)
    return carry

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    count = batch["mask"].sum()
    grads, model_state, loss_sum, correct = accumulate(state.params, state.model_state, batch,
                                                       state.step)
    if sam_rho > 0 and sam_micro_batch == 0:  # SAM on the whole batch: a second pass at w + e
      mean_grads = jax.tree.map(lambda g: g / count, grads)
      e = sam.perturbation(mean_grads, state.params, rho=sam_rho, adaptive=sam_adaptive, eta=sam_eta)
      shifted = jax.tree.map(jnp.add, state.params, e)
      grads, perturbed_state, _, _ = accumulate(shifted, state.model_state, batch, state.step)
      if sam_bn_update == "perturbed":
        model_state = perturbed_state
    grads = jax.tree.map(lambda g: g / count, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss_sum / count,
        "accuracy": correct / count,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(params),
        "update_norm": optax.global_norm(updates),
        "lr": jnp.asarray(schedule(state.step), jnp.float32),
    }
    new_state = TrainState(step=state.step + 1, params=params, model_state=model_state,
                           opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(graphdef, *, loss_name: str, num_classes: int, preprocess: Callable) -> Callable:
  """`eval_step(params, model_state, batch) -> sums` over one (n, ...) batch with a `mask`.

  Sums: `loss` (unsmoothed per-example losses), `correct`, `count`, and per class `class_correct`,
  `class_count` (num_classes,). Running BatchNorm statistics, no dropout, no augmentation.
  """

  def eval_step(params, model_state, batch):
    logits, _ = forward(graphdef, params, model_state, preprocess(batch["image"]), train=False)
    mask, labels = batch["mask"], batch["label"]
    per_example = losses.per_example_loss(loss_name, logits, labels)
    right = (jnp.argmax(logits, -1) == labels) * mask
    onehot = jax.nn.one_hot(labels, num_classes) * mask[:, None]
    return {
        "loss": (per_example * mask).sum(),
        "correct": right.sum(),
        "count": mask.sum(),
        "class_correct": (onehot * right[:, None]).sum(0),
        "class_count": onehot.sum(0),
    }

  return eval_step
