"""The top-k spectrum's structure, the SLQ resolution record and BatchNorm ghost batches, against
independent references: operators with a known spectrum (Q diag(lambda) Q^T), exact traces, gradients
built in a known subspace, and the dense `jax.hessian` of the mean over chunks of a batch-statistics loss.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from research import data, models, training
from research.core import spectral
from research.core.errors import UserError
from research.curvature import density, lanczos, operators, quantities, trace
from research.curvature.linear_operator import LinearOperator
from research.evaluators import curvature as curvature_evaluator

pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py

# Three outliers above a bulk: the largest relative gap is lambda_3 / lambda_4 = 8.
SPECTRUM = np.concatenate([[10.0, 9.0, 8.0], np.linspace(1.0, 0.1, 57), np.linspace(-0.05, -0.5, 20)])


def _known_operator(seed: int = 0):
  """(op, Q, eigenvalues): A = Q diag(SPECTRUM) Q^T with a random orthogonal Q (columns: eigenvectors)."""
  d = len(SPECTRUM)
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return LinearOperator.from_dense(q @ np.diag(SPECTRUM) @ q.T), q, SPECTRUM


def test_largest_gap_on_known_values():
  assert spectral.largest_gap([10, 9, 8, 1, 0.9, 0.8]) == (3, 8.0)
  assert spectral.largest_gap([0.8, 10, 1, 9, 0.9, 8]) == (3, 8.0)  # any order
  assert spectral.largest_gap([5.0, 1.0, 0.5, 0.25]) == (1, 5.0)
  # Only positions with lambda_{i+1} > 0 count: the jump from 1 to -3 is no gap.
  assert spectral.largest_gap([4.0, 2.0, 1.0, -3.0]) == (1, 2.0)
  index, ratio = spectral.largest_gap([3.0, 1.0, -1.0])  # fewer than 3 positive values
  assert index is None and np.isnan(ratio)
  with pytest.raises(UserError, match="finite"):
    spectral.largest_gap([1.0, np.nan, 0.5])


def test_spectrum_summary_on_a_known_spectrum():
  op, _, values = _known_operator()
  top = lanczos.eigenpairs(op, 6, key=jax.random.key(0), basis_dtype=jnp.float64, tol=1e-10)
  exact = np.sort(values)[::-1][:6]
  np.testing.assert_allclose(top.values, exact, rtol=1e-8)
  s = quantities.spectrum_summary(top)
  assert s["top_gap_index"] == 3 and s["k"] == 6
  np.testing.assert_allclose(s["top_gap_ratio"], 8.0, rtol=1e-8)
  np.testing.assert_allclose(s["lambda_1_over_lambda_k"], exact[0] / exact[5], rtol=1e-8)
  np.testing.assert_allclose(s["lambda_1_over_lambda_2"], 10 / 9, rtol=1e-8)
  assert len(s["top_residual_norms"]) == 6 and all(s["top_converged"])
  assert "top_trace_fraction" not in s  # no trace measured
  json.dumps(s)


def test_top_trace_fraction_against_the_exact_trace():
  op, _, values = _known_operator()
  top = lanczos.eigenpairs(op, 3, key=jax.random.key(1), basis_dtype=jnp.float64, tol=1e-10)
  exact_fraction = 27.0 / values.sum()  # the trace includes the negative eigenvalues
  # The formula on an exact trace with a given standard error (delta method).
  given = trace.TraceEstimate(float(values.sum()), 0.5, 0, {})
  s = quantities.spectrum_summary(top, trace=given)
  np.testing.assert_allclose(s["top_trace_fraction"], exact_fraction, rtol=1e-8)
  np.testing.assert_allclose(s["top_trace_fraction_se"], exact_fraction * 0.5 / values.sum(), rtol=1e-8)
  # With Hutchinson's estimate: within 4 of its standard errors of the exact fraction.
  est = trace.hutchinson(op, jax.random.key(2), 400, batch=50)
  s = quantities.spectrum_summary(top, trace=est)
  assert s["trace"] == est.estimate and s["trace_se"] == est.std_error
  assert abs(s["top_trace_fraction"] - exact_fraction) < 4 * s["top_trace_fraction_se"]
  np.testing.assert_allclose(s["top_trace_fraction"], 27.0 / est.estimate, rtol=1e-8)


def test_gradient_fraction_in_the_top_subspace():
  """g = 3 q_1 + 4 q_2 + 12 q_40: |P_3 g|^2 / |g|^2 = 25 / 169 in the top-3 eigenspace from Lanczos."""
  op, q, _ = _known_operator(seed=3)
  top = lanczos.eigenpairs(op, 3, key=jax.random.key(3), basis_dtype=jnp.float64, tol=1e-10)
  g = 3 * q[:, 0] + 4 * q[:, 1] + 12 * q[:, 39]
  np.testing.assert_allclose(quantities.top_subspace_fraction(g, top.vectors), 25 / 169, rtol=1e-8)
  np.testing.assert_allclose(quantities.top_subspace_fraction(q[:, 2], top.vectors), 1.0, rtol=1e-8)


def test_density_resolution_states_what_it_cannot_resolve():
  op, _, values = _known_operator()
  quick = density.slq(op, jax.random.key(4), num_probes=1, num_steps=40, basis_dtype=jnp.float64)
  r = spectral.resolution(quick)
  assert (r["num_probes"], r["num_steps"], r["size"], r["max_distinct_eigenvalues"]) == (1, 40, 80, 40)
  lo, hi = r["node_range"]
  assert values.min() - 1e-8 <= lo and hi <= values.max() + 1e-8  # Ritz values interlace the spectrum
  np.testing.assert_allclose(hi, values.max(), rtol=1e-6)  # the separated top converges in 40 steps
  np.testing.assert_allclose(r["node_spacing"], (hi - lo) / 40, rtol=1e-12)
  assert r["kernel_width"] == r["node_spacing"] and r["isolated_eigenvalue_weight"] == 1 / 80
  text = r["cannot_resolve"]
  assert "m = 40" in text and "not resolved" in text and "at most 40 distinct" in text
  assert "no error bar" in text
  narrow = spectral.resolution(density.slq(op, jax.random.key(5), num_probes=3, num_steps=20,
                                           basis_dtype=jnp.float64), kernel_width=1e-3)
  assert narrow["kernel_width"] == 1e-3 and "below the node spacing" in narrow["cannot_resolve"]
  assert "3 probes" in narrow["cannot_resolve"] and "no error bar" not in narrow["cannot_resolve"]
  assert spectral.GHORBANI["density_steps"] == 90
  json.dumps(r)


# ---------------------------------------------------------------------------------------------------
# BatchNorm ghost batches


def _bn_problem():
  ds = data.load("synthetic", synthetic_train=40, synthetic_test=8, image_shape=(4, 4, 1), num_classes=3,
                 valid_size=0, eval_train_size=8)
  model = models.create("simple_cnn", num_classes=3, input_shape=ds.input_shape, rngs=nnx.Rngs(0),
                        param_dtype=jnp.float64, channels=2, dense=6, norm="batch", blocks=1)
  graphdef, params, rest = models.split(model)
  preprocess = lambda x: (x.astype(jnp.float64) / 255.0 - ds.mean.astype(np.float64)) / ds.std
  loss_fn, _ = operators.model_functions(graphdef, rest, bn_mode="batch", preprocess=preprocess)
  return ds, params, loss_fn


def test_batch_mode_hessian_is_the_mean_over_ghost_batches():
  """Chunks of 10: the operator equals the dense Hessian of the mean over the 4 chunks of each chunk's
  batch-statistics loss, and differs from the Hessian with one ghost batch of all 40 examples."""
  ds, params, loss_fn = _bn_problem()
  chunks = operators.make_chunks(ds.train.images, ds.train.labels, 10, shard=False)
  op = operators.hessian(loss_fn, params, chunks, info={"bn_mode": "batch"})
  assert op.info["ghost_batch_size"] == 10 and op.info["chunk_size"] == 10
  flat, unravel = ravel_pytree(params)
  images, labels = ds.train.images, ds.train.labels

  def ghost_mean(w, size):
    parts = [loss_fn(unravel(w), {"image": images[i:i + size], "label": labels[i:i + size].astype(np.int32)})
             for i in range(0, 40, size)]
    return sum(parts) / len(parts)

  dense = np.asarray(jax.jit(jax.hessian(lambda w: ghost_mean(w, 10)))(flat))
  v = np.random.default_rng(0).normal(size=op.size)
  hv = np.asarray(op.matvec(jnp.asarray(v)))
  np.testing.assert_allclose(hv, dense @ v, rtol=1e-5, atol=1e-7 * np.abs(dense @ v).max())
  whole = np.asarray(jax.jit(jax.hessian(lambda w: ghost_mean(w, 40)))(flat))
  assert np.abs(whole @ v - dense @ v).max() > 1e-3 * np.abs(dense @ v).max()  # the chunk size matters


def test_batch_mode_refuses_a_padded_chunk():
  """40 examples in chunks of 15: the last chunk's batch statistics would include 5 padded copies."""
  ds, params, loss_fn = _bn_problem()
  ragged = operators.make_chunks(ds.train.images, ds.train.labels, 15, shard=False)
  for build in (lambda: operators.hessian(loss_fn, params, ragged),
                lambda: operators.mean_gradient(loss_fn, params, ragged)):
    with pytest.raises(UserError, match=r"examples \(40\) must be a multiple of the chunk size \(15\)"):
      build()
  # A wrapped loss without the attribute: the mode comes from the info.
  wrapped = lambda p, b: loss_fn(p, b)
  with pytest.raises(UserError, match="ghost batch"):
    operators.hessian(wrapped, params, ragged, info={"bn_mode": "batch"})
  graphdef, mlp_params, rest = models.split(models.create("mlp", num_classes=3, input_shape=ds.input_shape,
                                                         rngs=nnx.Rngs(0), depth=1, width=4))
  eval_loss, _ = operators.model_functions(graphdef, rest, bn_mode="eval")
  assert "ghost_batch_size" not in operators.hessian(eval_loss, mlp_params, ragged).info  # eval: masked


