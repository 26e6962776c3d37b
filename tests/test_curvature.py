"""Curvature operators and eigen-solvers against dense matrices (float64) on tiny models.

The references: `jax.hessian` of the flattened dataset-mean loss; the dense GGN J^T H_out J from
`jax.jacobian`; central finite differences of the gradient; NumPy's `eigh`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from research import data, models
from research.core.errors import UserError
from research.curvature import lanczos, operators, quantities
from research.curvature.linear_operator import LinearOperator

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py


def _setup(name, **knobs):
  ds = data.load("synthetic", synthetic_train=40, synthetic_test=8, image_shape=(4, 4, 1), num_classes=3,
                 valid_size=0, eval_train_size=8)
  model = models.create(name, num_classes=3, input_shape=ds.input_shape, rngs=nnx.Rngs(0),
                        param_dtype=jnp.float64, **knobs)
  if any(isinstance(m, nnx.BatchNorm) for _, m in model.iter_modules()):  # non-trivial running stats
    for _, m in model.iter_modules():
      if isinstance(m, nnx.BatchNorm):
        m.mean[...] = 0.1 * jnp.arange(m.mean.shape[0], dtype=m.mean.dtype)
        m.var[...] = 1.0 + 0.2 * jnp.arange(m.var.shape[0], dtype=m.var.dtype)
  graphdef, params, rest = models.split(model)
  return ds, graphdef, params, rest


MODELS = {"mlp": dict(depth=1, width=10), "simple_cnn": dict(channels=2, dense=6, norm="batch", blocks=1)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def problem(request):
  ds, graphdef, params, rest = _setup(request.param, **MODELS[request.param])
  # Float64 inputs: float32 normalization rounds differently in different jitted programs.
  preprocess = lambda x: (x.astype(jnp.float64) / 255.0 - ds.mean.astype(np.float64)) / ds.std
  loss_fn, logits_fn = operators.model_functions(graphdef, rest, bn_mode="eval", preprocess=preprocess)
  whole = operators.make_chunks(ds.train.images, ds.train.labels, shard=False)
  batch = jax.tree.map(lambda x: x[0], whole.arrays)
  flat, unravel = ravel_pytree(params)
  # Jitted like the operators: eager and jitted float32 input normalization can differ in the last bit.
  dense_h = np.asarray(jax.jit(jax.hessian(lambda w: loss_fn(unravel(w), batch)))(flat))
  return dict(ds=ds, params=params, loss_fn=loss_fn, logits_fn=logits_fn, whole=whole, batch=batch,
              flat=flat, unravel=unravel, dense_h=dense_h)


def test_products_compile_once_whatever_the_vector_placement(problem):
  """A fresh vector (no mesh) and a product's output (replicated on the chunks' mesh) run the same
  compiled program: Lanczos's first vector used to cost a second compilation of the product."""
  p = problem
  op = operators.hessian(p["loss_fn"], p["params"], operators.make_chunks(p["ds"].train.images,
                                                                          p["ds"].train.labels))
  compiles = []

  def listener(event, duration, **kw):
    if event.endswith("backend_compile_duration"):
      compiles.append(event)

  v = op.matvec(jnp.asarray(np.random.default_rng(2).normal(size=op.size)))
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    w = op.matvec(v)
    op.matvec(jnp.asarray(np.asarray(w)))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert compiles == []


def test_hessian_products_match_dense_finite_differences_and_chunks(problem):
  p = problem
  op = operators.hessian(p["loss_fn"], p["params"], p["whole"])
  v = np.random.default_rng(0).normal(size=op.size)
  np.testing.assert_allclose(op.matvec(jnp.asarray(v)), p["dense_h"] @ v, rtol=1e-8, atol=1e-10)
  grad = jax.jit(jax.grad(lambda w: p["loss_fn"](p["unravel"](w), p["batch"])))
  eps = 1e-5
  fd = (grad(p["flat"] + eps * v) - grad(p["flat"] - eps * v)) / (2 * eps)
  np.testing.assert_allclose(op.matvec(jnp.asarray(v)), fd, rtol=1e-6, atol=1e-8)
  # 40 examples in chunks of 16: 16 + 16 + 8 real (the last chunk half padding) = the one-batch product.
  chunked = operators.make_chunks(p["ds"].train.images, p["ds"].train.labels, 16, shard=False)
  assert chunked.num_chunks == 3
  np.testing.assert_allclose(operators.hessian(p["loss_fn"], p["params"], chunked).matvec(jnp.asarray(v)),
                             p["dense_h"] @ v, rtol=1e-10, atol=1e-12)
  assert op.info["operator"] == "hessian" and op.info["num_examples"] == 40


