"""A model as a pure function of its parameters, for curvature, sharpness and landscape code.

`split(model)` separates the graph, the trainable parameters (`nnx.Param`) and the rest (BatchNorm
running statistics, RNG state). `apply_fn(graphdef, rest, bn_mode=...)` returns
`apply(params, images) -> logits`, a pure function with dropout off and an explicit BatchNorm mode:

- `"eval"`: running statistics; the output is a deterministic function of the parameters and each
  example's output does not depend on the rest of the batch (the default);
- `"batch"`: each call normalizes with the statistics of the batch it is given; the updated running
  statistics are never written back (`rest` is left as it was).
"""

from collections.abc import Callable

from flax import nnx

BN_MODES = ("eval", "batch")


def split(model: nnx.Module):
  """(graphdef, params, rest) with params the `nnx.Param` state and rest everything else."""
  return nnx.split(model, nnx.Param, ...)


def set_modes(model: nnx.Module, *, use_running_average: bool, deterministic: bool) -> None:
  """Sets every BatchNorm's and Dropout's mode in place."""
  for _, module in model.iter_modules():
    if isinstance(module, nnx.BatchNorm):
      module.use_running_average = use_running_average
    elif isinstance(module, nnx.Dropout):
      module.deterministic = deterministic


def apply_fn(graphdef, rest, *, bn_mode: str = "eval") -> Callable:
  """`apply(params, images) -> logits`, pure in `params` (see the module docstring for the modes)."""
  if bn_mode not in BN_MODES:
    raise ValueError(f"unknown BatchNorm mode {bn_mode!r}; valid choices: {', '.join(BN_MODES)}")

  def apply(params, images):
    model = nnx.merge(graphdef, params, rest, copy=True)
    set_modes(model, use_running_average=bn_mode == "eval", deterministic=True)
    return model(images)

  return apply
