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
