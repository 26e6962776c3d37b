"""Loss and accuracy on a grid in parameter space: theta(c) = theta + sum_j c_j d_j (Li et al. 2018).

`scan(model, params, directions, axes, splits)` evaluates every point of the tensor-product grid
axes[0] x axes[1] x ... (one axis of coefficients per direction) on every split, and returns the mean
loss and accuracy over each split's real examples as arrays of the grid's shape (`[i, j]` is
c = (axes[0][i], axes[1][j])). `scan_1d` and `scan_2d` are the usual cases.

How it runs: the grid points are evaluated `points_per_batch` at a time, the point axis by `jax.vmap`
(theta(c) is formed inside, so memory is points_per_batch copies of the parameters and activations);
the examples stream in chunks, one jitted call per (point batch, chunk), looped in Python (on XLA:CPU
convolutions inside loop constructs are about 10x slower, see `curvature.operators._chunk_mean`).
The last point batch is padded by repeating its last point, so one compiled shape serves the whole
grid. `shard="examples"` splits each chunk's examples over the devices, `"points"` the point axis
(points_per_batch rounded up to a multiple of the device count); `jit` + `NamedSharding`. Timing is
recorded: total seconds, the first point batch (with compilation) and the steady time per evaluated
point after it.

The default points_per_batch is 1, measured in benchmarks/landscape.py: on XLA:CPU a convolution
whose kernel is vmapped becomes a grouped convolution, which was slower per point than one point at a
time (see benchmarks/README.md); on accelerators larger batches may pay.
"""

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from research.backend import xla
from research.core import losses
from research.core import mesh as mesh_lib
from research.core.errors import UserError, choices_message
from research.core.rundir import write_json_atomic
from research.curvature import operators
from research.landscape.directions import Direction
from research.landscape.model import PointModel, from_logits_fn

SHARD = ("examples", "points")
DEFAULT_POINTS_PER_BATCH = 1
METRICS = ("loss", "accuracy")


@dataclasses.dataclass(frozen=True)
class ScanResult:
  """Metrics on a grid: `values[split][metric]` has shape tuple(len(a) for a in axes)."""
  axes: tuple[np.ndarray, ...]
  values: dict[str, dict[str, np.ndarray]]
  info: dict

  def arrays(self) -> dict[str, np.ndarray]:
    """Flat arrays for an .npz: `axis_0`, `axis_1`, ..., `<split>/<metric>`."""
    out = {f"axis_{i}": a for i, a in enumerate(self.axes)}
    for split, metrics in self.values.items():
      out.update({f"{split}/{m}": v for m, v in metrics.items()})
    return out

  def to_dict(self) -> dict:
    """JSON-able: the settings (`info`) and every array as nested lists."""
    return {"info": self.info, **{k: np.asarray(v).tolist() for k, v in self.arrays().items()}}

  def save(self, path: str | Path) -> tuple[Path, Path]:
    """Writes `path`.json (settings and values) and `path`.npz (the arrays), each atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path, npz_path = path.with_suffix(".json"), path.with_suffix(".npz")
    write_json_atomic(json_path, self.to_dict())
    tmp = npz_path.with_name(f".{npz_path.stem}.tmp.npz")
    np.savez(tmp, **self.arrays(), info=np.asarray(json.dumps(self.info, default=str)))
    os.replace(tmp, npz_path)
    return json_path, npz_path

  @classmethod
  def load(cls, path: str | Path) -> "ScanResult":
    """Reads what `save` wrote (the .npz)."""
    with np.load(Path(path).with_suffix(".npz")) as z:
      axes = tuple(z[f"axis_{i}"] for i in range(sum(k.startswith("axis_") for k in z.files)))
      values: dict = {}
      for k in z.files:
        if "/" in k:
          split, metric = k.split("/", 1)
          values.setdefault(split, {})[metric] = z[k]
      return cls(axes, values, json.loads(str(z["info"])))


def as_chunks(data, chunk_size: int | None = None, *, shard: bool = True) -> operators.Chunks:
  """Chunks from `Chunks`, an (images, labels) pair or anything with `.images` and `.labels`."""
  if isinstance(data, operators.Chunks):
    return data
  if isinstance(data, tuple | list) and len(data) == 2:
    images, labels = data
  elif hasattr(data, "images") and hasattr(data, "labels"):
    images, labels = data.images, data.labels
  else:
    raise UserError(f"a split must be Chunks, an (images, labels) pair or a data Split, got "
                    f"{type(data).__name__}")
  return operators.make_chunks(np.asarray(images), np.asarray(labels), chunk_size, shard=shard)


def _direction_trees(directions, params) -> tuple[list, list[dict]]:
  trees, infos = [], []
  structure = jax.tree.structure(params)
  for d in directions:
    tree, info = (d.tree, d.info) if isinstance(d, Direction) else (d, {"type": "given"})
    if jax.tree.structure(tree) != structure:
      raise UserError("a direction's structure differs from the parameters'")
    trees.append(tree)
    infos.append(info)
  return trees, infos


def _point(params, trees, coeffs):
  """theta + sum_j c_j d_j, in each parameter's dtype."""
  def one(w, *ds):
    return w + sum(coeffs[j].astype(w.dtype) * d.astype(w.dtype) for j, d in enumerate(ds))
  return jax.tree.map(one, params, *trees)


