"""What every measure shares: data as `Chunks`, the flattened parameters it perturbs, the record it
returns, and the checks on its settings.

Data is a batch dict (`{"image": (n, ...), "label": (n,), optional "mask": (n,)}`, or any dict of
arrays with a common leading example axis) or a `research.curvature.Chunks`; either way every loss and
accuracy is the exact mean over the real examples, streamed chunk by chunk like the curvature engine
(`operators._chunk_mean`: one jitted call per chunk from Python on CPU, where convolutions inside a
loop construct run about 10x slower).
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from research.backend import xla
from research.core.errors import UserError, choices_message
from research.curvature import operators
from research.curvature.operators import Chunks
from research.curvature.trace import check_count as check_count  # re-exported for the measures
from research.curvature.trace import key_info, to_jsonable


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One number with its own error estimate and everything needed to reproduce it.

  value: the measure in its stated units; std_error: a standard error where the measure is an estimate
  (Monte-Carlo samples, batches), NaN where there is none; settings: radius, steps, seed, examples, ...;
  details: per-restart or per-batch values, solver diagnostics.
  """
  name: str
  value: float
  std_error: float
  settings: dict
  details: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    """A JSON-able dict (`curvature/`-style record)."""
    return to_jsonable({"name": self.name, "value": float(self.value), "std_error": float(self.std_error),
                        "settings": self.settings, "details": self.details})


def as_chunks(data) -> Chunks:
  """A batch dict (one chunk, all real unless it has a `mask`) or `Chunks` as `Chunks`."""
  if isinstance(data, Chunks):
    return data
  if not isinstance(data, dict) or not data:
    raise UserError(f"data must be a batch dict of arrays or a research.curvature Chunks, got "
                    f"{type(data).__name__}")
  arrays = {k: jnp.asarray(v) for k, v in data.items()}
  first = arrays["label"] if "label" in arrays else jax.tree.leaves(arrays)[0]
  n = int(first.shape[0])
  if n == 0:
    raise UserError("no examples to measure on")
  mask = arrays.get("mask", jnp.ones((n,), jnp.float32))
  arrays["mask"] = mask
  num = int(round(float(np.asarray(mask).sum())))
  if num == 0:
    raise UserError("the batch mask selects no example")
  return Chunks({k: v[None] for k, v in arrays.items()}, num, n)


def real_examples(chunks: Chunks) -> dict:
  """The real examples of `chunks` as host arrays with one leading example axis (mask dropped)."""
  arrays = jax.tree.map(np.asarray, chunks.arrays)
  keep = arrays["mask"].reshape(-1) > 0
  return {k: v.reshape((-1,) + v.shape[2:])[keep] for k, v in arrays.items() if k != "mask"}


