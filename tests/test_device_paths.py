"""The branches written for GPU/TPU, taken on CPU with `RESEARCH_DEVICE_PATHS=accelerator`
(`research.backend.xla.on_cpu()` is then False), give the CPU branches' numbers.

They are: the curvature operators' `lax.scan` over chunks (CPU: a Python loop of one jitted call per
chunk), the train step's rolled loop over chunks (CPU: unrolled up to 16 chunks), XLA's own convolutions,
pooling and residual stream (CPU: `research.backend.cpu`'s implementations) and no CPU compiler options.
References: the same computation on the CPU branches, and dense `jax.hessian` eigenvalues (float64)."""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from research import backend, data, models, training
from research.backend import xla
from research.core import rundir
from research.core.errors import UserError
from research.curvature import lanczos, operators

ACCELERATOR = {xla.PATHS_ENV: "accelerator"}


def _problem():
  ds = data.load("synthetic", synthetic_train=40, synthetic_test=8, image_shape=(6, 6, 1), num_classes=3,
                 valid_size=0, eval_train_size=8)
  model = models.create("simple_cnn", num_classes=3, input_shape=ds.input_shape, rngs=nnx.Rngs(0),
                        channels=2, dense=6, norm="batch", blocks=1, param_dtype=jnp.float64)
  graphdef, params, rest = models.split(model)
  preprocess = lambda x: (x.astype(jnp.float64) / 255.0 - ds.mean.astype(np.float64)) / ds.std
  loss_fn, logits_fn = operators.model_functions(graphdef, rest, preprocess=preprocess)
  return ds, params, loss_fn, logits_fn


def test_the_switch_is_validated_and_recorded(monkeypatch):
  monkeypatch.delenv("RESEARCH_BACKEND", raising=False)
  assert xla.on_cpu() and xla.compiler_options() == xla.CPU_OPTIONS
  monkeypatch.setenv(xla.PATHS_ENV, "accelerator")
  assert not xla.on_cpu() and xla.compiler_options() == {}
  assert backend.describe()["device_paths"] == "accelerator"
  monkeypatch.setenv(xla.PATHS_ENV, "gpu")
  with pytest.raises(UserError, match="auto, accelerator"):
    backend.check_settings()


@pytest.mark.usefixtures("float64")
def test_curvature_scan_over_chunks_equals_the_cpu_loop(monkeypatch):
  ds, params, loss_fn, logits_fn = _problem()
  chunks = operators.make_chunks(ds.train.images, ds.train.labels, 16)  # 16 + 16 + 8 real, 8 padding
  assert chunks.num_chunks == 3 and float(chunks.arrays["mask"].sum()) == 40
  v = jnp.asarray(np.random.default_rng(0).normal(size=ravel_pytree(params)[0].size))
  scans = []
  real_scan = jax.lax.scan
  monkeypatch.setattr(jax.lax, "scan", lambda *a, **k: scans.append(1) or real_scan(*a, **k))

  def products():
    ops = [operators.hessian(loss_fn, params, chunks, cache_bytes=0),
           operators.ggn(logits_fn, "cross_entropy", params, chunks),
           operators.fisher(logits_fn, "cross_entropy", params, chunks, jax.random.key(1)),
           operators.empirical_fisher(logits_fn, "cross_entropy", params, chunks)]
    out = [np.asarray(op.matvec(v)) for op in ops]
    out.append(np.asarray(operators.mean_gradient(loss_fn, params, chunks)))
    top = lanczos.eigenpairs(ops[0], 2, "largest", key=jax.random.key(2), tol=1e-8)
    return out, np.asarray(top.values)

  cpu, cpu_top = products()
  assert not scans  # the CPU branch: one jitted call per chunk
  monkeypatch.setenv(xla.PATHS_ENV, "accelerator")
  forced, forced_top = products()
  assert len(scans) >= 5  # every operator through the accelerator branch's lax.scan
  for a, b in zip(forced, cpu):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(forced_top, cpu_top, rtol=1e-10)
  whole = jax.tree.map(lambda x: x[0], operators.make_chunks(ds.train.images, ds.train.labels).arrays)
  flat, unravel = ravel_pytree(params)
  dense = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(lambda w: loss_fn(unravel(w), whole)))(flat)))
  np.testing.assert_allclose(forced_top, dense[::-1][:2], rtol=1e-7)


SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(8, 8, 1), num_classes=3, valid_size=0,
             eval_train_size=48)


def test_training_with_accelerator_paths_equals_cpu_paths(tmp_path, monkeypatch):
  """simple_cnn (convolutions, pooling, BatchNorm) with 4 chunks per batch and the Hessian's lambda_max
  and trace on 3 chunks at the end, with the CPU backend's implementations installed."""
  c = helpers.tiny_config(SYNTH, num_steps=12, eval_every=6, **{
      "model.name": "simple_cnn", "model.knobs": {"channels": 4, "dense": 16, "norm": "batch", "blocks": 1},
      "training.chunk_size": 8, "schedule.lr": 0.02, "curvature.at_end": True,
      "curvature.num_examples": 40, "curvature.chunk_size": 16, "curvature.trace_probes": 3,
      "curvature.tol": 1e-6})
  finals = {}
  with backend.installed():
    for paths in ("auto", "accelerator"):
      monkeypatch.setenv(xla.PATHS_ENV, paths)
      training.train_and_evaluate(c, tmp_path / paths)
      finals[paths] = rundir.read_metrics(tmp_path / paths / "metrics.jsonl")[-1]
      assert rundir.read_json(tmp_path / paths / "meta.json")["backend_setup"]["device_paths"] == paths
  cpu, forced = finals["auto"], finals["accelerator"]
  assert "curv/lambda_max" in cpu and "curv/trace" in cpu
  for k, v in cpu.items():
    if isinstance(v, float) and not k.endswith("seconds"):
      assert forced[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
