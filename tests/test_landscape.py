"""Loss-landscape directions, scans and interpolation against independent computations (float64).

References: the loss evaluated directly at each grid point; per-filter norms computed with NumPy;
Dinh et al.'s rescaling of a ReLU MLP (the same function with different weights); closed-form losses
along a segment; BatchNorm statistics computed by hand from the first layer's pre-activations; the
dense `jax.hessian` of a tiny model.
"""

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

from research import data, landscape, models
from research.core.errors import UserError
from research.curvature import operators

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py


@pytest.fixture(scope="module")
def ds():
  return data.load("synthetic", synthetic_train=40, synthetic_test=10, image_shape=(6, 6, 1), num_classes=3,
                   valid_size=0, eval_train_size=10)


@pytest.fixture(scope="module")
def cnn(ds):
  return _model(ds, "simple_cnn", channels=2, dense=6, blocks=1, norm="batch")


@pytest.fixture(scope="module")
def mlp(ds):
  return _model(ds, "mlp", depth=1, width=8)


@pytest.fixture(scope="module")
def mlp_bn(ds):
  return _model(ds, "mlp", depth=1, width=5, norm="batch")


def _preprocess(ds):
  return lambda x: (x.astype(jnp.float64) / 255.0 - ds.mean.astype(np.float64)) / ds.std


def _model(ds, name, seed=0, **knobs):
  model = models.create(name, num_classes=3, input_shape=ds.input_shape, rngs=nnx.Rngs(seed),
                        param_dtype=jnp.float64, **knobs)
  for _, m in model.iter_modules():  # non-trivial running statistics, in float64 (NNX keeps float32)
    if isinstance(m, nnx.BatchNorm):
      m.mean.set_value(0.1 * jnp.arange(m.mean.shape[0], dtype=jnp.float64))
      m.var.set_value(1.0 + 0.2 * jnp.arange(m.var.shape[0], dtype=jnp.float64))
  return models.split(model)


