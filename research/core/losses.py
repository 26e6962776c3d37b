"""Classification losses and accuracy on logits (n, C) and integer labels (n,), computed in float32
(or float64 when the logits are float64, for exact curvature tests).

- `cross_entropy`: softmax cross-entropy, optionally with label smoothing (Szegedy et al. 2016,
  "Rethinking the Inception Architecture"): the target is (1 - s) * one_hot + s / C.
- `mse`: the square loss 0.5 * ||logits - one_hot||^2 summed over classes, as used in the
  edge-of-stability literature (Cohen et al. 2021, "Gradient Descent on Neural Networks Typically Occurs
  at the Edge of Stability").

Scalar losses are means over the batch; `per_example_loss` gives the (n,) values whose mean they are,
so evaluation can sum them under a mask.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from research.core.errors import UserError, choices_message

LOSSES = ("cross_entropy", "mse")


def _at_least_float32(logits: jax.Array) -> jax.Array:
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _check(name: str, label_smoothing: float) -> None:
  if name not in LOSSES:
    raise UserError(choices_message("loss", name, LOSSES))
  if not 0.0 <= label_smoothing <= 1.0:
    raise UserError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
  if name == "mse" and label_smoothing != 0.0:
    raise UserError(f"label_smoothing applies to cross_entropy only; got loss 'mse' with "
                    f"label_smoothing={label_smoothing!r}")


def per_example_cross_entropy(logits: jax.Array, labels: jax.Array,
                              label_smoothing: float = 0.0) -> jax.Array:
  """(n,) softmax cross-entropy of logits (n, C) against integer labels (n,), float32."""
  logits = _at_least_float32(logits)
  if label_smoothing == 0.0:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def per_example_mse(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """(n,) 0.5 * sum over classes of (logits - one_hot(labels))^2, float32 (Cohen et al. 2021)."""
  logits = _at_least_float32(logits)
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return optax.l2_loss(logits, targets).sum(axis=-1)  # optax.l2_loss is 0.5 * (x - y)^2


def per_example_loss(name: str, logits: jax.Array, labels: jax.Array,
                     label_smoothing: float = 0.0) -> jax.Array:
  """(n,) loss `name` (one of LOSSES) per example; its mean is the scalar loss of that name."""
  _check(name, label_smoothing)
  if name == "cross_entropy":
    return per_example_cross_entropy(logits, labels, label_smoothing)
  return per_example_mse(logits, labels)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Scalar float32 mean softmax cross-entropy; logits (n, C), integer labels (n,)."""
  _check("cross_entropy", label_smoothing)
  return per_example_cross_entropy(logits, labels, label_smoothing).mean()


def mse(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Scalar float32 0.5 * mean over the batch of ||logits - one_hot(labels)||^2 (Cohen et al. 2021)."""
  return per_example_mse(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Scalar float32 fraction of examples whose argmax logit is the label."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32).mean()


def get_loss(name: str, label_smoothing: float = 0.0) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`fn(logits, labels) -> scalar` for loss `name` (one of LOSSES). Raises UserError."""
  _check(name, label_smoothing)
  return lambda logits, labels: per_example_loss(name, logits, labels, label_smoothing).mean()
