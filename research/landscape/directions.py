"""Directions in parameter space for loss-landscape plots: pytrees shaped like the params.

- `random_direction`: Gaussian entries, then normalized so that plots of different networks (or of one
  network under a rescaling that leaves its function unchanged) are comparable (Li et al. 2018,
  "Visualizing the Loss Landscape of Neural Nets", Sec. 4):
  - `"filter"`: each filter (output unit) d_{i,j} of each weight tensor i is scaled to the norm of the
    same filter of the weights, d_{i,j} <- d_{i,j} ||theta_{i,j}|| / ||d_{i,j}||. A filter is a slice
    along the last axis: NNX kernels are (kh, kw, in, out) for convolutions and (in, out) for dense
    layers, so filter j is kernel[..., j];
  - `"layer"`: each tensor as a whole, d_i <- d_i ||theta_i|| / ||d_i||;
  - `"none"`: the raw N(0, 1) draw.
  Vector parameters (ndim <= 1: biases, BatchNorm/LayerNorm scales and offsets) are zeroed
  (`bias_and_norm="zero"`, Li et al.'s `ignore='biasbn'`, the default) or kept (`"keep"`): random and
  normalized as one filter, d <- d ||theta|| / ||d|| (Li et al.'s code copies theta instead; we keep
  the direction random so that a kept vector is normalized like every other tensor). Filters of zero
  weights get a zero direction.
- `eigen_directions`: the top Hessian eigenvectors of the dataset loss (research.curvature), unit norm.
- `difference`: params_b - params_a, the direction of linear interpolation from a to b.

A `Direction` is the pytree and a JSON-able record of how it was made (type, seed, normalization).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from research.core.errors import UserError, choices_message
from research.curvature import lanczos, operators

NORMALIZATIONS = ("filter", "layer", "none")
BIAS_AND_NORM = ("zero", "keep")


@dataclasses.dataclass(frozen=True)
class Direction:
  """A direction `tree` (same structure, shapes and dtypes as the params) and how it was made."""
  tree: object
  info: dict

  def norm(self) -> float:
    return float(jnp.sqrt(sum(jnp.vdot(x, x).real for x in jax.tree.leaves(self.tree))))


def _scaled(d: np.ndarray, w: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
  """d scaled so that its norm over `axes` equals w's (0 where w's is 0)."""
  w_norm = np.sqrt((w * w).sum(axis=axes, keepdims=True))
  d_norm = np.sqrt((d * d).sum(axis=axes, keepdims=True))
  return d * np.where(d_norm > 0, w_norm / np.where(d_norm > 0, d_norm, 1.0), 0.0)


def normalize_direction(direction, params, normalization: str = "filter", bias_and_norm: str = "zero"):
  """A direction pytree normalized against `params` as described in the module docstring.

  Computed on the host in float64 (a one-off per direction, no compilation), returned as arrays of
  each parameter's dtype.
  """
  if normalization not in NORMALIZATIONS:
    raise UserError(choices_message("direction normalization", normalization, NORMALIZATIONS))
  if bias_and_norm not in BIAS_AND_NORM:
    raise UserError(choices_message("bias_and_norm option", bias_and_norm, BIAS_AND_NORM))

  def one(d, w):
    dtype = jnp.result_type(w)
    d, w = np.asarray(d, np.float64), np.asarray(w, np.float64)
    if w.ndim <= 1:
      if bias_and_norm == "zero":
        d = np.zeros_like(d)
      elif normalization != "none":
        d = _scaled(d, w, tuple(range(w.ndim)))
    elif normalization == "filter":
      d = _scaled(d, w, tuple(range(w.ndim - 1)))
    elif normalization == "layer":
      d = _scaled(d, w, tuple(range(w.ndim)))
    return jnp.asarray(d.astype(dtype))

  return jax.tree.map(one, direction, params)


def _random_normalized(params, key, normalization: str, bias_and_norm: str):
  """One N(0, 1) draw of the total parameter count, cut into the leaves in order, then normalized."""
  leaves, treedef = jax.tree.flatten(params)
  sizes = [int(np.size(w)) for w in leaves]
  flat = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.result_type(*leaves)))
  pieces = np.split(flat, np.cumsum(sizes)[:-1])
  raw = jax.tree.unflatten(treedef, [p.reshape(np.shape(w)) for p, w in zip(pieces, leaves)])
  return normalize_direction(raw, params, normalization, bias_and_norm)


def _key(key: jax.Array | int) -> tuple[jax.Array, dict]:
  if isinstance(key, int | np.integer):
    return jax.random.key(int(key)), {"seed": int(key)}
  return key, {"key_data": np.asarray(jax.random.key_data(key)).ravel().tolist()}


def random_direction(params, key: jax.Array | int, *, normalization: str = "filter",
                     bias_and_norm: str = "zero") -> Direction:
  """Gaussian direction N(0, 1) per entry (one draw over all parameters, in leaf order), normalized.

  `key`: a JAX key or an integer seed (recorded). The draw depends only on the key and the shapes, so
  two parameter sets of the same architecture get the same raw draw from the same key.
  """
  key, key_info = _key(key)
  tree = _random_normalized(params, key, normalization, bias_and_norm)
  return Direction(tree, {"type": "random", "normalization": normalization,
                          "bias_and_norm": bias_and_norm, **key_info})


def random_directions(params, key: jax.Array | int, count: int = 2, **options) -> list[Direction]:
  """`count` independent random directions from `jax.random.fold_in(key, i)`, i = 0..count-1."""
  key, key_info = _key(key)
  out = []
  for i in range(count):
    d = random_direction(params, jax.random.fold_in(key, i), **options)
    out.append(dataclasses.replace(d, info=d.info | key_info | {"index": i}))
  return out


def difference(params_a, params_b) -> Direction:
  """params_b - params_a: moving by t along it goes from a (t = 0) to b (t = 1)."""
  sa, sb = jax.tree.structure(params_a), jax.tree.structure(params_b)
  if sa != sb:
    raise UserError("the two parameter sets have different structures (different architectures?)")
  shapes = [(jnp.shape(a), jnp.shape(b))
            for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b))]
  bad = [s for s in shapes if s[0] != s[1]]
  if bad:
    raise UserError(f"the two parameter sets have different shapes, e.g. {bad[0][0]} vs {bad[0][1]}")
  tree = jax.tree.map(lambda a, b: jnp.asarray(b) - jnp.asarray(a), params_a, params_b)
  return Direction(tree, {"type": "difference"})


def eigen_directions(loss_fn: Callable, params, chunks: operators.Chunks, k: int = 2, *,
                     key: jax.Array | None = None, param_filter: Callable[[str], bool] | None = None,
                     **solver_options) -> tuple[list[Direction], lanczos.EigenResult]:
  """The k top Hessian eigenvectors (unit norm, as pytrees; zero outside `param_filter`'s parameters).

  `solver_options` go to `research.curvature.eigenpairs` (tol, krylov_dim, ...). The eigenvalues,
  residuals and convergence flags are in each direction's info and in the returned EigenResult.
  """
  op = operators.hessian(loss_fn, params, chunks, param_filter=param_filter)
  result = lanczos.eigenpairs(op, k, "largest", key=key, **solver_options)
  chosen, _, _ = operators.select(params, param_filter)
  flat, unravel = ravel_pytree(chosen)
  # Unselected parameters get zeros: `merge` of the zero tree fills them in.
  merge = operators.select(jax.tree.map(jnp.zeros_like, params), param_filter)[1]
  directions = []
  for i in range(k):
    tree = merge(unravel(jnp.asarray(result.vectors[i], flat.dtype)))
    directions.append(Direction(tree, {
        "type": "hessian_eigenvector", "index": i, "eigenvalue": float(result.values[i]),
        "residual_norm": float(result.residual_norms[i]), "converged": bool(result.converged[i]),
        "num_products": result.num_products, **chunks.info()}))
  return directions, result
