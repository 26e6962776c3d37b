"""Function-preserving reparameterizations (Dinh, Pascanu, Bengio & Bengio 2017, "Sharp minima can
generalize for deep nets", arXiv:1703.04933, Section 4).

- `rescale_relu_layers`: for two layers separated only by positively homogeneous maps (ReLU, leaky
  ReLU, max-pooling, flattening), (W1, b1, W2) -> (alpha W1, alpha b1, W2 / alpha), alpha > 0.
  relu(alpha z) = alpha relu(z), so the network computes the same function, while the Hessian blocks
  of W1 and W2 scale by 1 / alpha^2 and alpha^2: lambda_max, plain sharpness and Frobenius norms can be
  made as large as one likes. Adaptive measures (perturbations scaled by |w|) do not change.
- `rescale_before_batchnorm`: a layer followed by BatchNorm, (W, b) -> (alpha W, alpha b). BatchNorm
  in batch mode divides the scale out; in eval mode the running statistics are rescaled with it
  (mean -> alpha mean, var -> alpha^2 var). Both are exact up to BatchNorm's epsilon: the output changes
  by a relative amount of order |1 - alpha^2| eps / (alpha^2 var + eps).

Layers are named by their path prefix in the params pytree (e.g. "hidden.0", "head", "conv1"); their
leaves "kernel" and "bias" are rescaled. Params are returned as new pytrees; nothing is modified.
"""

import jax
import numpy as np

from research.core.errors import UserError, choices_message
from research.curvature.operators import path_name
from research.measures.common import check_positive


def _name(path) -> str:
  """The leaf's path name without NNX's trailing ".value" ("hidden.0.kernel")."""
  name = path_name(path)
  return name[: -len(".value")] if name.endswith(".value") else name


def _layers(tree) -> list[str]:
  """Path prefixes of every leaf named kernel (the layers one can rescale)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return sorted({_name(p).rsplit(".", 1)[0] for p, _ in leaves if _name(p).endswith("kernel")})


def _scaled(tree, scales: dict) -> object:
  """`tree` with the leaf at path name n multiplied by scales[n]."""
  def f(path, leaf):
    factor = scales.get(_name(path))
    return leaf if factor is None else (leaf * np.asarray(factor, dtype=np.asarray(leaf).dtype))
  return jax.tree_util.tree_map_with_path(f, tree)


def _leaf_names(tree) -> set[str]:
  return {_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_layer(tree, layer: str) -> None:
  if f"{layer}.kernel" not in _leaf_names(tree):
    raise UserError(choices_message("layer", layer, _layers(tree)))


def rescale_relu_layers(params, first: str, second: str, alpha: float):
  """(alpha W1, alpha b1, W2 / alpha) for layers `first` -> ReLU -> `second` (module docstring)."""
  alpha = check_positive("alpha", alpha)
  _check_layer(params, first)
  _check_layer(params, second)
  if first == second:
    raise UserError(f"first and second layer must differ, got {first!r} twice")
  names = _leaf_names(params)
  scales = {f"{first}.kernel": alpha, f"{second}.kernel": 1.0 / alpha}
  if f"{first}.bias" in names:
    scales[f"{first}.bias"] = alpha
  return _scaled(params, scales)


def rescale_before_batchnorm(params, model_state, layer: str, norm: str, alpha: float):
  """(params, model_state) with layer `layer` scaled by alpha and BatchNorm `norm`'s running mean and
  variance by alpha and alpha^2 (module docstring). model_state: the non-parameter state holding
  "<norm>.mean" and "<norm>.var" (e.g. `rest` of `research.models.split`)."""
  alpha = check_positive("alpha", alpha)
  _check_layer(params, layer)
  state_names = _leaf_names(model_state)
  if f"{norm}.mean" not in state_names or f"{norm}.var" not in state_names:
    norms = sorted({n.rsplit(".", 1)[0] for n in state_names if n.endswith(".var")})
    raise UserError(choices_message("BatchNorm", norm, norms))
  scales = {f"{layer}.kernel": alpha}
  if f"{layer}.bias" in _leaf_names(params):
    scales[f"{layer}.bias"] = alpha
  return _scaled(params, scales), _scaled(model_state, {f"{norm}.mean": alpha, f"{norm}.var": alpha**2})
