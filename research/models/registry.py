"""The model zoo by name: `create(name, *, num_classes, input_shape, rngs, **knobs)`, `available()`.

Every model is an NNX module taking (n, H, W, C) images and returning (n, num_classes) logits. Knobs
are the keyword arguments of the model's constructor; an unknown model or knob is one `UserError`
line naming the valid choices.
"""

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from research.core.errors import UserError, choices_message
from research.models import alexnet, convnext, initializers, lenet, mlp, resnet, simple_cnn, vgg, vit

_NOT_KNOBS = {"self", "num_classes", "input_shape", "rngs", "stage_widths", "blocks_per_stage",
              "stem_width", "preact"}


@dataclasses.dataclass(frozen=True)
class Entry:
  factory: Callable[..., nnx.Module]
  knob_sources: tuple  # callables whose keyword arguments are this model's knobs
  min_size: int = 1  # smallest input height/width
  sizes: tuple[int, ...] | None = None  # the only input heights/widths it takes, if restricted
  fixed: tuple[str, ...] = ()  # constructor arguments the name fixes (e.g. vgg16's depth)
  initializer: str = "lecun_normal"  # the family's published weight initialization


  def knobs(self) -> dict[str, object]:
    out = {}
    for source in self.knob_sources:
      init = source.__init__ if isinstance(source, type) else source
      for name, p in inspect.signature(init).parameters.items():
        keyword = p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        if keyword and name not in _NOT_KNOBS and name not in self.fixed:
          out.setdefault(name, p.default)
    out["initializer"] = self.initializer
    return out


_HE = "he_normal"  # He et al. 2015 initialization, as the ResNet and VGG papers use
_REGISTRY: dict[str, Entry] = {
    "mlp": Entry(mlp.MLP, (mlp.MLP,)),
    "lenet5": Entry(lenet.LeNet5, (lenet.LeNet5,), sizes=(28, 32)),
    "simple_cnn": Entry(simple_cnn.SimpleCNN, (simple_cnn.SimpleCNN,), min_size=4),
    "alexnet": Entry(alexnet.AlexNet, (alexnet.AlexNet,)),
    **{f"resnet{d}": Entry(functools.partial(resnet.cifar_resnet, d), (resnet.ResNet,), min_size=4,
                           initializer=_HE)
       for d in (20, 32, 44, 56, 110)},
    **{f"vgg{d}": Entry(functools.partial(vgg.VGG, depth=d), (vgg.VGG,), min_size=2,
                         fixed=("depth",), initializer=_HE)
       for d in sorted(vgg.CONFIGS)},
    "preact_resnet18": Entry(resnet.preact_resnet18, (resnet.preact_resnet18, resnet.ResNet), min_size=8,
                             initializer=_HE),
    "wide_resnet": Entry(resnet.wide_resnet, (resnet.wide_resnet, resnet.ResNet), min_size=4,
                         initializer=_HE),
    "convnext": Entry(convnext.ConvNeXt, (convnext.ConvNeXt,), min_size=8, initializer="trunc_normal"),
    "vit": Entry(vit.ViT, (vit.ViT,), initializer="trunc_normal"),
}
_DTYPE_KNOBS = ("dtype", "param_dtype")


def available() -> list[str]:
  return sorted(_REGISTRY)


def knobs(name: str) -> dict[str, object]:
  """The knobs of model `name` with their defaults."""
  return _entry(name).knobs()


def _entry(name: str) -> Entry:
  if name not in _REGISTRY:
    raise UserError(choices_message("model", name, available()))
  return _REGISTRY[name]


def create(name: str, *, num_classes: int, input_shape: tuple[int, ...], rngs: nnx.Rngs,
           **model_knobs) -> nnx.Module:
  """Builds model `name` for (H, W, C) inputs and `num_classes` outputs."""
  entry = _entry(name)
  valid = entry.knobs()
  for key in model_knobs:
    if key not in valid:
      raise UserError(choices_message(f"knob of {name}", key, sorted(valid)))
  if len(input_shape) != 3:
    raise UserError(f"input_shape must be (H, W, C), got {tuple(input_shape)}")
  h, w, _ = input_shape
  if entry.sizes is not None and (h not in entry.sizes or w != h):
    raise UserError(f"{name} takes square inputs of size {' or '.join(map(str, entry.sizes))}, "
                    f"got {tuple(input_shape)}")
  if min(h, w) < entry.min_size:
    raise UserError(f"{name} needs inputs of at least {entry.min_size}x{entry.min_size}, "
                    f"got {tuple(input_shape)}")
  initializer = initializers.check(model_knobs.pop("initializer", entry.initializer))
  for key in _DTYPE_KNOBS:
    if isinstance(model_knobs.get(key), str):
      model_knobs[key] = _dtype(key, model_knobs[key])
  # Initial weights are drawn with the non-partitionable threefry: on XLA:CPU each new 4-D kernel shape
  # costs about 3 s to compile with the partitionable one and 0.5 s without (ResNet-20: 29 s -> 6 s).
  with jax.threefry_partitionable(False):
    try:
      model = entry.factory(num_classes=num_classes, input_shape=tuple(input_shape), rngs=rngs,
                            **model_knobs)
    except ValueError as e:
      if isinstance(e, UserError):
        raise
      raise UserError(f"{name}: {e}") from None
    if initializer != "lecun_normal":  # the layers were built with Flax's lecun_normal already
      initializers.initialize(model, initializer, rngs.params())
  return model


_DTYPES = ("float32", "bfloat16", "float16", "float64")


def _dtype(knob: str, value: str):
  """A dtype knob given by name (as configs give it)."""
  if value not in _DTYPES:
    raise UserError(choices_message(f"{knob}", value, _DTYPES))
  return jnp.dtype(value)


def num_params(model: nnx.Module) -> int:
  """Number of trainable parameters (nnx.Param leaves)."""
  params = nnx.state(model, nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))
