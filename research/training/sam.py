"""Sharpness-aware minimization: the ascent step of SAM and ASAM.

SAM (Foret et al. 2021, arXiv:2010.01412): the gradient is taken at w + e with
e = rho * g / ||g||_2 (g the gradient at w), the first-order solution of max_{||e|| <= rho} L(w + e).
ASAM (Kwon et al. 2021, arXiv:2102.11600): with T_w = |w| + eta elementwise,
e = rho * T_w^2 g / ||T_w g||_2, which makes the neighbourhood scale-invariant.
m-sharpness (Foret et al. 2021, section 4.1): each micro-batch of m examples gets its own e; the train
step (`research.training.step`) computes them chunk by chunk.
"""

import jax
import jax.numpy as jnp
import optax


def perturbation(grads, params, *, rho: float, adaptive: bool = False, eta: float = 0.01):
  """The SAM (or ASAM) ascent vector e for gradient `grads` at `params`; a pytree like params.

  ||e||_2 = rho for SAM; ||e / T_w||_2 = rho for ASAM. A zero gradient gives e = 0.
  """
  if adaptive:
    scale = jax.tree.map(lambda w: jnp.abs(w) + eta, params)
    scaled = jax.tree.map(lambda t, g: t * g, scale, grads)
    norm = optax.global_norm(scaled)
    direction = jax.tree.map(lambda t, g: t * t * g, scale, grads)
  else:
    norm = optax.global_norm(grads)
    direction = grads
  factor = rho / jnp.maximum(norm, 1e-12)
  return jax.tree.map(lambda d: (factor * d).astype(d.dtype), direction)
