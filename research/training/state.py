"""The train state: one pytree holding everything a run needs to continue exactly.

`TrainState(step, params, model_state, opt_state)`: `params` are the model's `nnx.Param` leaves,
`model_state` the rest of the model (BatchNorm running statistics, the dropout RNG stream), `opt_state`
Optax's state. Data order and augmentation are functions of (seed, step), so `step` is the only data
position to keep. This pytree is what the train step takes and returns (donated), what is sharded and
what is checkpointed.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct


@struct.dataclass
class TrainState:
  step: jax.Array  # () int32, the number of optimizer steps taken
  params: Any  # nnx.State of nnx.Param
  model_state: Any  # nnx.State: BatchNorm statistics, RNG streams
  opt_state: Any


def create(model: nnx.Module, optimizer) -> tuple[Any, TrainState]:
  """(graphdef, state at step 0) for `model` (built with its seed) and an Optax `optimizer`."""
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                              opt_state=optimizer.init(params))


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_leaves(state: TrainState) -> list:
  """The state as a flat list of plain arrays (typed PRNG keys as their raw data), for Orbax."""
  return [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(state)]


def from_leaves(template: TrainState, leaves: list) -> TrainState:
  """Inverse of `to_leaves`, with the structure, key types and shardings of `template`."""
  old, treedef = jax.tree.flatten(template)
  if len(old) != len(leaves):
    raise ValueError(f"checkpoint has {len(leaves)} arrays, this run's state has {len(old)}")
  new = []
  for o, x in zip(old, leaves):
    if _is_key(o):
      x = jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(o))
    elif tuple(x.shape) != tuple(o.shape) or x.dtype != o.dtype:
      raise ValueError(f"checkpoint array {x.shape} {x.dtype} does not match {o.shape} {o.dtype}")
    sharding = getattr(o, "sharding", None)
    new.append(jax.device_put(x, sharding) if sharding is not None else jnp.asarray(x))
  return jax.tree.unflatten(treedef, new)


def abstract_leaves(state: TrainState) -> list:
  """Templates (numpy zeros) for restoring `to_leaves(state)`."""
  return [np.zeros(x.shape, x.dtype) for x in to_leaves(state)]
