"""Optimizers by name: `make_optimizer(cfg, schedule) -> optax.GradientTransformation`.

The learning rate comes from `schedule` (an Optax schedule, called with the optimizer's own step count,
0 for the first update). The chain, in order, is:
  1. global-norm clipping of the raw gradient (`grad_clip_norm` > 0);
  2. `l1 * sign(w)` added to the gradient (`l1` > 0);
  3. coupled L2: `weight_decay * w` added to the gradient, as `weight_decay` of torch.optim.SGD / Adam;
  4. the named Optax optimizer (which multiplies by -lr);
  5. decoupled decay (`decoupled_weight_decay=True`): `-lr * weight_decay * w` added to the update
     (Loshchilov & Hutter 2019), so "adam" with decoupled decay is AdamW.
"adamw", "lion", "lamb" and "lars" always use their own weight decay inside Optax (decoupled for
adamw, lion and lamb; inside the trust ratio for lars) and ignore `decoupled_weight_decay`.

Config fields (`default_optimizer_config()` gives them with their defaults):
- `name`: one of OPTIMIZERS.
  - "sgd": w -= lr * g.
  - "momentum": heavy ball in PyTorch's convention (optax.sgd): v = momentum * v + g; w -= lr * v.
  - "nesterov": PyTorch's Nesterov: v = momentum * v + g; w -= lr * (g + momentum * v).
  - "adam", "adamw" (Kingma & Ba 2015; Loshchilov & Hutter 2019): `b1`, `b2`, `eps` (added outside the
    square root, as PyTorch).
  - "rmsprop": v = b2 * v + (1 - b2) * g^2; w -= lr * g / (sqrt(v) + eps), no momentum, eps outside the
    square root as PyTorch and Keras (Optax's default puts it inside). There is no bias correction, so
    the first step is about lr / sqrt(1 - b2) per coordinate (31.6 lr at the default b2 = 0.999);
    PyTorch's alpha is 0.99, Optax's and Keras's decay 0.9: set `b2`.
  - "adagrad" (Duchi et al. 2011): s += g^2; w -= lr * g / sqrt(s + eps); accumulator starts at 0 as in
    PyTorch (Optax's default starts at 0.1).
  - "lion" (Chen et al. 2023): `b1`, `b2` (the paper's default b2 is 0.99).
  - "lars" (You et al. 2017): optax.lars with `momentum`, trust coefficient 0.001; note Optax applies the
    momentum after the learning rate (v = momentum * v + lr * g_scaled).
  - "lamb" (You et al. 2020): `b1`, `b2`, `eps`.
- `momentum` (0.9): "momentum", "nesterov", "lars".
- `b1` (0.9), `b2` (0.999), `eps` (1e-8): the moment decays and epsilon of the adaptive methods.
- `weight_decay` (0.0) and `decoupled_weight_decay` (False): see the chain above.
- `l1` (0.0): adds `l1 * sign(w)` to the gradient.
- `grad_clip_norm` (0.0 = off): global-norm clipping of the raw gradient, before everything else.
- `weight_decay_mask` ("all" | "no_bias_norm"): with "no_bias_norm" weight decay and l1 skip 1-D
  parameters (biases, normalization scales and offsets).
Other keys in `cfg` (e.g. the train config's `sam` section) are ignored here.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from research.core.errors import UserError, choices_message

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "lion", "lars", "lamb")
WEIGHT_DECAY_MASKS = ("all", "no_bias_norm")
_OWN_WEIGHT_DECAY = ("adamw", "lion", "lamb", "lars")
# The domain of each numeric field (`research.training.config.Interval` syntax), checked by `validate`.
RANGES = {
    "momentum": "[0, 1)",
    "b1": "[0, 1)",
    "b2": "[0, 1)",
    "eps": "[0, inf)",
    "weight_decay": "[0, inf)",
    "l1": "[0, inf)",
    "grad_clip_norm": "[0, inf); 0: off",
}


def default_optimizer_config() -> ml_collections.ConfigDict:
  """Every optimizer field with its default (SGD with momentum 0.9, no regularization)."""
  return ml_collections.ConfigDict(dict(
      name="momentum",
      momentum=0.9,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      decoupled_weight_decay=False,
      l1=0.0,
      grad_clip_norm=0.0,
      weight_decay_mask="all",
  ))


def weight_decay_mask(name: str) -> Callable | None:
  """Optax mask for `weight_decay_mask` `name`: None (all parameters) or params -> tree of bools."""
  if name not in WEIGHT_DECAY_MASKS:
    raise UserError(choices_message("weight_decay_mask", name, WEIGHT_DECAY_MASKS))
  if name == "all":
    return None
  return lambda params: jax.tree.map(lambda w: jnp.ndim(w) > 1, params)


def add_l1(l1: float, mask: Callable | None = None) -> optax.GradientTransformation:
  """Adds `l1 * sign(w)` (the subgradient of l1 * |w|_1) to the gradient, where `mask` allows."""
  transform = optax.stateless(lambda g, params: jax.tree.map(lambda g, w: g + l1 * jnp.sign(w), g, params))
  return transform if mask is None else optax.masked(transform, mask)


def _named(cfg, schedule: optax.Schedule, mask: Callable | None) -> optax.GradientTransformation:
  """The Optax optimizer `cfg.name`, including its own weight decay for _OWN_WEIGHT_DECAY."""
  wd = float(cfg.weight_decay)
  match cfg.name:
    case "sgd":
      return optax.sgd(schedule)
    case "momentum" | "nesterov":
      return optax.sgd(schedule, momentum=cfg.momentum, nesterov=cfg.name == "nesterov")
    case "adam":
      return optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    case "adamw":
      return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=mask)
    case "rmsprop":
      return optax.rmsprop(schedule, decay=cfg.b2, eps=cfg.eps, eps_in_sqrt=False)
    case "adagrad":
      return optax.adagrad(schedule, initial_accumulator_value=0.0, eps=cfg.eps)
    case "lion":
      return optax.lion(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=wd, mask=mask)
    case "lars":
      return optax.lars(schedule, weight_decay=wd, weight_decay_mask=True if mask is None else mask,
                        momentum=cfg.momentum)
    case "lamb":
      return optax.lamb(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=mask)
  raise UserError(choices_message("optimizer", cfg.name, OPTIMIZERS))


def make_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule | float
                   ) -> optax.GradientTransformation:
  """The optimizer `cfg.name` (one of OPTIMIZERS) with the regularizers of `cfg`. Raises UserError."""
  if cfg.name not in OPTIMIZERS:
    raise UserError(choices_message("optimizer", cfg.name, OPTIMIZERS))
  if not callable(schedule):
    schedule = optax.constant_schedule(schedule)
  mask = weight_decay_mask(cfg.weight_decay_mask)
  wd = float(cfg.weight_decay)
  own_decay = cfg.name in _OWN_WEIGHT_DECAY
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.l1 > 0:
    parts.append(add_l1(float(cfg.l1), mask))
  if wd > 0 and not own_decay and not cfg.decoupled_weight_decay:
    parts.append(optax.add_decayed_weights(wd, mask))
  parts.append(_named(cfg, schedule, mask))
  if wd > 0 and not own_decay and cfg.decoupled_weight_decay:
    # The update is already -lr * direction, so the decoupled term enters with -lr(step) * wd.
    parts.append(optax.add_decayed_weights(lambda step: -wd * schedule(step), mask))
  return optax.chain(*parts)
