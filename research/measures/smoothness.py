"""Trajectory smoothness along the gradient step (Santurkar et al. 2018, "How Does Batch Normalization Help
Optimization?", NeurIPS, arXiv:1805.11604, section 3.1 and Figure 4).

At parameters w with gradient g = grad L(w) of the loss on a probe set, and a learning rate eta, the loss
and its gradient are evaluated at the points w_c = w - c eta g of a few step multiples c > 0 (the step
gradient descent takes is c = 1), and three quantities are reported:
- loss range (Figure 4a, "loss landscape"): max_c L(w_c) - min_c L(w_c), in the loss's units (nats for
  cross-entropy); the spread of the loss along the step;
- gradient change (Figure 4b, "gradient predictiveness"): ||grad L(w_c) - g||_2 per c and its maximum over
  the c's, in loss units per parameter unit;
- effective beta-smoothness (Figure 4c): max_c ||grad L(w_c) - g||_2 / ||w_c - w||_2 with
  ||w_c - w|| = c eta ||g||, in loss units per squared parameter unit. It is a lower bound on the
  gradient's Lipschitz constant on the segment; for a quadratic with Hessian A it equals ||A g|| / ||g||
  at every c, and as c -> 0 it tends to the directional curvature ||H g|| / ||g|| <= max |eig(H)|.

Only the selected parameters (`param_filter`, e.g. trainable weights but not BatchNorm running
statistics) move. The loss is the exact mean over the real examples of the data, one jitted call per
chunk (`research.measures.common.mean_over`); with a BatchNorm-in-batch-mode `loss_fn` every chunk is a
ghost batch normalized with its own statistics, so the chunk size is part of the definition and the
caller must give full chunks (`research.evaluators.smoothness` refuses a ragged probe set).

Written here because no library computes it: it needs only the loss and gradient at a few points, one
value-and-gradient pass over the probe set per multiple.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.core.errors import UserError
from research.measures import common

# Step multiples of the learning rate, a range around the step training takes as in Santurkar et al.'s
# Figure 4: 0.5 to 4 (step sizes 0.05 to 0.4 at lr 0.1). Their exact grid is in the paper's appendix.
DEFAULT_MULTIPLES = (0.5, 1.0, 2.0, 3.0, 4.0)


def _value_and_grad(loss_fn: Callable, layout: common.Layout, args, chunk):
  """(loss, flat gradient) of one chunk at the parameters args = (flat, rest) (for `mean_over`)."""
  flat, rest = args
  return jax.value_and_grad(lambda f: loss_fn(layout.params_at(f, rest), chunk))(flat)


def check_multiples(multiples: Sequence[float]) -> tuple[float, ...]:
  """The step multiples as floats; a UserError unless they are a non-empty list of positive numbers."""
  if isinstance(multiples, str | bytes) or not len(multiples):
    raise UserError(f"step multiples must be a non-empty list of positive numbers, got {multiples!r}")
  return tuple(common.check_positive("a step multiple", m) for m in multiples)


def gradient_step_smoothness(loss_fn: Callable, params, data, *, lr: float,
                             multiples: Sequence[float] = DEFAULT_MULTIPLES,
                             param_filter: Callable[[str], bool] | None = None) -> dict:
  """Loss range, gradient change and effective beta-smoothness along w - c lr g (Santurkar et al. 2018).

  loss_fn(params, batch) -> scalar (a masked mean over the batch); params: a pytree; data: a batch dict
  or `research.curvature.Chunks`; lr: the learning rate eta (> 0); multiples: the step multiples c (> 0).

  Returns a dict of host floats: `lr`, `multiples`, `step_sizes` (c lr), `distances` (||w_c - w|| =
  c lr ||g||), `loss` (L(w)), `losses` (L(w_c) per c), `loss_range`, `grad_norm` (||g||), `grad_changes`
  (||grad L(w_c) - g|| per c), `grad_change_max`, `betas` (grad change / distance per c),
  `beta_smoothness` (their maximum; NaN when g = 0, where no step is taken), `num_examples`,
  `chunk_size`, `num_params`.
  """
  lr = common.check_positive("the learning rate of a smoothness measurement", lr)
  cs = check_multiples(multiples)
  chunks = common.as_chunks(data)
  flat = common.flatten(params, param_filter)
  run = common.mean_over(_value_and_grad, loss_fn, flat.layout)
  loss0, g = run((flat.flat, flat.rest), chunks)
  grad_norm = float(jnp.linalg.norm(g))
  losses, changes = [], []
  for c in cs:
    loss_c, g_c = run((flat.flat - jnp.asarray(c * lr, flat.flat.dtype) * g, flat.rest), chunks)
    losses.append(float(loss_c))
    changes.append(float(jnp.linalg.norm(g_c - g)))
  distances = [c * lr * grad_norm for c in cs]
  betas = [d_g / d if d > 0 else float("nan") for d_g, d in zip(changes, distances)]
  return {
      "lr": lr, "multiples": list(cs), "step_sizes": [c * lr for c in cs], "distances": distances,
      "loss": float(loss0), "losses": losses, "loss_range": max(losses) - min(losses),
      "grad_norm": grad_norm, "grad_changes": changes, "grad_change_max": max(changes), "betas": betas,
      "beta_smoothness": float(np.max(betas)) if grad_norm > 0 else float("nan"),
      "num_examples": chunks.num_examples, "chunk_size": chunks.chunk_size, "num_params": flat.size,
  }