def test_cached_linearization_gives_the_recomputed_products(problem):
  """The default operator reuses each chunk's linearization (built at the first product); with no room
  (`cache_bytes=0`, or a budget below the size) every product recomputes everything. Same numbers."""
  p = problem
  chunked = operators.make_chunks(p["ds"].train.images, p["ds"].train.labels, 16, shard=False)
  rng = np.random.default_rng(1)
  cached = operators.hessian(p["loss_fn"], p["params"], chunked)
  plain = operators.hessian(p["loss_fn"], p["params"], chunked, cache_bytes=0)
  tiny = operators.hessian(p["loss_fn"], p["params"], chunked, cache_bytes=1000)
  for _ in range(2):  # the second product reuses the first one's linearization
    v = jnp.asarray(rng.normal(size=cached.size))
    want = p["dense_h"] @ np.asarray(v)
    for op in (cached, plain, tiny):
      np.testing.assert_allclose(op.matvec(v), want, rtol=1e-10, atol=1e-12)
  (cache,) = [c.cell_contents for c in cached.matvec.__closure__ if type(c.cell_contents).__name__ ==
              "_LinearizationCache"]
  (no_room,) = [c.cell_contents for c in tiny.matvec.__closure__ if type(c.cell_contents).__name__ ==
                "_LinearizationCache"]
  assert cache.fits and len(cache.linear) == 3 and no_room.fits is False and not no_room.linear


def test_lanczos_top_and_bottom_eigenpairs_match_dense(problem):
  p = problem
  op = operators.hessian(p["loss_fn"], p["params"], p["whole"])
  evals, evecs = np.linalg.eigh(p["dense_h"])
  for which, ref in (("largest", evals[::-1][:5]), ("smallest", evals[:5])):
    res = lanczos.eigenpairs(op, 5, which, basis_dtype=jnp.float64, tol=1e-9, key=jax.random.key(1))
    assert res.all_converged and res.info["operator"] == "hessian"
    np.testing.assert_allclose(res.values, ref, rtol=1e-6, atol=1e-9 * abs(evals).max())
    idx = [int(np.argmin(abs(evals - v))) for v in res.values]
    for x, i in zip(res.vectors, idx, strict=True):
      if min(abs(evals[i] - np.delete(evals, i))) > 1e-6 * abs(evals).max():  # a simple eigenvalue
        cos = abs(np.dot(x, evecs[:, i])) / np.linalg.norm(x)
        assert np.arccos(min(cos, 1.0)) < 1e-3
  both = lanczos.eigenpairs(op, 2, "both", basis_dtype=jnp.float64, tol=1e-9)
  np.testing.assert_allclose(sorted(both.values), [evals[0], evals[-1]], rtol=1e-6)


