"""Curvature operators over whole datasets: Hessian, GGN, Fisher, empirical Fisher, gradient covariance.

All of them see pure functions and a params pytree (STYLE.md 3). `model_functions` builds them from an
NNX model with an explicit BatchNorm mode (`eval`: running statistics, the default; `batch`: each
chunk's own statistics, never written back, so the chunk size is part of the definition: every chunk is
a ghost batch, the operator is the mean over chunks of the Hessian of each chunk's batch-statistics loss,
and its info records `ghost_batch_size`). BatchNorm statistics do not see the mask, so in `batch` mode the
number of examples must be a multiple of the chunk size (no padded chunk; a `UserError` otherwise).
Dropout and augmentation are off.

Data is given as `Chunks`: arrays with leading axes (num_chunks, chunk_size) and a `mask` (1 for real
examples, 0 for the padding of the last chunk). Every operator is the exact mean over the real
examples: chunk c contributes (its example count / total count) times its own mean, so a ragged last
chunk is weighted right. Products stream over the chunks in a `lax.scan` inside one jitted function,
so activation memory is that of one chunk whatever the dataset size; the example axis of each chunk is
sharded over all devices (`jit` + `NamedSharding`), parameters and vectors are replicated.

Vectors live in the flattened parameter space (`ravel_pytree` order) of the selected parameters:
`param_filter` (a predicate on the parameter path, e.g. `lambda p: "blocks.0" in p`) restricts an
operator to one layer or block (the diagonal block of the full matrix), for per-layer spectra.

Definitions (n examples, logits z_i = f(w, x_i), J_i = dz_i/dw, per-example loss l_i):
- Hessian: H = (1/n) sum_i d^2 l_i / dw^2, products by forward-over-reverse (jvp of grad).
- GGN: G = (1/n) sum_i J_i^T (d^2 l_i / dz^2) J_i; the output Hessian is diag(p) - p p^T for
  cross-entropy (p = softmax(z)) and the identity for the square loss 0.5 ||z - y||^2.
- Fisher (true): F = (1/n) sum_i J_i^T r_i r_i^T J_i with r_i = p_i - onehot(y~_i), y~_i ~ p_i sampled
  with an explicit key (square loss: r_i ~ N(0, I)); its expectation over the labels is the GGN.
- Empirical Fisher: the same with the true labels y_i; gradient covariance: empirical Fisher - g g^T
  (g the mean gradient), whose trace over |g|^2 is the gradient noise scale B_simple.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding

from research.backend import xla
from research.core import losses
from research.core import mesh as mesh_lib
from research.core.errors import UserError, choices_message
from research.curvature.linear_operator import LinearOperator
from research.data import batching, transforms
from research.models.functional import BN_MODES, set_modes

OUTPUT_LOSSES = ("cross_entropy", "mse")


@dataclasses.dataclass(frozen=True)
class Chunks:
  """Arrays (num_chunks, chunk_size, ...) with a `mask`; `num_examples` real examples."""
  arrays: dict
  num_examples: int
  chunk_size: int

  @property
  def num_chunks(self) -> int:
    return self.arrays["mask"].shape[0]

  def info(self) -> dict:
    return {"num_examples": self.num_examples, "chunk_size": self.chunk_size}


def make_chunks(images: np.ndarray, labels: np.ndarray, chunk_size: int | None = None, *,
                shard: bool = True) -> Chunks:
  """(n, H, W, C) images and (n,) labels cut into chunks of `chunk_size` (default: one chunk)."""
  n = len(labels)
  if n == 0:
    raise UserError("no examples to measure on")
  chunk = min(chunk_size or n, n)
  devices = jax.device_count()
  chunk = -(-chunk // devices) * devices if shard else chunk  # a multiple of the device count
  if shard:  # each process places its devices' share of every chunk only
    index, mask = batching.chunk_indices(n, chunk)
    arrays = mesh_lib.global_batch(images, labels, index, mask,
                                   mesh_lib.batch_sharding(mesh_lib.data_mesh(), axis=1))
  else:
    arrays = batching.padded_chunks(images, labels, chunk)
  return Chunks(arrays, n, chunk)


def first_examples(split, num_examples: int, chunk_size: int = 0) -> Chunks:
  """The first `num_examples` examples of a data split (0: all) as `Chunks` of `chunk_size` (0: one
  chunk): the fixed probe set of the in-training evaluators."""
  n = len(split) if num_examples == 0 else min(num_examples, len(split))
  return make_chunks(split.images[:n], split.labels[:n], chunk_size or n)


def input_statistics(dataset) -> dict:
  """`dataset.input_statistics()` on the data mesh, replicated: for a loss function that takes them as an
  argument (`dataset.preprocess_with(tree["inputs"], images)`) instead of holding them as constants, so
  that its compiled products do not depend on the training split, and a sweep's seeds share them
  through the persistent compilation cache."""
  return mesh_lib.put(dataset.input_statistics(), mesh_lib.replicated(mesh_lib.data_mesh()))


def model_functions(graphdef, model_state, *, bn_mode: str = "eval", preprocess: Callable | None = None,
                    loss_name: str = "cross_entropy"):
  """(loss_fn, logits_fn) for a model split into graphdef, params and the rest (`model_state`).

  `logits_fn(params, batch) -> (n, C)` (float32 or wider); `loss_fn(params, batch) -> scalar`, the mean of the
  per-example loss over the batch's real examples (`batch["mask"]`, all ones if absent).
  """
  if bn_mode not in BN_MODES:
    raise UserError(choices_message("BatchNorm mode", bn_mode, BN_MODES))
  if loss_name not in OUTPUT_LOSSES:
    raise UserError(choices_message("loss", loss_name, OUTPUT_LOSSES))
  preprocess = preprocess or (lambda x: transforms.normalize(x, 0.0, 1.0, "unit"))

  def logits_fn(params, batch):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    set_modes(model, use_running_average=bn_mode == "eval", deterministic=True)
    logits = model(preprocess(batch["image"]))
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # bfloat16 -> float32

  def loss_fn(params, batch):
    per_example = losses.per_example_loss(loss_name, logits_fn(params, batch), batch["label"])
    mask = batch.get("mask", jnp.ones_like(per_example))
    return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0)

  loss_fn.bn_mode = logits_fn.bn_mode = bn_mode  # read by the operators (ghost batches)
  return loss_fn, logits_fn


class StateFunctions:
  """A run's loss and logits of its whole state: `loss_fn(tree, batch) -> scalar` and
  `logits_fn(tree, batch) -> (n, C)` for tree = {"params", "model_state", "inputs"}
  (`tree(params, model_state)`), as `model_functions` gives them for params.

  The BatchNorm state and the dataset's input statistics (`dataset.preprocess_with(tree["inputs"],
  images)`) are arguments, not constants, so the compiled programs of these functions are reused at
  every step of a run and, through the persistent compilation cache, by every seed's run. Build one per
  run; differentiate or perturb `tree["params"]` only (a `param_filter`).
  """

  def __init__(self, graphdef, dataset, *, bn_mode: str, loss_name: str):
    self.inputs = input_statistics(dataset)
    preprocess_with = dataset.preprocess_with

    def pick(which: int):
      def fn(tree, batch):
        pair = model_functions(graphdef, tree["model_state"], bn_mode=bn_mode,
                               preprocess=functools.partial(preprocess_with, tree["inputs"]),
                               loss_name=loss_name)
        return pair[which](tree["params"], batch)

      fn.bn_mode = bn_mode  # read by the operators (ghost batches)
      return fn

    self.loss_fn, self.logits_fn = pick(0), pick(1)

  def tree(self, params, model_state) -> dict:
    return {"params": params, "model_state": model_state, "inputs": self.inputs}


def check_ghost_batches(chunks: Chunks, bn_mode: str | None) -> dict:
  """{"ghost_batch_size": chunk size} in BatchNorm `batch` mode ({} otherwise), after checking that no chunk
  is padded: BatchNorm's batch statistics would include the padding (copies of the first example)."""
  if bn_mode != "batch":
    return {}
  if chunks.num_examples % chunks.chunk_size:
    raise UserError(f"in BatchNorm mode 'batch' every chunk is a ghost batch and its statistics would "
                    f"include the last chunk's padding: the number of examples ({chunks.num_examples}) must "
                    f"be a multiple of the chunk size ({chunks.chunk_size})")
  return {"ghost_batch_size": chunks.chunk_size}


# ---------------------------------------------------------------------------------------------------
# Parameter selection and flattening


def path_name(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def select(params, param_filter: Callable[[str], bool] | None):
  """(selected, merge): the leaves whose path passes `param_filter`, and `merge(selected) -> params`."""
  chosen, others, treedef, keep, names = _split(params, param_filter)
  return chosen, lambda selected: _merge(treedef, keep, selected, others), names


def _split(params, param_filter):
  """(chosen, others, treedef, keep, names): selected and other leaves, and how to put them back."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [path_name(p) for p, _ in leaves]
  keep = tuple(param_filter is None or bool(param_filter(n)) for n in names)
  if not any(keep):
    raise UserError(f"param_filter selects no parameter; parameter names look like {names[0]!r}")
  chosen = [leaf for (_, leaf), k in zip(leaves, keep) if k]
  others = [leaf for (_, leaf), k in zip(leaves, keep) if not k]
  return chosen, others, treedef, keep, [n for n, k in zip(names, keep) if k]


def _merge(treedef, keep, chosen, others):
  it_c, it_o = iter(chosen), iter(others)
  return jax.tree_util.tree_unflatten(treedef, [next(it_c) if k else next(it_o) for k in keep])


def parameter_blocks(params, param_filter=None) -> list[tuple[str, int, int]]:
  """(name, start, stop) of each selected parameter in the flattened vector (for per-layer traces)."""
  chosen, _, names = select(params, param_filter)
  out, start = [], 0
  for name, leaf in zip(names, chosen):
    out.append((name, start, start + int(np.prod(leaf.shape))))
    start += int(np.prod(leaf.shape))
  return out


# ---------------------------------------------------------------------------------------------------
# Operators


def _chunk_mean(fn, chunks: Chunks):
  """`run(args, arrays) = sum_c (count_c / n) fn(args, chunk_c, c)`, fn returning a pytree.

  On GPU/TPU one jitted `lax.scan` over the chunks. On XLA:CPU convolutions inside a loop construct
  run about 10x slower than on their own (simple_cnn, 512 examples in 2 chunks: 11 s per Hessian-vector
  product in a scan, 1.0 s as one jitted call per chunk), so there the chunks are looped over in Python,
  one jitted call each, accumulated on the device: the same arithmetic, the same constant memory.
  The jitted functions are cached per `fn`: the same `fn` on new arguments does not recompile.
  """
  n = chunks.num_examples
  one, add, scanned = _chunk_jits(fn)
  if xla.on_cpu() or chunks.num_chunks == 1:

    def run(args, arrays):
      total = None
      for c in range(chunks.num_chunks):
        out = one(args, jax.tree.map(lambda x, c=c: x[c], arrays), c, n)
        total = out if total is None else add(total, out)
      return total

    return run
  return lambda args, arrays: scanned(args, arrays, n)


@functools.lru_cache(maxsize=64)
def _chunk_jits(fn):
  """(one chunk's weighted value, tree addition, the scan over all chunks), jitted, for `fn`."""

  def weighted(args, chunk, index, n):
    count = chunk["mask"].sum()  # exact: a small integer
    return jax.tree.map(lambda o: (count.astype(o.dtype) / n) * o, fn(args, chunk, index))

  def scanned(args, arrays, n):
    def body(total, indexed):
      index, chunk = indexed
      return jax.tree.map(jnp.add, total, weighted(args, chunk, index, n)), None

    first = jax.tree.map(lambda x: x[0], arrays)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(weighted, args, first, 0, n))
    num_chunks = jax.tree.leaves(arrays)[0].shape[0]
    return jax.lax.scan(body, zeros, (jnp.arange(num_chunks), arrays))[0]

  return xla.jit(weighted), xla.jit(lambda a, b: jax.tree.map(jnp.add, a, b)), xla.jit(scanned)


@functools.lru_cache(maxsize=64)
def _product_fn(kind, fn, static, treedef, keep):
  """`f((chosen, others, v, aux), chunk, index)`: `kind`'s product on one chunk, cached so that the same
  loss function and parameter structure compile once however many parameter sets are measured."""

  def f(args, chunk, index):
    chosen, others, v, aux = args
    merge = lambda sel: _merge(treedef, keep, sel, others)
    return kind(fn, static, merge, chosen, ravel_pytree(chosen)[1](v), chunk, index, aux)

  return f


def _operator(kind, fn, static, params, chunks: Chunks, param_filter, info: dict,
              aux=None, linearize=None, cache_bytes: int = 0) -> LinearOperator:
  """v -> the mean over chunks of `kind(fn, static, merge, chosen, v_tree, chunk, index, aux)`.

  With `linearize` (`(fn, static, merge, chosen, chunk, index, aux) -> linear map v_tree -> tree`, the
  same product with everything that does not depend on v computed once) and room for every chunk's
  linearization within `cache_bytes`, the first product builds them and every product reuses them.
  """
  ghost = check_ghost_batches(chunks, getattr(fn, "bn_mode", info.get("bn_mode")))
  chosen, others, treedef, keep, names = _split(params, param_filter)
  flat, _ = ravel_pytree(chosen)
  size = flat.shape[0]
  run = _chunk_mean(_product_fn(kind, fn, static, treedef, keep), chunks)
  to_flat = _ravel
  cache = _LinearizationCache(linearize, fn, static, treedef, keep, chunks, (chosen, others, aux),
                              cache_bytes) if linearize is not None and cache_bytes > 0 else None

  sharding = getattr(chunks.arrays["mask"], "sharding", None)
  # Products come back replicated on the chunks' mesh; a vector placed there too (the first one,
  # often fresh from a random key, is not) keeps one compiled program for every product.
  replicate = mesh_lib.replicated(sharding.mesh) if isinstance(sharding, NamedSharding) else None

  def matvec(v):
    v = jnp.asarray(v)
    traced = isinstance(v, jax.core.Tracer)  # under jit/vmap: no placement, no cache
    if replicate is not None and not traced:
      v = mesh_lib.put(v, replicate)
    if cache is not None and not traced and cache.usable():
      return cache.product(chosen, v.astype(flat.dtype)).astype(v.dtype)
    out = run((chosen, others, v.astype(flat.dtype), aux), chunks.arrays)
    return to_flat(out).astype(v.dtype)

  info = dict(info) | chunks.info() | ghost | {"num_params": int(size)}
  if param_filter is not None:
    info["parameters"] = names
  return LinearOperator(matvec, int(size), flat.dtype, info)


@xla.jit
def _ravel(tree):
  return ravel_pytree(tree)[0]


class _LinearizationCache:
  """Each chunk's linearized product (a `jax.tree_util.Partial` holding the values the product needs
  that do not depend on v: activations and intermediates of the forward and backward pass), built at
  the first product and reused by every later one, if all chunks together fit in `max_bytes`."""

  def __init__(self, linearize, fn, static, treedef, keep, chunks: Chunks, args, max_bytes: int):
    self.setup, self.apply = _linearized_jits(linearize, fn, static, treedef, keep)
    self.chunks, self.args, self.max_bytes = chunks, args, max_bytes
    self.fits = None  # decided at the first product (tracing the setup is not free)
    self.linear = []

  def usable(self) -> bool:
    if self.fits is None:
      first = jax.tree.map(lambda x: x[0], self.chunks.arrays)
      shapes = jax.eval_shape(self.setup, self.args, first, 0)
      self.fits = self.chunks.num_chunks * _nbytes(shapes) <= self.max_bytes
    return self.fits

  def product(self, chosen, v: jax.Array) -> jax.Array:
    chunks = self.chunks
    if not self.linear:
      self.linear = [self.setup(self.args, jax.tree.map(lambda x, c=c: x[c], chunks.arrays), c)
                     for c in range(chunks.num_chunks)]
      counts = np.asarray(jnp.sum(chunks.arrays["mask"], axis=1), np.float64)
      self.weights = [jnp.asarray(c / chunks.num_examples, v.dtype) for c in counts]
    total = jnp.zeros_like(v)
    for linear, weight in zip(self.linear, self.weights):
      total = self.apply(linear, chosen, v, weight, total)
    return total


def _nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


@functools.lru_cache(maxsize=64)
def _linearized_jits(linearize, fn, static, treedef, keep):
  """(setup, apply), jitted: `setup((chosen, others, aux), chunk, index)` -> the chunk's linear map;
  `apply(linear, chosen, v, weight, total) = total + weight * linear(v)` on flat vectors."""

  def setup(args, chunk, index):
    chosen, others, aux = args
    merge = lambda sel: _merge(treedef, keep, sel, others)
    return linearize(fn, static, merge, chosen, chunk, index, aux)

  def apply(linear, chosen, v, weight, total):
    return total + weight * ravel_pytree(linear(ravel_pytree(chosen)[1](v)))[0]

  return xla.jit(setup), xla.jit(apply)


# Room for cached linearizations per operator: ResNet-20 on 512 32x32 images needs 2.5 GB, simple_cnn on
# 512 28x28 images 0.45 GB (float32).
CACHE_BYTES = 4 * 2**30


def _hessian_product(loss_fn, _, merge, chosen, v, chunk, index, aux):
  grad = jax.grad(lambda sel: loss_fn(merge(sel), chunk))
  return jax.jvp(grad, (chosen,), (v,))[1]


def _hessian_linearization(loss_fn, _, merge, chosen, chunk, index, aux):
  return jax.linearize(jax.grad(lambda sel: loss_fn(merge(sel), chunk)), chosen)[1]


def hessian(loss_fn, params, chunks: Chunks, *, param_filter=None, info: dict | None = None,
            cache_bytes: int = CACHE_BYTES):
  """The Hessian of the dataset-mean loss; products by forward-over-reverse differentiation.

  When the linearization of every chunk's gradient fits in `cache_bytes` (its size is known before
  anything runs), the first product computes it (`jax.linearize`: the forward and backward pass, their
  intermediates kept) and every product reuses it, running only the tangent part: on CPU 1.4x
  (simple_cnn) to 1.6x (ResNet-20) faster per product at batch 512 (benchmarks/curvature.py). The
  operator holds that memory while it lives. `cache_bytes=0`: recompute everything at every product,
  memory of one chunk's product only.
  """

  return _operator(_hessian_product, loss_fn, None, params, chunks, param_filter,
                   {"operator": "hessian"} | (info or {}), linearize=_hessian_linearization,
                   cache_bytes=cache_bytes)


def _output_hessian_product(loss_name, logits, u):
  """(d^2 l / dz^2) u per example: (n, C) -> (n, C)."""
  if loss_name == "mse":
    return u
  p = jax.nn.softmax(logits, axis=-1)
  return p * u - p * (p * u).sum(-1, keepdims=True)


def _jtmj(logits_fn, merge, chosen, v, chunk, middle):
  """(1/n_c) sum_i J_i^T middle_i(J_i v) over the chunk's real examples."""
  f = lambda sel: logits_fn(merge(sel), chunk)
  logits, jv = jax.jvp(f, (chosen,), (v,))
  mask = chunk["mask"].astype(logits.dtype)
  u = middle(logits, jv) * (mask / jnp.maximum(mask.sum(), 1.0))[:, None]
  _, vjp = jax.vjp(f, chosen)
  return vjp(u)[0]


def ggn(logits_fn, loss_name: str, params, chunks: Chunks, *, param_filter=None,
        info: dict | None = None):
  """The generalized Gauss-Newton matrix J^T H_out J (exact, positive semi-definite)."""
  if loss_name not in OUTPUT_LOSSES:
    raise UserError(choices_message("loss", loss_name, OUTPUT_LOSSES))

  return _operator(_ggn_product, logits_fn, loss_name, params, chunks, param_filter,
                   {"operator": "ggn", "loss": loss_name} | (info or {}))


def _ggn_product(logits_fn, loss_name, merge, chosen, v, chunk, index, aux):
  return _jtmj(logits_fn, merge, chosen, v, chunk,
               lambda logits, jv: _output_hessian_product(loss_name, logits, jv))


def _residuals(loss_name, logits, labels, key):
  """d l / dz at the given (or, with a key, sampled) labels: (n, C)."""
  if loss_name == "mse":
    if key is not None:  # y ~ N(z, I): the residual is Gaussian noise
      return jax.random.normal(key, logits.shape, logits.dtype)
    return logits - jax.nn.one_hot(labels, logits.shape[-1])
  p = jax.nn.softmax(logits, axis=-1)
  if key is not None:
    labels = jax.random.categorical(key, logits)
  return p - jax.nn.one_hot(labels, logits.shape[-1])


def fisher(logits_fn, loss_name: str, params, chunks: Chunks, key: jax.Array, *, param_filter=None,
           info: dict | None = None):
  """The true Fisher with one sampled label per example (fixed by `key`, so the operator is fixed)."""

  seed = int(jax.random.key_data(key).ravel()[-1])
  return _operator(_fisher_product, logits_fn, loss_name, params, chunks, param_filter,
                   {"operator": "fisher", "loss": loss_name, "label_key": seed} | (info or {}), aux=key)


def _fisher_product(logits_fn, loss_name, merge, chosen, v, chunk, index, key):
  chunk_key = jax.random.fold_in(key, index)  # the same labels at every product
  return _jtmj(logits_fn, merge, chosen, v, chunk, lambda logits, jv: _rank_one(
      _residuals(loss_name, logits, None, chunk_key), jv))


def _rank_one(r, jv):
  return r * (r * jv).sum(-1, keepdims=True)


def empirical_fisher(logits_fn, loss_name: str, params, chunks: Chunks, *, param_filter=None,
                     info: dict | None = None):
  """(1/n) sum_i g_i g_i^T with g_i the per-example gradient at the true labels."""

  return _operator(_empirical_fisher_product, logits_fn, loss_name, params, chunks, param_filter,
                   {"operator": "empirical_fisher", "loss": loss_name} | (info or {}))


def _empirical_fisher_product(logits_fn, loss_name, merge, chosen, v, chunk, index, aux):
  return _jtmj(logits_fn, merge, chosen, v, chunk, lambda logits, jv: _rank_one(
      _residuals(loss_name, logits, chunk["label"], None), jv))


def mean_gradient(loss_fn, params, chunks: Chunks, *, param_filter=None) -> jax.Array:
  """The flattened gradient of the dataset-mean loss."""
  check_ghost_batches(chunks, getattr(loss_fn, "bn_mode", None))
  chosen, others, treedef, keep, _ = _split(params, param_filter)
  run = _chunk_mean(_product_fn(_gradient, loss_fn, None, treedef, keep), chunks)
  return _ravel(run((chosen, others, ravel_pytree(chosen)[0], None), chunks.arrays))


def _gradient(loss_fn, _, merge, chosen, v, chunk, index, aux):
  return jax.grad(lambda sel: loss_fn(merge(sel), chunk))(chosen)


def gradient_covariance(logits_fn, loss_fn, loss_name: str, params, chunks: Chunks, *,
                        param_filter=None, info: dict | None = None):
  """Sigma = (1/n) sum_i g_i g_i^T - g g^T, the per-example gradient covariance (population form)."""
  ef = empirical_fisher(logits_fn, loss_name, params, chunks, param_filter=param_filter)
  g = mean_gradient(loss_fn, params, chunks, param_filter=param_filter)

  def matvec(v):
    return ef.matvec(v) - g.astype(v.dtype) * jnp.dot(g.astype(v.dtype), v)

  return LinearOperator(matvec, ef.size, ef.dtype,
                        ef.info | {"operator": "gradient_covariance"} | (info or {}))


def preconditioned(op: LinearOperator, diagonal: jax.Array) -> LinearOperator:
  """P^-1/2 A P^-1/2 for a positive diagonal preconditioner P (flattened like the operator's vectors).

  With P = sqrt(v_hat) + eps from an Adam-type state this is the preconditioned Hessian whose top
  eigenvalue is the adaptive method's effective sharpness (Cohen et al. 2022, arXiv:2207.14484).
  """
  d = jnp.asarray(diagonal)
  if d.shape != (op.size,):
    raise UserError(f"preconditioner has shape {d.shape}, the operator acts on ({op.size},)")
  scale = 1.0 / jnp.sqrt(d)
  return LinearOperator(lambda v: scale.astype(v.dtype) * op.matvec(scale.astype(v.dtype) * v), op.size,
                        op.dtype, op.info | {"preconditioned": True})


def adam_preconditioner(opt_state, *, b2: float = 0.999, eps: float = 1e-8, params=None,
                        param_filter=None) -> jax.Array:
  """The flattened diagonal sqrt(v_hat) + eps of the first Adam-type state (`nu`, `count`) in `opt_state`.

  `v_hat = nu / (1 - b2^count)` (bias-corrected, as Adam's update uses it).
  """
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "nu") and hasattr(x, "count"))
           if hasattr(s, "nu")]
  if not found:
    raise UserError("the optimizer state has no Adam-type second moment (`nu`); use adam, adamw, "
                    "lamb or rmsprop-with-nu states")
  state = found[0]
  if int(state.count) == 0:
    raise UserError("the Adam-type state has taken no step yet: its second moment is undefined at step 0")
  nu = state.nu
  if param_filter is not None:
    nu = select(nu, param_filter)[0]
  v_hat = jax.tree.map(lambda x: x / (1 - b2 ** state.count.astype(jnp.float32)), nu)
  return ravel_pytree(jax.tree.map(lambda x: jnp.sqrt(x) + eps, v_hat))[0]