@functools.lru_cache(maxsize=8)
def point_functions(logits: Callable, statistics: Callable, loss_name: str):
  """Jitted (stats_fn, sums_fn) over a batch of points (P, k); cached, so that repeated scans of one
  PointModel (many directions, many pairs) compile once per shape."""

  def stats_fn(params, trees, coeffs):
    return jax.vmap(lambda c: statistics(_point(params, trees, c)))(coeffs)

  def sums_fn(params, trees, coeffs, stats, chunk):
    def one(c, s):
      out = logits(_point(params, trees, c), s, chunk)
      per_example = losses.per_example_loss(loss_name, out, chunk["label"])
      mask = chunk["mask"].astype(per_example.dtype)
      correct = (jnp.argmax(out, axis=-1) == chunk["label"]).astype(per_example.dtype)
      return jnp.stack([(per_example * mask).sum(), (correct * mask).sum()])
    return jax.vmap(one)(coeffs, stats)  # (P, 2)

  return xla.jit(stats_fn), xla.jit(sums_fn)


def scan(model: PointModel | Callable, params, directions: Sequence, axes: Sequence, splits: dict, *,
         loss_name: str = "cross_entropy", points_per_batch: int = DEFAULT_POINTS_PER_BATCH,
         chunk_size: int | None = None, shard: str = "examples", info: dict | None = None) -> ScanResult:
  """Loss and accuracy of `model` at params + sum_j c_j directions[j] for c on the grid of `axes`.

  model: a `PointModel` (`point_model(graphdef, state, bn_mode=...)`) or a `logits_fn(params, batch)`.
  directions: `Direction`s or pytrees like params; axes: one 1-D array of coefficients per direction.
  splits: name -> Chunks, (images, labels) or a data Split (cut into chunks of `chunk_size`).
  """
  if shard not in SHARD:
    raise UserError(choices_message("shard axis", shard, SHARD))
  if loss_name not in losses.LOSSES:
    raise UserError(choices_message("loss", loss_name, losses.LOSSES))
  if not isinstance(points_per_batch, int | np.integer) or points_per_batch < 1:
    raise UserError(f"points_per_batch must be a positive integer, got {points_per_batch!r}")
  if not splits:
    raise UserError("no split to evaluate on; give splits as {name: (images, labels)}")
  if len(directions) != len(axes) or not directions:
    raise UserError(f"{len(directions)} directions but {len(axes)} coefficient axes; give one axis each")
  model = model if isinstance(model, PointModel) else from_logits_fn(model)
  trees, direction_infos = _direction_trees(directions, params)
  axes = tuple(np.asarray(a, np.float64).ravel() for a in axes)
  if any(a.size == 0 for a in axes):
    raise UserError("an axis of coefficients is empty")
  shape = tuple(a.size for a in axes)
  grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))  # (num_points, k)

  mesh = mesh_lib.data_mesh()
  devices = jax.device_count()
  per_batch = int(points_per_batch)
  if shard == "points":
    per_batch = -(-per_batch // devices) * devices
  chunks = {}
  for name, data in splits.items():
    c = as_chunks(data, chunk_size, shard=shard == "examples")
    if shard == "points":
      c = dataclasses.replace(c, arrays=mesh_lib.put(c.arrays, mesh_lib.replicated(mesh)))
    chunks[name] = c

  dtype = jnp.result_type(jnp.float32, *jax.tree.leaves(params))  # of the coefficients
  num_points = len(grid)
  padded = np.concatenate([grid, np.repeat(grid[-1:], -num_points % per_batch, 0)])
  stats_fn, sums_fn = point_functions(model.logits, model.statistics, loss_name)
  totals = {name: [] for name in chunks}  # per point batch, (P, 2) sums on the device
  start = time.perf_counter()
  first = None  # seconds of the first point batch (compilation included)
  for b in range(0, len(padded), per_batch):
    coeffs = jnp.asarray(padded[b:b + per_batch], dtype)
    if shard == "points":
      coeffs = mesh_lib.put(coeffs, mesh_lib.batch_sharding(mesh, 0))
    stats = stats_fn(params, trees, coeffs)
    for name, c in chunks.items():
      total = None
      for i in range(c.num_chunks):
        out = sums_fn(params, trees, coeffs, stats, jax.tree.map(lambda x, i=i: x[i], c.arrays))
        total = out if total is None else total + out
      totals[name].append(total)
    if b == 0:
      jax.block_until_ready(totals)
      first = time.perf_counter() - start
  sums = {name: np.concatenate([np.asarray(t, np.float64) for t in ts]) for name, ts in totals.items()}
  seconds = time.perf_counter() - start

  values = {}
  for name, c in chunks.items():
    mean = sums[name][:num_points] / c.num_examples
    values[name] = {"loss": mean[:, 0].reshape(shape), "accuracy": mean[:, 1].reshape(shape)}
  record = {
      "directions": direction_infos, "axes": [a.tolist() for a in axes], "grid_shape": list(shape),
      "num_points": num_points, "splits": {n: c.info() for n, c in chunks.items()}, **model.info,
      "loss": loss_name, "points_per_batch": per_batch, "shard": shard, "devices": devices,
      "dtype": str(dtype), "seconds": seconds, "seconds_per_point": seconds / num_points,
      "seconds_first_batch": first,
  }
  if len(padded) > per_batch:  # steady state: without the first batch and its compilation
    record["seconds_per_point_after_first"] = (seconds - first) / (len(padded) - per_batch)
  return ScanResult(axes, values, record | (info or {}))


def scan_1d(model, params, direction, splits: dict, *, alphas=None, **options) -> ScanResult:
  """`scan` along one direction; alphas default to 51 points in [-1, 1]."""
  alphas = np.linspace(-1.0, 1.0, 51) if alphas is None else alphas
  return scan(model, params, [direction], [alphas], splits, **options)


def scan_2d(model, params, directions: Sequence, splits: dict, *, xs=None, ys=None,
            **options) -> ScanResult:
  """`scan` on the plane of two directions; xs and ys default to 21 points in [-1, 1]."""
  if len(directions) != 2:
    raise UserError(f"scan_2d takes 2 directions, got {len(directions)}")
  xs = np.linspace(-1.0, 1.0, 21) if xs is None else xs
  ys = np.linspace(-1.0, 1.0, 21) if ys is None else ys
  return scan(model, params, list(directions), [xs, ys], splits, **options)