def test_ggn_fisher_and_covariance_match_dense(problem):
  p = problem
  logits = lambda w: p["logits_fn"](p["unravel"](w), p["batch"])
  jac = np.asarray(jax.jit(jax.jacobian(logits))(p["flat"]))  # (n, C, P)
  z = np.asarray(jax.jit(logits)(p["flat"]))
  prob = np.exp(z - z.max(1, keepdims=True))
  prob /= prob.sum(1, keepdims=True)
  n = len(z)
  dense_ggn = sum(jac[i].T @ (np.diag(prob[i]) - np.outer(prob[i], prob[i])) @ jac[i] for i in range(n)) / n
  g = operators.ggn(p["logits_fn"], "cross_entropy", p["params"], p["whole"]).to_dense()
  np.testing.assert_allclose(g, dense_ggn, rtol=1e-8, atol=1e-12)
  labels = np.asarray(p["batch"]["label"])
  r = prob - np.eye(3)[labels]
  per_example = np.einsum("nc,ncp->np", r, jac)
  dense_ef = per_example.T @ per_example / n
  ef = operators.empirical_fisher(p["logits_fn"], "cross_entropy", p["params"], p["whole"]).to_dense()
  np.testing.assert_allclose(ef, dense_ef, rtol=1e-8, atol=1e-12)
  mean_g = per_example.mean(0)
  cov = operators.gradient_covariance(p["logits_fn"], p["loss_fn"], "cross_entropy", p["params"], p["whole"])
  np.testing.assert_allclose(cov.to_dense(), dense_ef - np.outer(mean_g, mean_g), rtol=1e-7, atol=1e-12)
  fisher = operators.fisher(p["logits_fn"], "cross_entropy", p["params"], p["whole"], jax.random.key(3))
  f = fisher.to_dense()
  np.testing.assert_allclose(f, f.T, atol=1e-12)
  assert np.linalg.eigvalsh(f).min() > -1e-10
  mse = operators.ggn(p["logits_fn"], "mse", p["params"], p["whole"]).to_dense()
  np.testing.assert_allclose(mse, np.einsum("ncp,ncq->pq", jac, jac) / n, rtol=1e-8, atol=1e-12)


def test_per_layer_block_and_preconditioned_operator(problem):
  p = problem
  names = [b[0] for b in operators.parameter_blocks(p["params"])]
  head = [b for b in operators.parameter_blocks(p["params"]) if b[0].startswith("head")]
  block = operators.hessian(p["loss_fn"], p["params"], p["whole"],
                            param_filter=lambda s: s.startswith("head"))
  start, stop = head[0][1], head[-1][2]
  np.testing.assert_allclose(block.to_dense(), p["dense_h"][start:stop, start:stop], rtol=1e-8, atol=1e-12)
  assert block.info["parameters"] == [n for n in names if n.startswith("head")]
  diag = np.linspace(0.5, 2.0, len(p["flat"]))
  pre = operators.preconditioned(operators.hessian(p["loss_fn"], p["params"], p["whole"]), diag)
  s = 1 / np.sqrt(diag)
  np.testing.assert_allclose(pre.to_dense(), s[:, None] * p["dense_h"] * s[None, :], rtol=1e-8, atol=1e-12)


def test_logged_quantities_match_dense(problem):
  p = problem
  batch = p["batch"]
  one = lambda w, image, label: p["loss_fn"](p["unravel"](w), {"image": image[None], "label": label[None]})
  per_example = np.asarray(jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0, 0)))(
      p["flat"], batch["image"], batch["label"]))
  g = per_example.mean(0)
  trace_sigma = (per_example ** 2).sum(1).mean() - g @ g
  chunks = operators.make_chunks(p["ds"].train.images, p["ds"].train.labels, 16, shard=False)
  exact = quantities.gradient_noise_scale(p["loss_fn"], p["params"], chunks)
  np.testing.assert_allclose(exact["gradient_noise_scale"], trace_sigma / (g @ g), rtol=1e-8)
  two = quantities.gradient_noise_scale_two_batch(
      p["loss_fn"], p["params"], p["ds"].train.images, p["ds"].train.labels, jax.random.key(0), small=4,
      big=20, num_pairs=300)
  assert abs(two["trace_sigma"] / trace_sigma - 1) < 0.25  # unbiased; this is a 300-pair average
  h = p["dense_h"]
  np.testing.assert_allclose(quantities.gradient_curvature(LinearOperator.from_dense(h), g),
                             g @ h @ g / (g @ g), rtol=1e-10)
  evals, evecs = np.linalg.eigh(h)
  top = evecs[:, -3:].T
  np.testing.assert_allclose(quantities.top_subspace_fraction(g, top), ((top @ g) ** 2).sum() / (g @ g),
                             rtol=1e-10)
  op = operators.hessian(p["loss_fn"], p["params"], p["whole"])
  s = quantities.spectrum_summary(lanczos.eigenpairs(op, 2, basis_dtype=jnp.float64, tol=1e-9),
                                  lanczos.eigenpairs(op, 1, "smallest", basis_dtype=jnp.float64, tol=1e-9))
  np.testing.assert_allclose([s["lambda_max"], s["lambda_min"], s["lambda_1_over_lambda_2"]],
                             [evals[-1], evals[0], evals[-1] / evals[-2]], rtol=1e-6)


