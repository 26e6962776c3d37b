"""Norm- and margin-based complexity measures (as compared in Jiang et al. 2020, "Fantastic
generalization measures and where to find them", arXiv:1912.02178, Appendix C).

Layers W_1..W_L are the parameter leaves with two or more axes (dense and convolution kernels), each
reshaped to a matrix (prod(shape[:-1]), shape[-1]) (Flax kernels end in (..., in, out)); biases and
normalization scales are left out of the products, as in the paper. For convolutions the spectral norm
is that of this reshaped kernel (the paper's approximation), not of the convolution operator.

- `num_params`: omega, the number of (selected) parameters.
- `distance_from_init`: ||w - w0||_2 over all selected parameters.
- `norm_measures`: with F_i = ||W_i||_F^2, S_i = ||W_i||_2^2 (spectral), L = number of layers,
  log_prod_of_fro = sum_i log F_i; log_sum_of_fro = log L + (1/L) sum_i log F_i (the log of
  L (prod F_i)^(1/L)); the same for spectral norms; fro_over_spec = sum_i F_i / S_i;
  param_norm = sum_i F_i; fro_dist = sum_i ||W_i - W0_i||_F^2; dist_spec_init = sum_i ||W_i - W0_i||_2^2.
  Given a margin gamma, the "over margin" variants subtract 2 log gamma (log measures) or divide by gamma^2.
- `path_norm` (Neyshabur, Tomioka & Srebro 2015, arXiv:1503.00036; Jiang et al. eq. 44):
  sum_k f_{w^2}(1)_k, the network with every parameter squared applied to an all-ones input = the sum
  over input-output paths of the product of squared weights (biases count as paths from a constant
  input). Meaningful for networks without normalization layers; the logits_fn must not preprocess.
- `fisher_rao_norm` (Liang, Poggio, Rakhlin & Stokes 2019, "Fisher-Rao metric, geometry, and complexity
  of neural networks", arXiv:1711.01530, Definition 2): ||w||_fr^2 = (1/n) sum_i <w, grad_w l_i>^2
  with the true labels, one forward-mode product (jvp along w) per chunk. For a bias-free ReLU network
  with L weight layers, <w, grad_w l_i> = L <dl_i/dz_i, z_i> (their Lemma 2.1).
- `output_margin`: the `percentile`-th percentile (default 10) of z_y - max_{j != y} z_j over the
  examples (Jiang et al. eq. 22 uses the 10th), and 1 / gamma^2.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from research.backend import xla
from research.core import losses
from research.core import mesh as mesh_lib
from research.core.errors import UserError, choices_message
from research.curvature import operators
from research.measures.common import (
  Measurement,
  as_chunks,
  data_settings,
  flatten,
  mean_over,
)


def num_params(params, param_filter=None) -> int:
  """omega: the number of selected parameters."""
  return flatten(params, param_filter).size


def distance_from_init(params, init_params, param_filter=None) -> float:
  """||w - w0||_2 over the selected parameters."""
  w = np.asarray(flatten(params, param_filter).flat, np.float64)
  w0 = np.asarray(flatten(init_params, param_filter).flat, np.float64)
  if w.shape != w0.shape:
    raise UserError(f"params ({w.size}) and init_params ({w0.size}) differ in size")
  return float(np.linalg.norm(w - w0))


def layer_matrices(params, param_filter=None) -> list[tuple[str, np.ndarray]]:
  """(name, matrix) for every selected leaf with >= 2 axes, reshaped to (prod(shape[:-1]), shape[-1])."""
  leaves, _, names = operators.select(params, param_filter)
  out = [(n, np.asarray(x, np.float64).reshape(-1, x.shape[-1]))
         for n, x in zip(names, leaves) if x.ndim >= 2]
  if not out:
    raise UserError(f"no kernel (a parameter with two or more axes) among {names}")
  return out


def norm_measures(params, init_params=None, *, margin: float | None = None, param_filter=None) -> dict:
  """The norm-based measures of the module docstring, as floats keyed by name."""
  mats = layer_matrices(params, param_filter)
  fro = np.array([np.sum(m**2) for _, m in mats])
  spec = np.array([np.linalg.norm(m, 2) ** 2 for _, m in mats])
  n_layers = len(mats)
  out = {"num_layers": n_layers,
         "log_prod_of_fro": float(np.log(fro).sum()),
         "log_sum_of_fro": float(np.log(n_layers) + np.log(fro).sum() / n_layers),
         "log_prod_of_spec": float(np.log(spec).sum()),
         "log_sum_of_spec": float(np.log(n_layers) + np.log(spec).sum() / n_layers),
         "fro_over_spec": float((fro / spec).sum()),
         "param_norm": float(fro.sum())}
  if init_params is not None:
    init = dict(layer_matrices(init_params, param_filter))
    diffs = [m - init[n] for n, m in mats]
    out["fro_dist"] = float(sum(np.sum(d**2) for d in diffs))
    out["dist_spec_init"] = float(sum(np.linalg.norm(d, 2) ** 2 for d in diffs))
    out["distance_from_init"] = distance_from_init(params, init_params, param_filter)
  if margin is not None:
    if not margin > 0:
      raise UserError(f"margin must be positive to divide by, got {margin!r}")
    log_m2 = 2 * np.log(margin)
    for name in ("log_prod_of_fro", "log_prod_of_spec"):
      out[f"{name}_over_margin"] = out[name] - float(log_m2)
    for name in ("log_sum_of_fro", "log_sum_of_spec"):
      out[f"{name}_over_margin"] = out[name] - float(log_m2) / n_layers
  return out


def path_norm(logits_fn: Callable, params, input_shape: tuple[int, ...], *,
              input_key: str = "image") -> float:
  """sum_k f_{w^2}(1)_k: every parameter squared, one all-ones input of `input_shape` (module docstring)."""
  squared = jax.tree.map(lambda x: x * x, params)
  dtype = jax.tree.leaves(params)[0].dtype
  batch = {input_key: jnp.ones((1,) + tuple(input_shape), dtype), "label": jnp.zeros((1,), jnp.int32),
           "mask": jnp.ones((1,), jnp.float32)}
  return float(jnp.sum(logits_fn(squared, batch)))


def _fisher_rao_chunk(logits_fn: Callable, loss_name: str, layout, args, chunk):
  """Mean over one chunk's real examples of <w, grad_w l_i>^2, by one jvp along w."""
  flat, rest = args
  per_example = lambda v: losses.per_example_loss(loss_name, logits_fn(layout.params_at(v, rest), chunk),
                                                  chunk["label"])
  _, directional = jax.jvp(per_example, (flat,), (flat,))  # (n,) <w, grad_w l_i>
  mask = chunk["mask"].astype(directional.dtype)
  return (directional**2 * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def fisher_rao_norm(logits_fn: Callable, params, data, *, loss_name: str = "cross_entropy",
                    param_filter=None, info: dict | None = None) -> Measurement:
  """||w||_fr^2 = (1/n) sum_i <w, grad_w l_i>^2 (module docstring); value is the squared norm."""
  if loss_name not in losses.LOSSES:
    raise UserError(choices_message("loss", loss_name, losses.LOSSES))
  chunks = as_chunks(data)
  fp = flatten(params, param_filter)

  value = float(mean_over(_fisher_rao_chunk, logits_fn, loss_name, fp.layout)((fp.flat, fp.rest), chunks))
  settings = data_settings(chunks, loss=loss_name, num_params=fp.size) | (info or {})
  return Measurement("fisher_rao_norm_sq", value, float("nan"), settings)


@functools.partial(xla.jit, static_argnums=(0,))
def _chunk_margins(logits_fn: Callable, params, chunk):
  z = logits_fn(params, chunk)
  correct = jnp.take_along_axis(z, chunk["label"][:, None].astype(jnp.int32), -1)[:, 0]
  others = jnp.where(jax.nn.one_hot(chunk["label"], z.shape[-1], dtype=bool), -jnp.inf, z)
  return correct - others.max(-1)


def margins(logits_fn: Callable, params, data) -> np.ndarray:
  """(n,) z_y - max_{j != y} z_j for every real example, on the host."""
  chunks = as_chunks(data)

  out = [mesh_lib.to_host(_chunk_margins(logits_fn, params, jax.tree.map(lambda x, c=c: x[c], chunks.arrays)))
         for c in range(chunks.num_chunks)]  # examples split over processes: gathered
  mask = mesh_lib.to_host(chunks.arrays["mask"]).reshape(-1) > 0
  return np.concatenate(out)[mask]


def output_margin(logits_fn: Callable, params, data, *, percentile: float = 10.0,
                  info: dict | None = None) -> Measurement:
  """gamma = the `percentile`-th percentile of the output margins (np.percentile, linear); details
  hold 1 / gamma^2 (Jiang et al.'s inverse margin; nan when gamma <= 0, i.e. when more than `percentile`%
  of the examples are misclassified or tied: 1 / gamma^2 would then rank a worse fit as less complex)
  and the fraction of negative margins."""
  if not 0 <= percentile <= 100:
    raise UserError(f"percentile must be in [0, 100], got {percentile!r}")
  chunks = as_chunks(data)
  m = margins(logits_fn, params, chunks)
  gamma = float(np.percentile(m, percentile))
  settings = data_settings(chunks, percentile=percentile) | (info or {})
  return Measurement("output_margin", gamma, float("nan"), settings,
                     {"inverse_margin_sq": 1.0 / gamma**2 if gamma > 0 else float("nan"),
                      "fraction_negative": float((m < 0).mean()), "median": float(np.median(m))})