def batches_of(chunks: Chunks, m: int) -> list[Chunks]:
  """Consecutive batches of `m` real examples (the last one padded and masked), each as one chunk."""
  examples = real_examples(chunks)
  n = chunks.num_examples
  out = []
  for start in range(0, n, m):
    idx = np.arange(start, start + m)
    real = idx < n
    batch = {k: v[np.where(real, idx, start)] for k, v in examples.items()}
    batch["mask"] = real.astype(np.float32)
    out.append(as_chunks(batch))
  return out


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the selected leaves of a params pytree sit in the flat vector: hashable, so jitted functions
  take it as a static argument and compile once per model, whatever closure the caller built."""
  treedef: object
  keep: tuple  # (num_leaves,) bool: selected by param_filter
  shapes: tuple  # shapes of the selected leaves
  dtypes: tuple  # their dtypes

  def params_at(self, flat: jax.Array, rest: list):
    """The params pytree with the selected leaves read from `flat` and the others from `rest`."""
    selected, start = [], 0
    for shape, dtype in zip(self.shapes, self.dtypes):
      size = int(np.prod(shape))
      selected.append(flat[start:start + size].reshape(shape).astype(dtype))
      start += size
    it_sel, it_rest = iter(selected), iter(rest)
    return jax.tree_util.tree_unflatten(self.treedef, [next(it_sel) if k else next(it_rest)
                                                       for k in self.keep])


@dataclasses.dataclass(frozen=True)
class FlatParams:
  """The selected parameters as one vector `flat` (d,), the unselected leaves `rest`, and `layout`."""
  flat: jax.Array
  rest: list
  layout: Layout
  names: list

  @property
  def size(self) -> int:
    return int(self.flat.shape[0])

  def params_at(self, flat: jax.Array):
    return self.layout.params_at(flat, self.rest)


def flatten(params, param_filter: Callable[[str], bool] | None = None) -> FlatParams:
  """`params` restricted by `param_filter` (a predicate on the path name, as in research.curvature)."""
  chosen, _, names = operators.select(params, param_filter)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  keep = tuple(param_filter is None or param_filter(operators.path_name(p)) for p, _ in leaves)
  rest = [leaf for (_, leaf), k in zip(leaves, keep) if not k]
  flat = ravel_pytree(chosen)[0]
  layout = Layout(treedef, keep, tuple(tuple(x.shape) for x in chosen),
                  tuple(jnp.dtype(x.dtype) for x in chosen))
  return FlatParams(flat, rest, layout, names)


@functools.lru_cache(maxsize=128)
def _compiled(fn: Callable, static: tuple):
  def weighted(args, chunk, n):
    out = fn(*static, args, chunk)
    count = chunk["mask"].sum()
    return jax.tree.map(lambda o: (count.astype(o.dtype) / n.astype(o.dtype)) * o, out)

  return xla.jit(weighted)


_add = xla.jit(lambda a, b: jax.tree.map(jnp.add, a, b))


def mean_over(fn: Callable, *static) -> Callable:
  """`run(args, chunks) = sum_c (count_c / n) fn(*static, args, chunk_c)` (a pytree): the exact mean
  over the real examples when `fn` is a masked mean over one chunk (as `loss_fn` is).

  `fn` is a module-level function and `static` its hashable leading arguments (a `loss_fn`, a
  `Layout`, flags): the jitted function is cached on them, so repeated measurements of the same model
  compile once. One jitted call per chunk, looped over in Python (the curvature engine's CPU path, see
  `operators._chunk_mean`); `n` is an argument, so every `Chunks` of the same chunk shape (e.g. the
  batches of m-sharpness) reuses one compiled function.
  """
  one = _compiled(fn, static)

  def run(args, chunks: Chunks):
    n = jnp.asarray(chunks.num_examples, jnp.float32)
    total = None
    for c in range(chunks.num_chunks):
      out = one(args, jax.tree.map(lambda x, c=c: x[c], chunks.arrays), n)
      total = out if total is None else _add(total, out)
    return total

  return run


def chunk_loss(loss_fn: Callable, layout: Layout, args, chunk):
  """loss_fn at the parameters args = (flat, rest) on one chunk (for `mean_over`)."""
  flat, rest = args
  return loss_fn(layout.params_at(flat, rest), chunk)


def check_positive(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
      or not np.isfinite(value) or value <= 0:
    raise UserError(f"{name} must be a positive number, got {value!r}")
  return float(value)


def check_choice(what: str, value, valid) -> str:
  if value not in valid:
    raise UserError(choices_message(what, value, valid))
  return value


def std_error(samples) -> float:
  """Sample standard deviation (ddof=1) / sqrt(n); NaN for fewer than two samples."""
  s = np.asarray(samples, np.float64)
  return float(np.std(s, ddof=1) / np.sqrt(len(s))) if len(s) > 1 else float("nan")


def data_settings(chunks: Chunks, key: jax.Array | None = None, **extra) -> dict:
  """Settings every record carries: examples, chunk size, the key's seed, and `extra`."""
  out = {"num_examples": chunks.num_examples, "chunk_size": chunks.chunk_size}
  if key is not None:
    out |= key_info(key)
  return out | {k: v for k, v in extra.items() if v is not None}
