"""Data parallelism with `jax.jit` + `Mesh` + `NamedSharding` (STYLE.md 7): the batch is split over a
1-D `data` mesh axis of all devices, parameters and optimizer state are replicated. The same code runs
on one device or many (and, after `jax.distributed.initialize()`, on many hosts)."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def data_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Shards axis `axis` of an array over the devices (the example axis of a batch)."""
  return NamedSharding(mesh, PartitionSpec(*([None] * axis), "data"))


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key)


def put(tree, sharding: NamedSharding):
  """The arrays of `tree` (host or device values, the same on every process) placed with `sharding`.

  One process: `jax.device_put`. Several: every process builds the global array from its own copy
  (`jax.make_array_from_callback` asks it for its devices' slices only), with no collective and no
  check that the copies agree; arrays already placed with `sharding` are returned as they are. Typed
  PRNG keys keep their type.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
      raise ValueError(f"an array placed with {x.sharding} cannot be re-placed on {sharding} here")
    if _is_key(x):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(one, tree)


def to_host(x) -> np.ndarray:
  """The whole value of an array as NumPy on this process: an array split over several processes' devices
  (e.g. per-example outputs) is gathered from all of them (a collective: every process must call it)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def global_batch(images: np.ndarray, labels: np.ndarray, index: np.ndarray, mask: np.ndarray,
                 sharding: NamedSharding) -> dict:
  """{"image", "label" (int32), "mask" (float32)} of the examples `index` of (images, labels), placed
  with `sharding`: `index` and `mask` have the batch's layout S (e.g. (batch,) or (num_chunks, chunk);
  `mask` 1 for real examples, 0 for padding), and `sharding` splits one axis of S over the devices.

  Each process gathers only the examples of its own devices (`jax.make_array_from_callback` asks each
  process for its devices' slices), so the processes of a multi-process run, given the same `index` from
  the same seeded order, build one global batch: the single-process one. With one process this equals
  `jax.device_put(batch, sharding)`.
  """
  rank = index.ndim

  def put(shape, gather):
    return jax.make_array_from_callback(shape, sharding, lambda slices: gather(tuple(slices)[:rank]))

  return {"image": put(index.shape + images.shape[1:], lambda s: images[index[s]]),
          "label": put(index.shape, lambda s: labels[index[s]].astype(np.int32)),
          "mask": put(index.shape, lambda s: np.asarray(mask[s], np.float32))}