def _leaves(tree) -> dict:
  return {operators.path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _moved(params, directions, coeffs):
  return jax.tree.map(lambda w, *ds: w + sum(c * d for c, d in zip(coeffs, ds)), params,
                      *[d.tree for d in directions])


def test_scan_equals_direct_evaluation(ds, cnn):
  graphdef, params, rest = cnn
  pre = _preprocess(ds)
  loss_fn, logits_fn = operators.model_functions(graphdef, rest, preprocess=pre)
  dirs = landscape.random_directions(params, 3, 2)
  xs, ys = np.array([-0.5, 0.0, 1.0]), np.array([-1.0, 0.25])
  # 6 points in batches of 4 (the last one padded), 40 examples in chunks of 16 (the last one ragged).
  # A second split of 24 examples (chunks of 16 as well, so no new compilation), given as arrays.
  other = (ds.train.images[8:32], ds.train.labels[8:32])
  result = landscape.scan_2d(landscape.point_model(graphdef, rest, preprocess=pre), params, dirs,
                             {"train": ds.train, "other": other}, xs=xs, ys=ys, points_per_batch=4,
                             chunk_size=16)
  assert result.values["train"]["loss"].shape == (3, 2)
  assert result.info["bn_mode"] == "eval" and result.info["splits"]["train"]["num_examples"] == 40
  direct = jax.jit(lambda p, batch: (loss_fn(p, batch), logits_fn(p, batch)))
  for name, (images, labels) in [("train", (ds.train.images, ds.train.labels)), ("other", other)]:
    batch = {"image": images, "label": labels}
    for i, x in enumerate(xs):
      for j, y in enumerate(ys):
        loss, logits = direct(_moved(params, dirs, (x, y)), batch)
        np.testing.assert_allclose(result.values[name]["loss"][i, j], loss, rtol=1e-10)
        accuracy = np.mean(np.argmax(np.asarray(logits), -1) == labels)
        assert result.values[name]["accuracy"][i, j] == pytest.approx(accuracy, abs=1e-12)
  # One point at a time gives the same numbers; a plain logits_fn works as the model too.
  one = landscape.scan(logits_fn, params, dirs, [xs, ys], {"train": ds.train}, points_per_batch=1,
                       chunk_size=16)
  np.testing.assert_allclose(one.values["train"]["loss"], result.values["train"]["loss"], rtol=1e-10)


def test_filter_and_layer_normalized_directions_have_the_weights_norms(cnn):
  _, params, _ = cnn
  w = {k: np.asarray(v) for k, v in _leaves(params).items()}
  assert w["convs.0.kernel.value"].shape == (3, 3, 1, 2)
  for bias_and_norm in ("zero", "keep"):
    d = landscape.random_direction(params, 1, normalization="filter", bias_and_norm=bias_and_norm)
    assert d.info == {"type": "random", "normalization": "filter", "bias_and_norm": bias_and_norm,
                      "seed": 1}
    for name, leaf in _leaves(d.tree).items():
      leaf = np.asarray(leaf)
      if w[name].ndim >= 2:  # each filter (last axis) has its weights' norm
        axes = tuple(range(w[name].ndim - 1))
        np.testing.assert_allclose(np.sqrt((leaf ** 2).sum(axes)), np.sqrt((w[name] ** 2).sum(axes)),
                                   rtol=1e-12)
        assert not np.allclose(leaf, w[name])  # random, not a copy of the weights
      elif bias_and_norm == "zero":  # biases and norm scales/offsets zeroed
        assert not leaf.any()
      else:  # kept: random, with the whole vector's norm (BatchNorm scales are ones, biases zeros)
        assert leaf.any() == w[name].any()
        assert np.linalg.norm(leaf) == pytest.approx(np.linalg.norm(w[name]), rel=1e-12)
  layer = landscape.random_direction(params, 1, normalization="layer")
  for name, leaf in _leaves(layer.tree).items():
    if w[name].ndim >= 2:
      assert np.linalg.norm(leaf) == pytest.approx(np.linalg.norm(w[name]), rel=1e-12)
      per_filter = np.sqrt((np.asarray(leaf) ** 2).sum(tuple(range(w[name].ndim - 1))))
      assert not np.allclose(per_filter, np.sqrt((w[name] ** 2).sum(tuple(range(w[name].ndim - 1)))))


def _dinh_rescaled(params, alpha):
  """Layer 1 kernel and bias times alpha, layer 2 kernel over alpha: the same ReLU network."""
  def scale(path, w):
    name = operators.path_name(path)
    if name.startswith("hidden.0."):
      return w * alpha
    return w / alpha if name.startswith("head.kernel") else w
  return jax.tree_util.tree_map_with_path(scale, params)


def test_filter_normalized_curve_is_invariant_under_dinh_rescaling(ds, mlp):
  """Tolerance: rtol 1e-9 on the loss curve in float64 (rounding of alpha-scaled weights only)."""
  graphdef, params, rest = mlp
  pre = _preprocess(ds)
  loss_fn, logits_fn = operators.model_functions(graphdef, rest, preprocess=pre)
  pm = landscape.point_model(graphdef, rest, preprocess=pre)
  split = {"train": ds.train}
  alphas = np.linspace(-1.0, 1.0, 5)
  batch = {"image": ds.train.images, "label": ds.train.labels}

  def curve(p, **options):
    d = landscape.random_direction(p, 7, **options)
    return landscape.scan_1d(pm, p, d, split, alphas=alphas).values["train"]["loss"]

  options = [dict(normalization="filter"), dict(normalization="filter", bias_and_norm="keep"),
             dict(normalization="layer")]
  base = [curve(params, **o) for o in options]
  raw = curve(params, normalization="none")
  for alpha in (0.1, 10.0):
    scaled = _dinh_rescaled(params, alpha)
    np.testing.assert_allclose(logits_fn(scaled, batch), logits_fn(params, batch), rtol=1e-10, atol=1e-12)
    for o, b in zip(options, base):
      np.testing.assert_allclose(curve(scaled, **o), b, rtol=1e-9, err_msg=str(o))
    # Without normalization the same draw gives another curve: the invariance is the normalization's.
    assert np.abs(curve(scaled, normalization="none") - raw).max() > 1e-2 * np.abs(raw).max()


def _scalar_model(fn):
  """A one-class 'model' whose logit is fn(w) for every example: with the mse loss, the loss along a
  segment is 0.5 (fn(w) - 1)^2, a closed form."""
  return lambda params, batch: jnp.broadcast_to(fn(params["w"])[None, :], (batch["label"].shape[0], 1))


def test_interpolation_endpoints_and_barriers(ds, mlp):
  pre = _preprocess(ds)
  graphdef, params_a, rest = mlp
  _, params_b, _ = _model(ds, "mlp", depth=1, width=8, seed=1)
  loss_fn, _ = operators.model_functions(graphdef, rest, preprocess=pre)
  result = landscape.interpolate(landscape.point_model(graphdef, rest, preprocess=pre), params_a, params_b,
                                 {"train": ds.train}, ts=np.linspace(-0.5, 1.5, 9))
  curve = result.curve.values["train"]["loss"]
  batch = {"image": ds.train.images, "label": ds.train.labels}
  assert curve[2] == pytest.approx(float(loss_fn(params_a, batch)), rel=1e-12)  # t = 0
  assert curve[6] == pytest.approx(float(loss_fn(params_b, batch)), rel=1e-10)  # t = 1
  assert result.barriers["train"]["loss"]["start"] == curve[2]
  assert result.curve.info["directions"] == [{"type": "difference"}]

  split = {"one": (np.zeros((3, 1, 1, 1), np.uint8), np.zeros(3, np.int32))}
  ts = np.linspace(0.0, 1.0, 11)
  # Convex along the segment (loss 0.5 (w - 1)^2 from w = -1 to 3): no barrier.
  convex = landscape.interpolate(_scalar_model(lambda w: w), {"w": jnp.array([-1.0])},
                                 {"w": jnp.array([3.0])}, split, ts=ts, loss_name="mse")
  assert convex.barriers["one"]["loss"]["barrier"] == pytest.approx(0.0, abs=1e-12)
  np.testing.assert_allclose(convex.curve.values["one"]["loss"], 0.5 * (-1 + 4 * ts - 1) ** 2, rtol=1e-12)
  # Double well 0.5 (w^2 - 1)^2 from w = -1 to 1: the rise at w = 0 (t = 1/2) is 0.5.
  well = landscape.interpolate(_scalar_model(lambda w: w ** 2), {"w": jnp.array([-1.0])},
                               {"w": jnp.array([1.0])}, split, ts=ts, loss_name="mse")
  assert well.barriers["one"]["loss"] == pytest.approx(
      {"barrier": 0.5, "t_max": 0.5, "barrier_mean": 0.5, "start": 0.0, "end": 0.0}, abs=1e-12)
  assert well.barriers["one"]["error"]["barrier"] == 0.0  # one class: always right
  # Unequal endpoints (w = -1 to 1.5): the line-based and the mean-based barriers differ.
  w = -1 + 2.5 * ts
  loss = 0.5 * (w ** 2 - 1) ** 2
  skew = landscape.interpolate(_scalar_model(lambda w: w ** 2), {"w": jnp.array([-1.0])},
                               {"w": jnp.array([1.5])}, split, ts=ts, loss_name="mse").barriers["one"]["loss"]
  assert skew["barrier"] == pytest.approx((loss - (1 - ts) * loss[0] - ts * loss[-1]).max(), abs=1e-12)
  assert skew["barrier_mean"] == pytest.approx(loss.max() - 0.5 * (loss[0] + loss[-1]), abs=1e-12)
  assert skew["barrier"] != pytest.approx(skew["barrier_mean"])


def test_batchnorm_recompute(ds, mlp_bn):
  graphdef, params, rest = mlp_bn
  pre = _preprocess(ds)
  images = ds.train.images
  leaves = _leaves(params)
  x = np.asarray(pre(images)).reshape(len(images), -1)
  pre_bn = x @ np.asarray(leaves["hidden.0.kernel.value"]) + np.asarray(leaves["hidden.0.bias.value"])
  # One batch: its mean and biased variance. Two batches of 20: the mean of the two batches' statistics.
  halves = (pre_bn[:20], pre_bn[20:])
  for batches, (mean, var) in [
      (1, (pre_bn.mean(0), pre_bn.var(0))),
      (2, (np.mean([h.mean(0) for h in halves], 0), np.mean([h.var(0) for h in halves], 0)))]:
    stats = landscape.recompute_statistics(graphdef, params, rest, jnp.asarray(images).reshape(
        (batches, -1) + images.shape[1:]), preprocess=pre)
    got = _leaves(stats)
    np.testing.assert_allclose(got["norms.0.mean.value"], mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["norms.0.var.value"], var, rtol=1e-10)
    assert not np.allclose(got["norms.0.mean.value"], _leaves(rest)["norms.0.mean.value"])  # it changed

  # Recomputed on the evaluated examples themselves (one batch = one chunk), every point is evaluated
  # with that batch's statistics: the "batch" mode's numbers, computed by another path.
  d = landscape.random_direction(params, 0)
  split = {"train": ds.train}
  alphas = np.array([-1.0, 0.0, 0.5])
  recompute = landscape.point_model(graphdef, rest, bn_mode="recompute", preprocess=pre, stats_images=images,
                                    stats_batch_size=40)
  rec = landscape.scan_1d(recompute, params, d, split, alphas=alphas, points_per_batch=2)
  batch_mode = landscape.scan_1d(landscape.point_model(graphdef, rest, bn_mode="batch", preprocess=pre),
                                 params, d, split, alphas=alphas)
  evaluated = landscape.scan_1d(landscape.point_model(graphdef, rest, preprocess=pre), params, d, split,
                                alphas=alphas)
  np.testing.assert_allclose(rec.values["train"]["loss"], batch_mode.values["train"]["loss"], rtol=1e-10)
  assert rec.info["bn_mode"] == "recompute" and rec.info["stats_batch_size"] == 40
  assert np.abs(rec.values["train"]["loss"] - evaluated.values["train"]["loss"]).min() > 1e-4
  # With the stored statistics replaced by those recomputed at params, eval mode agrees at the center.
  stats = landscape.recompute_statistics(graphdef, params, rest, jnp.asarray(images)[None], preprocess=pre)
  fitted = landscape.scan_1d(landscape.point_model(graphdef, nnx.merge_state(rest, stats), preprocess=pre),
                             params, d, split, alphas=alphas)
  assert fitted.values["train"]["loss"][1] == pytest.approx(rec.values["train"]["loss"][1], rel=1e-10)


def test_eigen_directions_are_hessian_eigenvectors(ds, mlp):
  graphdef, params, rest = mlp
  pre = _preprocess(ds)
  loss_fn, _ = operators.model_functions(graphdef, rest, preprocess=pre)
  chunks = operators.make_chunks(ds.train.images, ds.train.labels, shard=False)
  directions, result = landscape.eigen_directions(loss_fn, params, chunks, k=2, key=jax.random.key(0),
                                                  tol=1e-8, basis_dtype=jnp.float64)
  flat, unravel = ravel_pytree(params)
  batch = {"image": ds.train.images, "label": ds.train.labels}
  dense = np.asarray(jax.jit(jax.hessian(lambda w: loss_fn(unravel(w), batch)))(flat))
  top = np.linalg.eigvalsh(dense)[::-1][:2]
  for i, d in enumerate(directions):
    v = np.asarray(ravel_pytree(d.tree)[0])
    np.testing.assert_allclose(v, result.vectors[i], rtol=1e-12, atol=1e-14)
    assert np.linalg.norm(v) == pytest.approx(1.0, rel=1e-8)
    assert d.info["eigenvalue"] == pytest.approx(top[i], rel=1e-7)
    np.testing.assert_allclose(dense @ v, top[i] * v, atol=1e-6 * top[0])


def test_difference_results_io_and_bad_input(ds, mlp, mlp_bn, tmp_path):
  graphdef, params, rest = mlp
  narrower = jax.tree.map(lambda w: w[..., :1], params)  # same structure, other shapes
  diff = landscape.difference(params, jax.tree.map(lambda w: 3 * w, params))
  np.testing.assert_allclose(ravel_pytree(diff.tree)[0], 2 * ravel_pytree(params)[0])
  pm = landscape.point_model(graphdef, rest, preprocess=_preprocess(ds))
  d = landscape.random_direction(params, 0)
  result = landscape.scan_1d(pm, params, d, {"test": ds.test}, alphas=[0.0, 1.0])
  json_path, _ = result.save(tmp_path / "scan")
  loaded = landscape.ScanResult.load(tmp_path / "scan")
  np.testing.assert_array_equal(loaded.values["test"]["loss"], result.values["test"]["loss"])
  assert loaded.info["directions"][0]["seed"] == 0 and "bn_mode" in json_path.read_text()

  bad = [
      (lambda: landscape.random_direction(params, 0, normalization="unit"), "filter, layer, none"),
      (lambda: landscape.random_direction(params, 0, bias_and_norm="drop"), "zero, keep"),
      (lambda: landscape.point_model(graphdef, rest, bn_mode="train"), "eval, batch, recompute"),
      (lambda: landscape.point_model(graphdef, rest, bn_mode="recompute", stats_images=ds.train.images),
       "without BatchNorm"),
      (lambda: landscape.scan_1d(pm, params, d, {"test": ds.test}, shard="devices"), "examples, points"),
      (lambda: landscape.scan_1d(pm, params, d, {"test": ds.test}, points_per_batch=0), "positive"),
      (lambda: landscape.interpolate(pm, params, params, {"test": ds.test}, ts=[0.0, 0.5]), "t = 1"),
      (lambda: landscape.difference(params, narrower), "different shapes"),
      (lambda: landscape.difference(params, mlp_bn[1]), "different structures"),
  ]
  for call, words in bad:
    with pytest.raises(UserError, match=words):
      call()


SHARDED = """
import jax, numpy as np
from flax import nnx
from research import data, landscape, models
from research.curvature import operators
ds = data.load("synthetic", synthetic_train=30, synthetic_test=10, image_shape=(4, 4, 1), num_classes=3)
graphdef, params, rest = models.split(models.create("mlp", num_classes=3, input_shape=(4, 4, 1),
                                                    rngs=nnx.Rngs(0), depth=1, width=6))
pm = landscape.point_model(graphdef, rest, preprocess=ds.preprocess)
dirs = landscape.random_directions(params, 0, 2)
one_device = operators.make_chunks(ds.train.images, ds.train.labels, shard=False)  # host arrays
out = [landscape.scan_2d(pm, params, dirs, {"train": split}, xs=np.linspace(-1, 1, 3), ys=np.zeros(1),
                         points_per_batch=2, shard=shard).values["train"]["loss"]
       for split, shard in [(one_device, "examples"), (ds.train, "examples"), (ds.train, "points")]]
print(jax.device_count(), " ".join(map(str, np.ravel(out).tolist())))
"""


def test_sharded_scans_match_one_device():
  """Two CPU devices (a subprocess): examples or points sharded give the one-device numbers."""
  env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  res = subprocess.run([sys.executable, "-c", SHARDED], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  devices, *values = res.stdout.split()
  assert devices == "2"
  one, examples, points = np.asarray(values, np.float64).reshape(3, 3)
  np.testing.assert_allclose(examples, one, rtol=1e-5)
  np.testing.assert_allclose(points, one, rtol=1e-5)
  assert np.ptp(one) > 1e-3  # the points differ: the comparison is not of one number
