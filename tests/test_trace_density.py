"""Trace, diagonal and SLQ density estimators against dense matrices with known spectra (float64)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.core.errors import UserError
from research.curvature import density, trace
from research.curvature.linear_operator import LinearOperator


@pytest.fixture(scope="module")
def x64():
  with jax.enable_x64(True):
    yield


def _matrix(eigenvalues, seed):
  """Q diag(eigenvalues) Q^T with a random orthogonal Q (float64 NumPy)."""
  d = len(eigenvalues)
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return (q * np.asarray(eigenvalues)) @ q.T


SPIKES = (8.0, 12.0, 20.0)
BULK_SIZE = 117  # d = 120: a bulk in [-1, 1] (negative eigenvalues included) and 3 outliers


@pytest.fixture(scope="module")
def spike(x64):
  eigenvalues = np.concatenate([np.linspace(-1.0, 1.0, BULK_SIZE), SPIKES])
  a = _matrix(eigenvalues, 0)
  return a, LinearOperator.from_dense(jnp.asarray(a))


@pytest.fixture(scope="module")
def low_rank(x64):
  """Rank 10 (eigenvalues 10..100) plus a signed noise spectrum of size ~0.05, d = 200."""
  rng = np.random.default_rng(1)
  eigenvalues = np.concatenate([np.linspace(10.0, 100.0, 10), 0.05 * rng.normal(size=190)])
  a = _matrix(eigenvalues, 2)
  return a, LinearOperator.from_dense(jnp.asarray(a))


def test_hutchinson_error_and_standard_error(spike):
  a, op = spike
  n = 256
  est = trace.hutchinson(op, jax.random.key(0), n, batch=64)
  assert est.num_products == n
  assert abs(est.estimate - np.trace(a)) <= 3 * est.std_error
  # Var(z^T A z) = 2 (||A||_F^2 - sum_i A_ii^2) for Rademacher z.
  theory = np.sqrt(2 * (np.sum(a ** 2) - np.sum(np.diag(a) ** 2)) / n)
  assert est.std_error == pytest.approx(theory, rel=0.2)
  assert est.info["method"] == "hutchinson" and est.info["operator"] == "dense"
  assert est.info["num_probes"] == n and est.info["seed"] == 0
  json.dumps(est.to_dict())
  # Probe i comes from split(key)[i]: the batch size changes memory, not the answer.
  same = trace.hutchinson(op, jax.random.key(0), n, batch=128)
  assert same.estimate == pytest.approx(est.estimate, rel=1e-12)


def test_hutch_plus_plus_and_xtrace_beat_hutchinson(low_rank):
  a, op = low_rank
  exact = np.trace(a)
  products = 60
  plain = trace.hutchinson(op, jax.random.key(1), products, batch=60)
  hpp = trace.hutch_plus_plus(op, jax.random.key(2), products)
  xt = trace.xtrace(op, jax.random.key(3), products)
  assert hpp.num_products == products and xt.num_products == products
  assert xt.info["method"] == "xtrace" and not xt.info["exact_range"]
  for est in (hpp, xt):
    assert abs(est.estimate - exact) <= 3 * est.std_error
    # Deflating the rank-10 part leaves only the noise: far below Hutchinson's error scale.
    assert abs(est.estimate - exact) < 0.05 * plain.std_error
    assert est.std_error < 0.05 * plain.std_error


def test_xtrace_exact_when_the_rank_is_below_the_sketch(x64):
  a = _matrix(np.concatenate([[5.0, -3.0, 2.0, 0.5], np.zeros(16)]), 3)
  xt = trace.xtrace(LinearOperator.from_dense(jnp.asarray(a)), jax.random.key(0), 12)
  assert xt.estimate == pytest.approx(4.5, abs=1e-9) and xt.info["exact_range"] and xt.std_error == 0


def test_diagonal_and_block_traces(spike):
  a, op = spike
  n = 200
  diag = trace.diagonal(op, jax.random.key(4), n, batch=50)
  z = (diag.estimate - np.diag(a)) / diag.std_error
  assert np.mean(np.abs(z) <= 3) >= 0.95
  assert 0.5 <= np.mean(z ** 2) <= 2.0  # the standard errors have the right size
  # Per-entry variance of z_j (A z)_j is sum_{k != j} A_jk^2.
  theory = np.sqrt((np.sum(a ** 2, axis=1) - np.diag(a) ** 2) / n)
  assert np.median(diag.std_error / theory) == pytest.approx(1.0, abs=0.15)
  segments = [("a", 0, 30), ("b", 30, 100), ("c", 100, 120)]
  blocks = trace.block_traces(diag, segments)
  assert list(blocks) == ["a", "b", "c"]
  for name, start, stop in segments:
    assert blocks[name].estimate == pytest.approx(diag.estimate[start:stop].sum(), rel=1e-12)
    assert abs(blocks[name].estimate - np.trace(a[start:stop, start:stop])) <= 3 * blocks[name].std_error
  assert sum(b.estimate for b in blocks.values()) == pytest.approx(diag.estimate.sum(), rel=1e-12)
  by_size = trace.block_traces(diag, [30, 70, 20])
  assert [b.estimate for b in by_size.values()] == [b.estimate for b in blocks.values()]
  json.dumps(diag.to_dict())
  with pytest.raises(UserError, match="outside"):
    trace.block_traces(diag, [("a", 0, 121)])


def test_slq_moments_weights_and_outliers(spike):
  a, op = spike
  d = a.shape[0]
  # Many probes: with 3 outliers the per-probe moments are heavy-tailed (chi-square weights on the
  # spikes), and the sample standard error of a dozen probes is often too small.
  num_probes = 64
  result = density.slq(op, jax.random.key(5), num_probes=num_probes, num_steps=30, basis_dtype=jnp.float64)
  assert result.nodes.shape == result.weights.shape == (num_probes, 30)
  assert result.num_products == num_probes * 30
  np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, atol=1e-12)
  eigenvalues = np.linalg.eigvalsh(a)
  for k in (1, 2):
    estimate, std_error = density.moments(result, k)
    assert abs(estimate - np.mean(eigenvalues ** k)) <= 3 * std_error
  assert density.moments(result, 0) == pytest.approx((1.0, 0.0))
  sigma = 0.1
  grid = np.linspace(eigenvalues.min() - 6 * sigma, eigenvalues.max() + 6 * sigma, 4000)
  assert np.trapezoid(density.smooth(result, grid, sigma), grid) == pytest.approx(1.0, abs=1e-6)
  found = density.outliers(result)
  assert found.count == 3
  assert 1.0 < found.threshold < 8.0
  np.testing.assert_allclose(found.values, sorted(SPIKES, reverse=True), rtol=1e-6)
  assert density.outliers(result, threshold=10.0).count == 2
  json.dumps(result.to_dict() | {"outliers": found.to_dict()})
  assert result.info["basis_dtype"] == "float64" and result.info["method"] == "slq"
  assert result.size == d


def test_slq_exact_with_full_krylov_space(x64):
  eigenvalues = np.concatenate([-np.geomspace(0.1, 2.0, 10), np.geomspace(1e-3, 50.0, 40)])
  a = _matrix(eigenvalues, 4)
  op = LinearOperator.from_dense(jnp.asarray(a))
  d = len(eigenvalues)
  result = density.slq(op, jax.random.key(6), num_probes=2, num_steps=d, basis_dtype=jnp.float64,
                       probe="rademacher")
  for nodes in result.nodes:
    np.testing.assert_allclose(np.sort(nodes), np.sort(eigenvalues), rtol=1e-8, atol=1e-8)
  # log10 density: the 10 negative eigenvalues are clipped to the floor (1e-5), the positive ones lie in
  # [1e-3, 50]; the density integrates to 1 and its mass above 1e-4 is the weight of the positive nodes.
  grid = np.linspace(-6.0, 3.0, 3000)
  dens = density.log_density(result, grid, 0.05, floor=1e-5)
  assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-6)
  positive = np.sum(result.weights * (result.nodes > 0), axis=1).mean()
  assert np.trapezoid(np.where(grid > -4.0, dens, 0.0), grid) == pytest.approx(positive, abs=1e-3)
  assert 0.5 < positive < 0.95  # 40 of the 50 eigenvalues, as seen by two probes


def test_slq_breakdown_pads_with_zero_weights(x64):
  distinct = np.array([-2.0, 0.5, 1.0, 4.0])
  a = _matrix(np.repeat(distinct, 10), 5)
  op = LinearOperator.from_dense(jnp.asarray(a))
  result = density.slq(op, jax.random.key(7), num_probes=3, num_steps=12, basis_dtype=jnp.float64)
  assert list(result.num_steps_done) == [4, 4, 4] and result.num_products == 12
  assert result.info["breakdowns"] == 3
  np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, atol=1e-12)
  assert np.all(result.weights[:, 4:] == 0)
  np.testing.assert_allclose(np.sort(result.nodes[:, :4], axis=1), np.tile(distinct, (3, 1)), atol=1e-9)


def test_errors_are_one_line_user_errors(spike):
  _, op = spike
  key = jax.random.key(0)
  calls = [
      lambda: trace.hutchinson(op, key, 0),
      lambda: trace.diagonal(op, key, 0),
      lambda: trace.hutch_plus_plus(op, key, 2),
      lambda: trace.xtrace(op, key, 3),
      lambda: density.slq(op, key, num_probes=0, num_steps=5),
      lambda: density.slq(op, key, num_probes=2, num_steps=op.size + 1),
      lambda: density.slq(op, key, num_probes=2, num_steps=5, probe="uniform"),
  ]
  for call in calls:
    with pytest.raises(UserError) as error:
      call()
    assert "\n" not in str(error.value)