def test_evaluator_config_refuses_ragged_ghost_batches():
  c = training.default_config()
  c.curvature.update(dict(every_steps=10, bn_mode="batch", num_examples=1000, chunk_size=300))
  with pytest.raises(UserError, match=r"curvature.num_examples \(1000\) must be a multiple of "
                                      r"curvature.chunk_size \(300\) in bn_mode batch"):
    curvature_evaluator.build(c)
  c.curvature.chunk_size = 250
  assert curvature_evaluator.build(c) is not None


# ---------------------------------------------------------------------------------------------------
# The evaluator's metrics and record


def test_evaluator_logs_the_top_k_structure(tmp_path):
  import helpers

  synth = dict(synthetic_train=64, synthetic_test=16, image_shape=(4, 4, 1), num_classes=3, valid_size=0,
               eval_train_size=16)
  c = helpers.tiny_config(synth, width=8, num_steps=10, eval_every=10, **{
      "curvature.every_steps": 10, "curvature.num_examples": 48, "curvature.chunk_size": 24,
      "curvature.k": 4, "curvature.tol": 1e-6, "curvature.trace_probes": 8, "curvature.gradient": True,
      "curvature.density_every": 10, "curvature.density_probes": 1, "curvature.density_steps": 20})
  jax.config.update("jax_enable_x64", False)  # a normal float32 run
  try:
    training.train_and_evaluate(c, tmp_path)
  finally:
    jax.config.update("jax_enable_x64", True)
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  last = [r for r in rows if "curv/lambda_max" in r][-1]
  assert not any(k.startswith("curv/num_outliers") for r in rows for k in r)
  for name in ("top_gap_index", "top_gap_ratio", "lambda_1_over_lambda_k", "top_trace_fraction",
               "top_trace_fraction_se", "grad_top_fraction"):
    assert f"curv/{name}" in last, name
  record = json.loads((tmp_path / "curvature" / "step10_hessian_train.json").read_text())
  spectrum, values = record["results"]["spectrum"], record["results"]["top"]["values"]
  assert spectrum["top_gap_index"] == last["curv/top_gap_index"] == spectral.largest_gap(values)[0]
  assert 1 <= spectrum["top_gap_index"] < 4
  np.testing.assert_allclose(last["curv/top_trace_fraction"],
                             sum(values) / record["results"]["trace_hutchinson"]["estimate"], rtol=1e-6)
  np.testing.assert_allclose(last["curv/lambda_1_over_lambda_k"], values[0] / values[3], rtol=1e-6)
  assert len(spectrum["top_residual_norms"]) == 4
  dens = record["results"]["density"]
  assert "outliers" not in dens and dens["resolution"]["num_steps"] == 20
  assert "no error bar" in dens["resolution"]["cannot_resolve"]
  assert record["operator"]["bn_mode"] == "eval" and "ghost_batch_size" not in record["operator"]
