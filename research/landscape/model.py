"""What a landscape scan evaluates at one point of parameter space, with its BatchNorm handling.

A `PointModel` is two pure functions: `statistics(params) -> stats` and
`logits(params, stats, batch) -> (n, C)`. Moving the weights moves the distribution of every
BatchNorm layer's input, so the running statistics stored with a checkpoint fit only the checkpoint
itself. Three modes, recorded in every result:

- `"eval"`: the stored running statistics at every point (what `curvature.model_functions` does);
- `"batch"`: each evaluation chunk normalized with its own statistics (chunk size matters);
- `"recompute"`: at every point the statistics are recomputed from a few fixed batches of
  `stats_images` with the model in training mode, then the point is evaluated in eval mode with
  them. Per BatchNorm layer the result is the mean over the batches of the batch mean and of the batch
  (biased) variance, each layer seeing its input normalized with batch statistics, as in training:
  what PyTorch's `update_bn` (cumulative average, momentum None) computes for SWA. Implemented with
  momentum 0 per batch, so one batch's update is exactly its batch statistics.

`from_logits_fn(logits_fn)` wraps a user's own `logits_fn(params, batch)` (no BatchNorm handling).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.core.errors import UserError, choices_message
from research.curvature import operators
from research.data import transforms
from research.models.functional import set_modes

BN_MODES = ("eval", "batch", "recompute")


@dataclasses.dataclass(frozen=True)
class PointModel:
  """`logits(params, stats, batch)` with `stats = statistics(params)` (None unless recomputed)."""
  logits: Callable
  statistics: Callable
  bn_mode: str
  info: dict


def _batchnorms(model: nnx.Module) -> list[nnx.BatchNorm]:
  return [m for _, m in model.iter_modules() if isinstance(m, nnx.BatchNorm)]


def recompute_statistics(graphdef, params, model_state, image_batches: jax.Array, *,
                         preprocess: Callable) -> nnx.State:
  """Every BatchNorm's running mean and variance recomputed at `params` (the `nnx.BatchStat` state).

  image_batches: (num_batches, batch_size, H, W, C) raw images (preprocessed here); model_state: the
  non-parameter part of `research.models.split`. Pure and jit-able. `nnx.merge_state(model_state,
  stats)` is the full model state with the new statistics.
  """
  per_batch = []
  for b in range(image_batches.shape[0]):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    set_modes(model, use_running_average=False, deterministic=True)
    for bn in _batchnorms(model):
      bn.momentum = 0.0  # the running statistics become this batch's statistics
    model(preprocess(image_batches[b]))
    per_batch.append(nnx.state(model, nnx.BatchStat))
  return jax.tree.map(lambda *xs: sum(xs) / len(xs), *per_batch)


def point_model(graphdef, model_state, *, bn_mode: str = "eval", preprocess: Callable | None = None,
                stats_images: np.ndarray | None = None, stats_batch_size: int = 256) -> PointModel:
  """A PointModel for an NNX model split into graphdef, params and `model_state`.

  preprocess: uint8 images -> model input (default [0, 1] scaling; pass `Dataset.preprocess`).
  stats_images: (n, H, W, C) images for `"recompute"`, cut into floor(n / stats_batch_size) batches
  of `stats_batch_size` (the remainder is dropped; the batch size is part of the definition).
  """
  if bn_mode not in BN_MODES:
    raise UserError(choices_message("BatchNorm mode", bn_mode, BN_MODES))
  preprocess = preprocess or (lambda x: transforms.normalize(x, 0.0, 1.0, "unit"))
  if bn_mode != "recompute":
    logits_fn = operators.model_functions(graphdef, model_state, bn_mode=bn_mode, preprocess=preprocess)[1]
    return PointModel(lambda params, stats, batch: logits_fn(params, batch), lambda params: None,
                      bn_mode, {"bn_mode": bn_mode})
  if stats_images is None:
    raise UserError("BatchNorm mode 'recompute' needs stats_images (e.g. training images)")
  num_stats = len(jax.tree.leaves(nnx.filter_state(model_state, nnx.BatchStat)))
  if num_stats == 0:
    raise UserError("BatchNorm mode 'recompute' asked of a model without BatchNorm layers; use 'eval'")
  if stats_batch_size < 1 or len(stats_images) < stats_batch_size:
    raise UserError(f"stats_images has {len(stats_images)} images, fewer than one batch of "
                    f"stats_batch_size={stats_batch_size}")
  num_batches = len(stats_images) // stats_batch_size
  batches = jnp.asarray(np.asarray(stats_images)[: num_batches * stats_batch_size].reshape(
      (num_batches, stats_batch_size) + np.shape(stats_images)[1:]))

  def statistics(params):
    return recompute_statistics(graphdef, params, model_state, batches, preprocess=preprocess)

  def logits(params, stats, batch):
    state = nnx.merge_state(model_state, stats)
    return operators.model_functions(graphdef, state, bn_mode="eval", preprocess=preprocess)[1](params, batch)

  return PointModel(logits, statistics, bn_mode, {"bn_mode": bn_mode, "stats_batches": num_batches,
                                                  "stats_batch_size": stats_batch_size})


def from_logits_fn(logits_fn: Callable, *, bn_mode: str = "as given") -> PointModel:
  """A PointModel from a plain `logits_fn(params, batch)`; `bn_mode` is only recorded."""
  return PointModel(lambda params, stats, batch: logits_fn(params, batch), lambda params: None, bn_mode,
                    {"bn_mode": bn_mode})