def test_bad_input_is_named():
  op = LinearOperator.from_dense(np.diag([1.0, 2.0, 3.0]))
  with pytest.raises(UserError, match="k = 4 eigenpairs asked of an operator of dimension 3"):
    lanczos.eigenpairs(op, 4)
  with pytest.raises(UserError, match="not symmetric"):
    lanczos.eigenpairs(LinearOperator.from_dense(np.triu(np.ones((3, 3)))), 1, check_symmetry=True)
  with pytest.raises(UserError, match="not finite"):
    lanczos.eigenpairs(LinearOperator.from_dense(np.diag([1.0, np.nan, 3.0])), 1)
  stuck = lanczos.eigenpairs(LinearOperator.from_dense(np.diag(np.linspace(1, 1.001, 200))), 1,
                             krylov_dim=5, max_restarts=1)
  assert not stuck.all_converged  # said, not hidden


SCRIPT = """
import sys, numpy as np, jax, jax.numpy as jnp
from flax import nnx
from research import data, models
from research.curvature import operators
ds = data.load("synthetic", synthetic_train=40, synthetic_test=8, image_shape=(4, 4, 1), num_classes=3,
               valid_size=0, eval_train_size=8)
model = models.create("simple_cnn", num_classes=3, input_shape=ds.input_shape, rngs=nnx.Rngs(0),
                      channels=2, dense=6, norm="batch", blocks=1)
graphdef, params, rest = models.split(model)
loss_fn, _ = operators.model_functions(graphdef, rest, preprocess=ds.preprocess)
chunks = operators.make_chunks(ds.train.images, ds.train.labels, 16)
op = operators.hessian(loss_fn, params, chunks)
v = np.random.default_rng(0).normal(size=op.size).astype(np.float32)
np.save(sys.argv[1], np.asarray(op.matvec(jnp.asarray(v))))
print(jax.device_count(), chunks.chunk_size)
"""


def test_one_and_four_devices_agree(tmp_path):
  outs = {}
  for devices in (1, 4):
    env = os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"{devices}.npy")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[0] == str(devices)
    outs[devices] = np.load(tmp_path / f"{devices}.npy")
  np.testing.assert_allclose(outs[4], outs[1], rtol=1e-4, atol=1e-6)


def test_curvature_cli_measures_a_checkpoint(tmp_path):
  from experiments import measure as cli
  from research import training

  jax.config.update("jax_enable_x64", False)  # a normal float32 run
  try:
    c = training.default_config()
    c.data.name = "synthetic"
    c.data.options.update(dict(synthetic_train=64, synthetic_test=16, image_shape=(4, 4, 1), num_classes=3,
                               valid_size=0, eval_train_size=16))
    c.model.name = "mlp"
    c.model.knobs.update(dict(depth=1, width=8))
    c.training.batch_size, c.training.num_epochs, c.training.num_steps = 16, 0, 10
    c.eval.every_epochs, c.eval.batch_size, c.progress = 0, 16, "none"
    training.train_and_evaluate(c, tmp_path)
    assert cli.main(["--workdir", str(tmp_path), "--what", "lambda_max,trace,density", "--num_examples", "40",
                     "--chunk_size", "16", "--num_probes", "6"]) == 0
    record = json.loads((tmp_path / "curvature" / "step10_hessian_train.json").read_text())
    assert record["operator"]["num_examples"] == 40 and record["operator"]["bn_mode"] == "eval"
    assert record["results"]["top"]["converged"][0] and record["results"]["spectrum"]["lambda_max"] > 0
    assert record["results"]["trace_hutchinson"]["std_error"] > 0
    assert set(np.load(tmp_path / "curvature" / "step10_hessian_train.npz")) >= {"top_vectors", "slq_nodes"}
    assert cli.main(["--workdir", str(tmp_path), "--what", "lambda_max", "--checkpoint", "3"]) == 2
  finally:
    jax.config.update("jax_enable_x64", True)
